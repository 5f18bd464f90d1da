"""Pure tests of the pack's ComfyUI-free modules (presets, plot payload, preview route, packaging).

``nodes/__init__.py`` imports the node classes, which need ComfyUI; these tests must run without it and
must not disturb host tests that import the real ``otcache_pack.nodes``. So the repository is registered a
second time, as the bare packages ``otcache_pure`` and ``otcache_pure.nodes`` (no ``__init__`` executed):
the modules under test use only the engine and relative imports, and get their own module objects here.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bare(name: str, path: Path) -> None:
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        pkg.__package__ = name
        sys.modules[name] = pkg


_bare("otcache_pure", ROOT)
_bare("otcache_pure.nodes", ROOT / "nodes")
