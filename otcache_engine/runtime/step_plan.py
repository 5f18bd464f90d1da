"""StepPlan: which steps of *this* sampling run compute, and which step an evaluation belongs to.

A schedule is made for N steps on some noise grid; a run may have another step
count, another grid, or be only a slice of a longer run (KSamplerAdvanced
start/end steps, the two experts of Wan 2.2, denoise < 1). The plan carries the
schedule onto the run's own sigma list once, when the run starts, so the hot
path is a table lookup.

Mapping rules (first match wins), with ``grid`` = the schedule's sigmas or, if it
has none, a reference grid the caller made for N steps (ComfyUI: the model's own
scheduler):

1. ``identity`` - the run has N steps and covers the whole grid (same sigmas,
   or an index-coordinate schedule): the schedule's mask as is.
2. ``retarget`` - the run covers the whole noise range with another step count
   (or, for a sigma-coordinate schedule, another grid): the schedule's warp is
   re-sampled for the run (keeps the speedup and the dense/sparse pattern).
3. ``slice`` - the run covers only part of the noise range. Every run sigma is
   placed on the schedule's step axis by noise level (position p_j, linear
   between grid points); run step j covers schedule positions [p_j, p_{j+1}].
   The run gets the part of the schedule inside [p_0, p_n] at the same local
   compute fraction (see ``warp.crossing_mask``). Its first step always
   computes (a new run has no cache); its last step computes when the slice
   reaches the schedule's end and the schedule forces the last step. So two
   stages split at any step get, between them, the schedule's pattern over the
   whole range, each stage restarting with a computed step.

Step identity comes from sigma (``step_of``), never from counting calls.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import ScheduleError
from ..schedules.schedule import Schedule
from ..schedules import warp

RTOL = 1e-4
ATOL = 1e-7
_EDGE = 1e-3  # in schedule steps: how close to the grid's ends counts as "covers the end"


@dataclass(frozen=True)
class StepPlan:
    """Per-run compute mask over the run's own steps, plus the sigma -> step lookup."""

    run_sigmas: tuple[float, ...]
    compute: tuple[bool, ...]
    mapping: str
    schedule_steps: int
    window: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        # Negated sigmas, increasing, for bisect in ``resolve``.
        object.__setattr__(self, "_neg", [-s for s in self.run_sigmas])

    @classmethod
    def build(cls, schedule: Schedule, run_sigmas: Sequence[float],
              reference_sigmas: Sequence[float] | None = None, budget: int | None = None) -> "StepPlan":
        """Carry ``schedule`` onto a run whose sampler walks ``run_sigmas`` (steps + 1 values). ``budget`` is
        the run's K when the caller computed it (the budget resolver does, once per run); without it a
        retargeted run keeps the schedule's speed-up (``warp.retarget_budget``)."""
        sig = tuple(float(s) for s in run_sigmas)
        if any(not math.isfinite(s) for s in sig):
            raise ScheduleError("the run's sigmas contain NaN or infinity")
        n, big_n = len(sig) - 1, schedule.num_steps
        if n < 1:
            return cls(sig, (), "empty", big_n)
        if any(b > a for a, b in zip(sig, sig[1:])):
            # Not a monotone noise walk (e.g. a restart sampler's list): no safe mapping.
            return cls(sig, (True,) * n, "unordered", big_n)
        grid = _grid(schedule, reference_sigmas)
        if grid is None:
            if n == big_n:
                return cls(sig, schedule.mask, "identity", big_n, (0.0, float(big_n)))
            return cls(sig, warp.retarget_mask(schedule, n, None, budget), "retarget", big_n, (0.0, float(big_n)))
        pos = warp.sigma_positions(grid, sig)
        window = (float(pos[0]), float(pos[-1]))
        covers_start, covers_end = pos[0] <= _EDGE, pos[-1] >= big_n - _EDGE
        if covers_start and covers_end:
            if n == big_n and (schedule.coord == "index" or _same(grid, sig)):
                return cls(sig, schedule.mask, "identity", big_n, window)
            return cls(sig, warp.retarget_mask(schedule, n, sig, budget), "retarget", big_n, window)
        mask = warp.crossing_mask(schedule, pos, force_last=schedule.force_last and covers_end)
        return cls(sig, mask, "slice", big_n, window)

    # --- views ------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return len(self.compute)

    @property
    def budget(self) -> int:
        return sum(self.compute)

    @property
    def speedup(self) -> float:
        return self.num_steps / self.budget if self.budget else 1.0

    @property
    def all_compute(self) -> bool:
        """True when caching cannot save anything (every step computes, or no steps)."""
        return all(self.compute)

    def mask_string(self, on: str = "#", off: str = ".") -> str:
        return "".join(on if c else off for c in self.compute)

    def is_compute(self, step: int) -> bool:
        return self.compute[step]

    # --- hot path -----------------------------------------------------------
    def step_of(self, sigma: float) -> int | None:
        """Run step of an evaluation at ``sigma``: a grid sigma it is close to, else the
        interval (sigma_{j+1}, sigma_j) that contains it; None for an empty plan."""
        n = len(self.compute)
        if n == 0:
            return None
        neg = self._neg
        i = bisect.bisect_left(neg, -sigma)          # first grid point with sigma_i <= sigma
        sig = self.run_sigmas
        if i <= n and _close(sig[i], sigma):
            return min(i, n - 1)
        if i > 0 and _close(sig[i - 1], sigma):
            return min(i - 1, n - 1)
        if i == 0:
            return 0
        return min(i - 1, n - 1)



def _close(a: float, b: float) -> bool:
    return abs(a - b) <= ATOL + RTOL * abs(a)


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))


def _grid(schedule: Schedule, reference: Sequence[float] | None) -> tuple[float, ...] | None:
    if schedule.sigmas is not None:
        return schedule.sigmas
    if reference is None:
        return None
    ref = tuple(float(s) for s in reference)
    if len(ref) != schedule.num_steps + 1 or any(b > a for a, b in zip(ref, ref[1:])) or ref[0] <= ref[-1]:
        return None
    return ref
