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
- ``taylor`` (TaylorSeer, arXiv 2503.06923): forecast from the last order + 1
  computed steps in the sampler's time (the run step's sigma), order 1 or 2;
  a forecast that blows up is replaced by plain reuse (``TaylorOperator``).

Operators are stateless; the per-stream memory is a ``CacheEntry``. The session
hands each call the step's time (its sigma) and the device the result is wanted
on; operators that do not forecast ignore both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import OTCacheError

SPACES = ("residual", "output")
NAMES = ("residual", "output", "omnicache", "taylor")
TAYLOR_ORDERS = (1, 2)


class CacheEntry:
    """What one cond stream (or one batch of streams) keeps: the last computed value and, if the
    operator needs it, the one before. ``sig`` is the input signature the value belongs to.

    A forecasting operator keeps ``history`` instead of ``prev_value``: (step, time, value) of its last
    computed steps, oldest first, at most 3 (order + 1), and ``norms``, the values' norms (0-dim float32
    tensors, None until a prediction needed one) for its safety check. ``value``/``step`` are then the
    newest of them (the same tensor, no extra memory)."""

    __slots__ = ("value", "step", "prev_value", "prev_step", "sig", "history", "norms")

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None
        self.step: int = -1
        self.prev_value: torch.Tensor | None = None
        self.prev_step: int = -1
        self.sig: tuple | None = None
        self.history: tuple[tuple[int, float, torch.Tensor], ...] = ()
        self.norms: tuple[torch.Tensor | None, ...] = ()

    @property
    def steps(self) -> tuple[int, ...]:
        """The computed steps in ``history`` (empty for operators that keep none)."""
        return tuple(h[0] for h in self.history)

    def tensors(self) -> list[torch.Tensor]:
        found = [self.value, self.prev_value] + [h[2] for h in self.history]
        return [t for t in found if t is not None]

    def copied(self, keep: Callable[[torch.Tensor], torch.Tensor]) -> "CacheEntry":
        """A new entry with the same state, every tensor passed through ``keep``."""
        out = CacheEntry()
        moved = {id(t): keep(t) for t in self.tensors()}
        out.value = moved[id(self.value)] if self.value is not None else None
        out.prev_value = moved[id(self.prev_value)] if self.prev_value is not None else None
        out.step, out.prev_step, out.sig = self.step, self.prev_step, self.sig
        out.history = tuple((s, t, moved[id(v)]) for s, t, v in self.history)
        out.norms = self.norms   # a tuple, rebound (never changed) by an update
        return out

    def clear(self) -> None:
        self.value = self.prev_value = None
        self.sig = None
        self.history, self.norms = (), ()


@dataclass(frozen=True)
class ReuseOperator:
    """Plain reuse of the last computed value (R0/R1 depending on ``space``)."""

    name: str = "residual"
    space: str = "residual"
    history: int = 1

    def update(self, entry: CacheEntry, value: torch.Tensor, step: int, sig: tuple,
               time: float | None = None) -> None:
        """Record ``value`` computed at ``step`` (at sampler time ``time``, which only forecasts use)."""
        if self.history > 1 and entry.value is not None and entry.step < step and entry.sig == sig:
            entry.prev_value, entry.prev_step = entry.value, entry.step
        elif entry.step != step or entry.sig != sig:
            entry.prev_value, entry.prev_step = None, -1
        entry.value, entry.step, entry.sig = value, step, sig

    def predict(self, entry: CacheEntry, step: int, time: float | None = None) -> torch.Tensor:
        """The value to use at ``step`` (>= entry.step)."""
        return entry.value

    def forecast(self, entry: CacheEntry, step: int, time: float | None = None,
                 device: torch.device | None = None) -> tuple[torch.Tensor, bool]:
        """``predict`` and whether a safety fallback replaced the forecast (never, here). ``device``: where
        the caller wants the value; operators that only read one cached tensor leave moving it to the
        caller, so their results stay what ``predict`` returns."""
        return self.predict(entry, step, time), False

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

    def predict(self, entry: CacheEntry, step: int, time: float | None = None) -> torch.Tensor:
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


FORECAST_LIMIT = 4.0   # a forecast whose norm exceeds this times its history's largest norm is refused


@dataclass(frozen=True)
class TaylorOperator(ReuseOperator):
    """Forecast a skipped step's value from the last ``order + 1`` computed ones, as TaylorSeer does (Liu et
    al. 2025, "From Reusing to Forecasting: Accelerating Diffusion Models with TaylorSeers", arXiv
    2503.06923): a transformer's features change smoothly along the sampling path, so a low-order Taylor
    expansion around the last computed step c predicts step n better than reusing v_c, most of all across
    the long gaps of low budgets.

    Two choices differ from the paper, which differences in the step index with equal intervals:

    - time is the sampler's own, the run step's sigma: schedules space their noise levels unevenly (karras,
      shifted flow schedules) and a gap of two steps can move the sampler by very different amounts;
    - the derivatives D1, D2 at t_c are those of the Newton interpolating polynomial through the computed
      (time, value) points, with divided differences on their unequal spacing: order 1 = v_c + (t - t_c) D1,
      order 2 adds (t - t_c)^2 / 2 D2. A trajectory that is a polynomial of that order in time is then
      forecast exactly (the paper's recursive differences are only first-order accurate).

    With fewer computed steps than ``order + 1`` in the history (the run's start, a new input shape) the
    order drops to what the history allows (order 0 = plain reuse). Extrapolation amplifies whatever noise
    the values carry, so a forecast that is non-finite, or whose norm exceeds ``FORECAST_LIMIT`` times the
    largest norm of the values it was made from, is replaced by plain reuse of v_c; ``forecast`` says so
    and the session counts it. The check costs one norm per prediction (each stored value's norm is taken
    once, at its first use) and one host sync.

    Memory: ``order + 1`` cached tensors per cache entry, i.e. per CFG stream (order 2 keeps three block
    residuals per stream), on the session's cache device; the forecast is computed on the device the value
    is wanted on (the history is copied there), with two temporaries of one value's size.
    """

    name: str = "taylor"
    history: int = 3
    order: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", self.order + 1)

    def update(self, entry: CacheEntry, value: torch.Tensor, step: int, sig: tuple,
               time: float | None = None) -> None:
        """Append (step, time, value) to the entry's history, keeping the last ``order + 1``; a new input
        signature or an earlier step starts it again, the same step again replaces its value."""
        hist, norms = entry.history, entry.norms
        if not hist or entry.sig != sig or step < hist[-1][0]:
            hist, norms = (), ()
        elif step == hist[-1][0]:
            hist, norms = hist[:-1], norms[:-1]
        entry.history = hist[-self.order:] + ((step, _time(step, time), value),)
        entry.norms = norms[-self.order:] + (None,)
        entry.value, entry.step, entry.sig = value, step, sig
        entry.prev_value, entry.prev_step = None, (entry.history[-2][0] if len(entry.history) > 1 else -1)

    def predict(self, entry: CacheEntry, step: int, time: float | None = None) -> torch.Tensor:
        return self.forecast(entry, step, time)[0]

    def forecast(self, entry: CacheEntry, step: int, time: float | None = None,
                 device: torch.device | None = None) -> tuple[torch.Tensor, bool]:
        """The forecast at ``step`` (sampler time ``time``; without one the step index stands in for it, for
        every value alike), on ``device``; and whether the safety check replaced it by v_c."""
        hist = entry.history
        if not hist or step <= hist[-1][0]:
            return entry.value, False
        k, alpha, beta = _newton(tuple(h[1] for h in hist), _time(step, time), self.order)
        if k == 0:
            return entry.value, False
        start = len(hist) - k - 1
        values = [_on(h[2], device) for h in hist[start:]]
        out = _combine(values, alpha, beta)
        if self._safe(entry, out, values, start):
            return out, False
        return values[-1], True

    def _safe(self, entry: CacheEntry, out: torch.Tensor, values: list[torch.Tensor], start: int) -> bool:
        norms = list(entry.norms)
        for i, v in enumerate(values, start):
            if norms[i] is None or norms[i].device != out.device:
                norms[i] = _norm(v)
        entry.norms = tuple(norms)
        n, limit = _norm(out), torch.stack(norms[start:]).max()
        return bool((torch.isfinite(n) & (n <= FORECAST_LIMIT * limit)).item())

    def describe(self) -> str:
        return f"taylor(order={self.order}, {self.space})"


def _time(step: int, time: float | None) -> float:
    return float(step) if time is None else float(time)


def _on(value: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    """``value`` on ``device``; asynchronous only from the host (pinned -> GPU copies are stream-ordered, a copy
    to the host would be read before it lands)."""
    if device is None or value.device == device:
        return value
    return value.to(device, non_blocking=value.device.type == "cpu")


def _norm(value: torch.Tensor) -> torch.Tensor:
    """The 2-norm as a 0-dim tensor, accumulated in float32 for half types (float16 overflows at 65504)."""
    half = value.dtype in (torch.float16, torch.bfloat16)
    return torch.linalg.vector_norm(value, dtype=torch.float32 if half else None)


def _newton(times: tuple[float, ...], t: float, order: int) -> tuple[int, float, float]:
    """The order usable on ``times`` (oldest first) and the weights of the Newton forecast at ``t``:
    v_c + alpha (v_c - v_p) - beta (v_p - v_pp). With h1 = t_c - t_p, h2 = t_p - t_pp, s = t - t_c the
    Newton form v_c + f[c,p] s + f[c,p,pp] s (t - t_p) gives alpha = s/h1 + w/(h1 (h1+h2)) and
    beta = w/(h2 (h1+h2)), w = s (s + h1); order 1 is alpha = s/h1, beta = 0. Equal times lower the order."""
    k, t_c = min(order, len(times) - 1), times[-1]
    s = t - t_c
    if k >= 2:
        h1, h2 = t_c - times[-2], times[-2] - times[-3]
        if h1 != 0.0 and h2 != 0.0 and h1 + h2 != 0.0:
            w = s * (s + h1)
            return 2, s / h1 + w / (h1 * (h1 + h2)), w / (h2 * (h1 + h2))
        k = 1
    if k == 1 and t_c != times[-2]:
        return 1, s / (t_c - times[-2]), 0.0
    return 0, 0.0, 0.0


def _combine(values: list[torch.Tensor], alpha: float, beta: float) -> torch.Tensor:
    """v_c + alpha (v_c - v_p) [- beta (v_p - v_pp)] in the values' dtype, with one temporary: differences of
    close values lose less precision in half types than a weighted sum of the values would."""
    v_c, v_p = values[-1], values[-2]
    d = torch.sub(v_c, v_p)
    out = torch.add(v_c, d, alpha=alpha)
    if len(values) == 3:
        torch.sub(v_p, values[0], out=d)
        out.sub_(d, alpha=beta)
    return out


def make_reuse(name: str = "residual", gamma: float | Sequence[float] | None = None,
               space: str | None = None, order: int | None = None) -> ReuseOperator:
    """Build a reuse operator by name: "residual", "output", "omnicache" or "taylor".

    ``gamma`` (omnicache only) is one value or one per run step, each in [0, 1.5];
    ``space`` overrides where omnicache and taylor work ("residual" or "output");
    ``order`` (taylor only, 1 or 2; default 2) is the forecast's order; the other operators ignore it.
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
    if name == "taylor":
        return TaylorOperator(space=space, order=_order(order))
    return OmniCacheOperator(space=space, gamma=_gamma(0.5 if gamma is None else gamma))


def _order(order: int | None) -> int:
    if order is None:
        return TAYLOR_ORDERS[-1]
    if isinstance(order, bool) or not isinstance(order, int) or order not in TAYLOR_ORDERS:
        raise OTCacheError(f"taylor's order must be one of {list(TAYLOR_ORDERS)}, got {order!r}")
    return order


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
    if isinstance(op, TaylorOperator):
        return TaylorOperator(space=space, order=op.order)
    return ReuseOperator("output" if space == "output" else "residual", space)
