"""ComfyUI configured for the benchmark's device before anything imports it.

Why: ``comfy.model_management`` reads its settings (CPU or GPU, VRAM state, attention) once, at its first
import, and the host harness (``tests/host/comfy_host.py``) always configures CPU. On CUDA this module
configures ComfyUI as ``--highvram`` does (models stay on the GPU, no partial loading that would move blocks
to the CPU, no dynamic VRAM in ComfyUI 0.33) with PyTorch's SDPA attention, then records the checkout in the
harness's registry of configured checkouts so that the harness modules imported later (``tiny_models``,
``sampling``) accept it instead of forcing CPU. On CPU it is the harness's own set-up.
"""
from __future__ import annotations

import sys

import torch

import comfy_host


class SetupError(RuntimeError):
    """The benchmark cannot start here; the message is one sentence for the user."""


def cuda_available() -> bool:
    return torch.cuda.is_available()


def require_cuda() -> None:
    """Stop with one sentence when there is no CUDA device (checked before ComfyUI is imported: its memory
    manager asks the CUDA driver at import time and would fail with a traceback)."""
    if not cuda_available():
        raise SetupError(f"no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda}) "
                         "finds no GPU on this machine; run on a machine with an NVIDIA GPU, or pass --device cpu")


def prepare(device: str) -> str:
    """Make ComfyUI importable for ``device`` ("cpu" or "cuda") and return its version."""
    if device == "cpu":
        return comfy_host.ensure_comfy_importable()
    require_cuda()
    loc = comfy_host.find_comfyui()
    if not loc.found:
        raise SetupError(loc.reason)
    key = str(loc.path)
    if key in comfy_host._READY:   # configured earlier in this process: only a CUDA set-up will do
        import comfy.model_management as mm

        if mm.get_torch_device().type != "cuda":
            raise SetupError("ComfyUI was already configured for the CPU in this process; start a new one")
        return comfy_host._READY[key]
    if "comfy" in sys.modules:
        raise SetupError("ComfyUI was imported before the benchmark configured it; start a new process")
    sys.path.insert(0, key)   # first: ComfyUI's top-level ``nodes`` / ``utils`` win over same-named folders
    from comfy.cli_args import args

    args.cpu = False
    args.highvram = True
    args.use_pytorch_cross_attention = True
    import comfy.model_management as mm

    if mm.get_torch_device().type != "cuda":
        raise SetupError(f"ComfyUI chose {mm.get_torch_device()} instead of the CUDA device")
    comfy_host._READY[key] = comfy_host.read_version(loc.path)
    return comfy_host._READY[key]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing and peak memory read after it), a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} torch threads)"
