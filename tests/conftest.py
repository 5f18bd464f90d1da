"""Root test configuration: make the pack importable without running its ComfyUI entry point.

The pack's root ``__init__.py`` registers nodes and server routes with ComfyUI, so tests never import it.
Instead the repository is registered as a bare namespace package ``otcache_pack`` (so the ``nodes``
package's relative imports such as ``from ..otcache_engine import Schedule`` resolve), and the repository
root goes on ``sys.path`` so ``import otcache_engine`` works directly. Nothing here imports ComfyUI: pure
engine tests must run without it.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "otcache_pack"


def _register_pack() -> None:
    """Expose the repository as package ``otcache_pack`` without executing its ``__init__.py``."""
    if PACK_NAME in sys.modules:
        return
    pkg = types.ModuleType(PACK_NAME)
    pkg.__path__ = [str(REPO_ROOT)]
    pkg.__file__ = None
    sys.modules[PACK_NAME] = pkg


def _put_repo_on_path() -> None:
    root = str(REPO_ROOT)
    if root not in sys.path:
        # Appended, not prepended: the repo's ``nodes/`` package must never shadow ComfyUI's ``nodes.py``.
        sys.path.append(root)


_register_pack()
_put_repo_on_path()
