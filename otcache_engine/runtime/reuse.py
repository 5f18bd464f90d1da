"""Reuse operators: what a skipped step returns from what computed steps left behind.

Each operator works in the space of the cached quantity, which the host picks:

- ``residual`` (R1, LeMiCa / TeaCache style): the block-stack residual of the
  image tokens, r_c = Blocks(h_c) - h_c; a skipped step runs the embedders and
  the output head and adds r_c to its own block input.
- ``output`` (R0): the model output itself, v_c (the whole model is skipped).
- ``omnicache`` (R3, method.md §6.4): damped first-order extrapolation from the
  last two computed steps c' < c, v_c + gamma_n * s_n * (v_c - v_c'),
  s_n = (n - c) / (c - c'). gamma = 0 is plain reuse, gamma = 1 linear
  extrapolation. It extrapolates residuals by default (``space="output"`` for
  whole-model reuse).

Operators are stateless; the per-stream memory is a ``CacheEntry``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import OTCacheError

SPACES = ("residual", "output")
NAMES = ("residual", "output", "omnicache")


class CacheEntry:
    """What one cond stream (or one batch of streams) keeps: the last computed value and, if the
    operator needs it, the one before. ``sig`` is the input signature the value belongs to."""

    __slots__ = ("value", "step", "prev_value", "prev_step", "sig")

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None
        self.step: int = -1
        self.prev_value: torch.Tensor | None = None
        self.prev_step: int = -1
        self.sig: tuple | None = None

    def clear(self) -> None:
        self.value = self.prev_value = None
        self.sig = None


@dataclass(frozen=True)
class ReuseOperator:
    """Plain reuse of the last computed value (R0/R1 depending on ``space``)."""

    name: str = "residual"
    space: str = "residual"
    history: int = 1

    def update(self, entry: CacheEntry, value: torch.Tensor, step: int, sig: tuple) -> None:
        """Record ``value`` computed at ``step``."""
        if self.history > 1 and entry.value is not None and entry.step < step and entry.sig == sig:
            entry.prev_value, entry.prev_step = entry.value, entry.step
        elif entry.step != step or entry.sig != sig:
            entry.prev_value, entry.prev_step = None, -1
        entry.value, entry.step, entry.sig = value, step, sig

    def predict(self, entry: CacheEntry, step: int) -> torch.Tensor:
        """The value to use at ``step`` (>= entry.step)."""
        return entry.value

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class OmniCacheOperator(ReuseOperator):
    """v_c + gamma_n * (n - c) / (c - c') * (v_c - v_c'), with gamma per run step or global."""

    name: str = "omnicache"
    history: int = 2
    gamma: float | tuple[float, ...] = 0.5

    def gamma_at(self, step: int) -> float:
        g = self.gamma
        if isinstance(g, tuple):
            return g[step] if 0 <= step < len(g) else 0.0
        return g

    def predict(self, entry: CacheEntry, step: int) -> torch.Tensor:
        c, cp = entry.step, entry.prev_step
        if entry.prev_value is None or step <= c or cp < 0 or c <= cp:
            return entry.value
        g = self.gamma_at(step) * (step - c) / (c - cp)
        if g == 0.0:
            return entry.value
        prev = entry.prev_value
        if prev.device != entry.value.device:
            prev = prev.to(entry.value.device)
        return torch.lerp(entry.value, prev, -g)  # v_c + g (v_c - v_c')

    def describe(self) -> str:
        g = self.gamma
        shown = f"{g:g}" if not isinstance(g, tuple) else f"per-step[{len(g)}]"
        return f"omnicache(gamma={shown}, {self.space})"


def make_reuse(name: str = "residual", gamma: float | Sequence[float] | None = None,
               space: str | None = None) -> ReuseOperator:
    """Build a reuse operator by name: "residual", "output" or "omnicache".

    ``gamma`` (omnicache only) is one value or one per run step, each in [0, 1.5];
    ``space`` overrides where omnicache extrapolates ("residual" or "output").
    """
    if name not in NAMES:
        raise OTCacheError(f"unknown reuse operator {name!r}; choose one of {list(NAMES)}")
    if name == "residual":
        return ReuseOperator("residual", "residual")
    if name == "output":
        return ReuseOperator("output", "output")
    space = space or "residual"
    if space not in SPACES:
        raise OTCacheError(f"unknown cache space {space!r}; choose one of {list(SPACES)}")
    return OmniCacheOperator(space=space, gamma=_gamma(0.5 if gamma is None else gamma))


def _gamma(gamma: float | Sequence[float]) -> float | tuple[float, ...]:
    values = [gamma] if isinstance(gamma, (int, float)) else list(gamma)
    if not values:
        raise OTCacheError("gamma is empty; give one value or one per step")
    for g in values:
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0.0 <= float(g) <= 1.5:
            raise OTCacheError(f"gamma must be a number in [0, 1.5] (method.md §6.4), got {g!r}")
    if isinstance(gamma, (int, float)):
        return float(gamma)
    return tuple(float(g) for g in values)


def with_space(op: ReuseOperator, space: str) -> ReuseOperator:
    """The same operator working in another cache space (the host can only cache outputs for some models)."""
    if op.space == space:
        return op
    if isinstance(op, OmniCacheOperator):
        return OmniCacheOperator(space=space, gamma=op.gamma)
    return ReuseOperator("output" if space == "output" else "residual", space)
