"""Pure tests of the pack's ComfyUI-free modules (presets, plot payload, preview route, packaging).

``nodes/__init__.py`` imports the node classes, which need ComfyUI; these tests must run without it. So,
unless a host test already imported the real package, ``otcache_pack.nodes`` is registered as a bare
package (its ``__init__`` not executed): the modules under test use only the engine and relative imports.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path


NODES_DIR = Path(__file__).resolve().parents[2] / "nodes"

if "otcache_pack.nodes" not in sys.modules:
    pkg = types.ModuleType("otcache_pack.nodes")
    pkg.__path__ = [str(NODES_DIR)]
    pkg.__package__ = "otcache_pack.nodes"
    sys.modules["otcache_pack.nodes"] = pkg
