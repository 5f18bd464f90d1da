"""The block stack's stream as the cache sees it: one token tensor, or a tuple of them (LTX-2: video, audio).

A block replacement finds its stream under ``"img"``. Most families hand it one ``[batch, tokens, width]``
tensor; LTX-2 (``LTXAVModel``) hands its video and audio tokens to every block as one tuple, of two widths.
The cache keeps a single residual for the whole tuple: each stream flattened per
batch row and the rows concatenated, so that the runtime's per-row caches (split by conditioning stream along
the batch) hold it unchanged. An empty stream (LTX-2 sampling video only has zero audio tokens) flattens to
nothing and costs nothing.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

Stream = Any   # a tensor, or a tuple / list of tensors sharing their batch dimension


def lead(x: Stream) -> torch.Tensor | None:
    """The tensor whose first dimension is the batch: ``x`` itself, or the first of a list of streams."""
    if torch.is_tensor(x):
        return x
    if isinstance(x, (list, tuple)) and x and all(torch.is_tensor(t) for t in x):
        return x[0]
    return None


def signature(x: Stream) -> tuple:
    """What a cached value must have been computed for: the shape, per stream for a tuple."""
    if torch.is_tensor(x):
        return tuple(x.shape)
    return (x[0].shape[0],) + tuple(tuple(t.shape[1:]) for t in x)


def flat(x: Stream) -> torch.Tensor:
    """A tuple of streams as one ``[batch, n]`` tensor (a new tensor); a tensor stays itself."""
    if torch.is_tensor(x):
        return x
    return torch.cat([t.reshape(t.shape[0], -1) for t in x], dim=1)


def snapshot(x: Stream) -> torch.Tensor:
    """A copy of the stream's values (newer ComfyUI blocks, Wan VACE and S2V update their input in place)."""
    return x.clone() if torch.is_tensor(x) else flat(x)


def residual(out: Stream, before: torch.Tensor) -> torch.Tensor | None:
    """``out - before`` in the cache's layout; None when ``out`` does not have the layout ``before`` has."""
    now = flat(out)
    return now - before if now.shape == before.shape else None


def added(base: Stream, r: torch.Tensor) -> Stream:
    """``base + r``: a tensor, or a tuple of streams each receiving its own part of the flat ``r``."""
    if torch.is_tensor(base):
        return base + r
    return tuple(t + p for t, p in zip(base, _parts(r, base)))


def like(values: torch.Tensor, x: Stream) -> Stream:
    """A snapshot (``snapshot``) given back the structure of ``x``."""
    return values if torch.is_tensor(x) else tuple(_parts(values, x))


def _parts(values: torch.Tensor, shapes_of: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, start = [], 0
    for t in shapes_of:
        n = math.prod(t.shape[1:])
        out.append(values[:, start:start + n].reshape(t.shape))
        start += n
    return out
