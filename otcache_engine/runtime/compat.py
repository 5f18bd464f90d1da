"""The one place where the runtime borrows from the schedule-geometry modules.

``warp`` (retargeting, sigma positions) and ``transport`` (reference / anchor
interpolation) own the geometry; the runtime calls them only through the
functions below, so a change there has a single point of contact here. The
slice rule (``crossing_mask``) is the runtime's own: it is how a sampling stage
that covers part of the noise range gets its part of a schedule.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

from ..errors import OTCacheError  # noqa: F401 (an OTCacheError is a ValueError)
from ..projection import project
from ..schedule import Schedule
from .. import transport, warp


def sigma_positions(schedule_sigmas: Sequence[float], run_sigmas: Sequence[float]) -> np.ndarray:
    """Real-valued positions of ``run_sigmas`` on the step axis of ``schedule_sigmas`` (clamped to [0, N])."""
    return np.asarray(warp.sigma_positions(schedule_sigmas, run_sigmas), dtype=np.float64)


def crossing_mask(schedule: Schedule, positions: Sequence[float], force_last: bool) -> tuple[bool, ...]:
    """Compute mask for run steps covering schedule positions [p_j, p_{j+1}].

    The schedule is read as a compute density (one unit on [s, s+1) for every
    computed step s). Its cumulative count over the covered window, rescaled
    so the run keeps the schedule's local compute fraction, is walked step by
    step; a run step computes when that count crosses an integer inside it.
    This is the identity when the positions are 0..N, and for an exact slice
    of the schedule's grid it is the schedule's own mask there; on a finer or
    coarser grid it keeps the local speedup and the dense/sparse pattern.
    Step 0 of the run always computes (a new run has nothing to reuse).
    """
    p = np.clip(np.asarray(positions, dtype=np.float64), 0.0, float(schedule.num_steps))
    n = p.size - 1
    if n < 1:
        return ()
    cum = np.concatenate(([0.0], np.cumsum(np.asarray(schedule.mask, dtype=np.float64))))
    c = np.interp(p, np.arange(cum.size, dtype=np.float64), cum)
    width = p[-1] - p[0]
    scale = n / width if width > 1e-12 else 1.0
    m = np.round((c - c[0]) * scale, 9)  # absorb float noise so exact integers stay exact
    # an integer k with m[j] <= k < m[j+1] exists  <=>  ceil(m[j]) < m[j+1]
    out = [math.ceil(m[j]) < m[j + 1] for j in range(n)]
    out[0] = True
    if force_last:
        out[-1] = True
    return tuple(bool(v) for v in out)


def retarget_mask(schedule: Schedule, num_steps: int, run_sigmas: Sequence[float] | None) -> tuple[bool, ...]:
    """Mask of ``schedule`` carried to a full run of ``num_steps`` steps, keeping its speedup.

    The schedule's own coordinate decides: index (step fraction) or sigma
    (noise level, when the schedule and the run both have a grid). Should the
    warp's projection find no feasible schedule (tiny runs), the density rule
    takes over rather than failing the user's sampling run.
    """
    use_sigma = schedule.coord == "sigma" and schedule.sigmas is not None and run_sigmas is not None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = warp.retarget(schedule, num_steps, sigmas=list(run_sigmas) if use_sigma else None,
                                   coord="sigma" if use_sigma else "index")
        return tuple(target.mask)
    except (OTCacheError, ValueError):
        if use_sigma:
            pos = sigma_positions(schedule.sigmas, run_sigmas)
        else:
            pos = np.arange(num_steps + 1, dtype=np.float64) * (schedule.num_steps / num_steps)
        return crossing_mask(schedule, pos, force_last=schedule.force_last)


def interpolate(reference: Schedule, anchor: Schedule | None, budget: int) -> Schedule:
    """Target schedule with ``budget`` computed steps.

    With an anchor: the schedule its validation ladder measured best at that
    budget when it has one (``transport.ladder_steps``), else the W2-geodesic
    interpolation of ``transport``. Without one: the reference's own warp
    re-sampled at the new budget (its shape kept).
    """
    measured = transport.ladder_steps(anchor, reference.num_steps, budget) if anchor is not None else None
    if measured is not None:
        steps, source = measured
        return Schedule(reference.num_steps, steps, kind="interpolated", force_last=reference.force_last,
                        sigmas=reference.sigmas,
                        provenance={**transport.carried(reference), "source": f"validation ladder ({source})",
                                    "budget": budget, "steps": reference.num_steps})
    if anchor is not None and not (anchor.budget == reference.budget and anchor.num_steps == reference.num_steps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return transport.interpolate(reference, anchor, budget, num_steps=reference.num_steps)
    return resample(reference, budget)


def resample(schedule: Schedule, budget: int) -> Schedule:
    """``schedule``'s warp at ``budget`` computed steps on its own N (no gap cap)."""
    n = schedule.num_steps
    budget = max(1, min(int(budget), n))
    if budget == schedule.budget:
        return schedule
    if budget == n:
        return schedule.replace(compute_steps=tuple(range(n)), kind="interpolated", max_gap=None)
    force_last = schedule.force_last and budget >= 2
    phi = warp.Warp.from_schedule(schedule)
    coordinate = warp.make_coordinate(schedule.coord, n, schedule.force_last, schedule.sigmas)
    steps = project(phi.positions(budget, coordinate), n, None, force_last)
    return schedule.replace(compute_steps=steps, kind="interpolated", force_last=force_last, max_gap=None)


def retarget_full(schedule: Schedule, num_steps: int) -> Schedule:
    """``schedule`` on ``num_steps`` steps (index coordinate, speed-up kept), as a Schedule."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return warp.retarget(schedule, num_steps)
