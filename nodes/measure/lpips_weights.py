"""The perceptual metric inside ComfyUI: LPIPS's backbone from (or downloaded into) a ComfyUI models folder.

The engine's ``perceptual_metric`` knows nothing of ComfyUI; this module hands it the folder and the
progress bar. The folder is registered with ``folder_paths`` as ``otcache_lpips`` (default
``models/otcache/lpips``; ``extra_model_paths.yaml`` may name others, the first of which receives the
download). The download shows on the running node's progress bar, and cancelling the prompt stops it
(the bar checks ComfyUI's interrupt flag; the engine then deletes its temporary file).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...otcache_engine.metrics import ALEXNET, Perceptual, perceptual_metric
from ...otcache_engine.weights_download import RemoteFile

FOLDER = "otcache_lpips"


def lpips_folders() -> list[Path]:
    """The registered LPIPS folders (``models/otcache/lpips`` added if missing); downloads go to the first."""
    import folder_paths

    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, "otcache", "lpips"))
    return [Path(p) for p in folder_paths.get_folder_paths(FOLDER)]


class DownloadBar:
    """``progress(done, total)`` for the engine's download: ComfyUI's progress bar (in bytes), and Cancel."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        import comfy.model_management
        import comfy.utils

        comfy.model_management.throw_exception_if_processing_interrupted()
        total = total or max(done, 1)     # a server without Content-Length: the bar fills as bytes arrive
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(total)
        self.bar.update_absolute(min(done, total), total)


def node_metric(has_decoder: bool, device: Any = "cpu", remote: RemoteFile = ALEXNET) -> Perceptual:
    """What the Anchor Search optimises: LPIPS with its backbone fetched on first use, else the loud fallback."""
    if not has_decoder:
        return perceptual_metric(False)
    return perceptual_metric(True, device=device, folders=lpips_folders(), progress=DownloadBar(), remote=remote)
