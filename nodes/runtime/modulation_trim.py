"""Chroma on a reused step: run its modulation network only for the rows the output layer reads.

Chroma's blocks take shift/scale/gate from one network (the "distilled guidance layer", an
Approximator) evaluated on 344 rows per sample before any block runs. On a reused step no block
runs, yet the whole network would still run for the 2 rows the output layer reads: 5% of a step in
the benchmark model, enough to miss the N/K target. The network works row by row (linear layers,
RMSNorm and SiLU act on the last dimension), so the last rows can be computed on their own. The
rest are zeros until the first block finds no cache for the step (forced compute): it then fills
them in place through ``CallState.pending``, before any block reads the views into them.

This lives in a PatcherInjection, ComfyUI's own hook for changing the model object while one
patcher is loaded: it is ejected whenever the clone is detached (another clone of the model loads,
the model unloads), so the shared model never keeps it. Even while injected it trims only inside
a cached call that reuses (``current_call``); every other caller gets the untouched forward.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .block_patch import current_call

INJECTION_KEY = "otcache_modulation_trim"
FINAL_ROWS = 2                      # Chroma.get_modulations(..., "final") reads rows [-2:]
_OURS = "_otcache_trim"


def add_trim(m: Any) -> bool:
    """Register the trim on patcher ``m`` (its family's registry entry says it has a row-wise modulation
    network); False on a ComfyUI without patcher injections."""
    if not hasattr(m, "set_injections"):
        return False
    import comfy.patcher_extension as pe

    m.set_injections(INJECTION_KEY, [pe.PatcherInjection(inject=_inject, eject=_eject)])
    return True


def remove_trim(m: Any) -> None:
    if hasattr(m, "remove_injections"):
        m.remove_injections(INJECTION_KEY)


def _network(patcher: Any) -> torch.nn.Module | None:
    dm = patcher.get_model_object("diffusion_model")
    layer = getattr(dm, "distilled_guidance_layer", None)
    cls = type(layer)
    if (cls.__module__, cls.__name__) != ("comfy.ldm.chroma.layers", "Approximator"):
        return None
    return layer


def _inject(patcher: Any) -> None:
    layer = _network(patcher)
    if layer is not None and "forward" not in vars(layer):  # never stack on another forward override
        layer.forward = _trimmed_forward(type(layer).forward.__get__(layer))


def _eject(patcher: Any) -> None:
    layer = _network(patcher)
    if layer is not None and getattr(vars(layer).get("forward"), _OURS, False):
        del layer.forward


def _trimmed_forward(full: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        call = current_call.get()
        if call is None or call.compute or x.ndim != 3 or x.shape[1] <= FINAL_ROWS:
            return full(x)
        tail = full(x[:, -FINAL_ROWS:])
        out = tail.new_zeros((*x.shape[:-1], tail.shape[-1]))
        out[:, -FINAL_ROWS:] = tail
        call.pending = lambda: out[:, :-FINAL_ROWS].copy_(full(x[:, :-FINAL_ROWS]))
        return out

    setattr(forward, _OURS, True)
    return forward
