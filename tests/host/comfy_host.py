"""Find a real ComfyUI checkout and make it importable, CPU only, for the host tests.

Why a module of its own: every host test, the benchmarks and the harness helpers need the same answer to
"which ComfyUI do we run against?", and ComfyUI must be configured (``args.cpu``) before the first import of
``comfy.model_management``, which otherwise looks for a CUDA driver at import time.

Search order (first hit wins):
1. ``COMFYUI_PATH`` (an explicit choice: when it does not point at a checkout, nothing else is tried);
2. the ComfyUI this pack is installed in (repo root's parent is ``custom_nodes`` and its parent has ``comfy/``);
3. ``~/comfy/ComfyUI`` (comfy-cli's default workspace).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = Path("~/comfy/ComfyUI")


@dataclass(frozen=True)
class ComfyLocation:
    """Where ComfyUI was found (``path``), how (``source``), or why not (``reason``)."""

    path: Path | None
    source: str
    reason: str = ""

    @property
    def found(self) -> bool:
        return self.path is not None


def is_comfy_checkout(path: Path) -> bool:
    """A ComfyUI checkout has the ``comfy`` package with its memory manager."""
    return (path / "comfy" / "model_management.py").is_file()


def find_comfyui() -> ComfyLocation:
    """Locate ComfyUI without importing anything from it."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser().resolve()
        if is_comfy_checkout(path):
            return ComfyLocation(path, "COMFYUI_PATH")
        return ComfyLocation(None, "COMFYUI_PATH", f"COMFYUI_PATH={env} is not a ComfyUI checkout "
                                                   "(no comfy/model_management.py)")
    if REPO_ROOT.parent.name == "custom_nodes" and is_comfy_checkout(REPO_ROOT.parent.parent):
        return ComfyLocation(REPO_ROOT.parent.parent.resolve(), "custom_nodes")
    default = DEFAULT_PATH.expanduser()
    if is_comfy_checkout(default):
        return ComfyLocation(default.resolve(), "default")
    return ComfyLocation(None, "none", "no ComfyUI found: set COMFYUI_PATH, install the pack under "
                                       f"ComfyUI/custom_nodes/, or unpack ComfyUI into {DEFAULT_PATH}")


def read_version(path: Path) -> str:
    """The version string of a checkout, read from ``comfyui_version.py`` without importing it."""
    try:
        text = (path / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return match.group(1) if match else "unknown"


def _check_not_mixed(path: Path) -> None:
    """Refuse to run when another checkout's ``comfy`` package is already imported in this process."""
    comfy = sys.modules.get("comfy")
    if comfy is None:
        return
    origin = Path(next(iter(getattr(comfy, "__path__", [])), ""))
    if origin.resolve() != (path / "comfy").resolve():
        raise RuntimeError(f"comfy is already imported from {origin}, not from {path}")


def _configure_args() -> None:
    """CPU and SDPA attention, set before ``comfy.model_management`` reads them at import time."""
    from comfy.cli_args import args

    already = "comfy.model_management" in sys.modules
    args.cpu = True
    args.use_pytorch_cross_attention = True
    if already:
        import comfy.model_management as mm

        if mm.cpu_state != mm.CPUState.CPU:
            raise RuntimeError("comfy.model_management was imported before args.cpu was set")


_READY: dict[str, str] = {}


def ensure_comfy_importable() -> str:
    """Put ComfyUI on ``sys.path``, force CPU mode and return its version; raises when none is found."""
    loc = find_comfyui()
    if not loc.found:
        raise RuntimeError(loc.reason)
    key = str(loc.path)
    if key in _READY:
        return _READY[key]
    _check_not_mixed(loc.path)
    if key in sys.path:
        sys.path.remove(key)
    # First on the path: ComfyUI's top-level ``nodes``/``utils`` must win over same-named folders elsewhere.
    sys.path.insert(0, key)
    _configure_args()
    _READY[key] = read_version(loc.path)
    return _READY[key]


def require_comfy() -> str:
    """For test modules: skip the whole module with the reason when no ComfyUI is found."""
    import pytest

    loc = find_comfyui()
    if not loc.found:
        pytest.skip(loc.reason, allow_module_level=True)
    return ensure_comfy_importable()


def describe() -> str:
    """One line for reports: which ComfyUI the host tests use, or why they skip."""
    loc = find_comfyui()
    if not loc.found:
        return f"ComfyUI: not found, host tests skip ({loc.reason})"
    return f"ComfyUI {read_version(loc.path)} at {loc.path} (via {loc.source})"
