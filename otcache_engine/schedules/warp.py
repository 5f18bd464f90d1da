"""Continuous warps of schedules, step coordinates, and retargeting (method.md §1.4, §5.2, §5.6).

A schedule S = {s_1=0 < ... < s_K} becomes the piecewise-linear function
phi_S(u) through the knots (u_k, t_k), u_k = (k-1)/(K-1), t_k = chi(s_k): the
quantile function of its "compute density". Being normalised on [0,1] x [0,1],
warps of different budgets and step counts are comparable, can be averaged
along the 1-D Wasserstein geodesic (transport.py), and re-sampled at any K' and
N' (retargeting). chi is the index coordinate tau(n) = n/(N-1), or the
noise-progress coordinate xi(n) = (sigma_0 - sigma_n)/(sigma_0 - sigma_{N-1})
when the schedule must follow noise levels rather than step numbers (another
resolution or shift, or a run that is a slice of a longer schedule).

With ``force_last`` off the last knot is the virtual sink N (tau = n/N, and xi
uses sigma_N), so the tail gap is part of the shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ScheduleError
from .projection import check_feasible, project, smallest_feasible_gap, uniform_gap
from .schedule import Schedule, budget_for_speedup

COORDS = ("index", "sigma")
KEEP = ("speedup", "budget")


# --- coordinates --------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Coordinate:
    """chi on the grid points 0..M (M = N-1, or N with a virtual sink), and its inverse.

    Between grid points chi is linear, so fractional step positions map to [0,1]
    and back without loss.
    """

    values: np.ndarray
    kind: str

    @property
    def span(self) -> int:
        return len(self.values) - 1

    def __call__(self, n: float | np.ndarray) -> np.ndarray:
        return np.interp(n, np.arange(self.span + 1), self.values)

    def inverse(self, t: float | np.ndarray) -> np.ndarray:
        return np.interp(t, self.values, np.arange(self.span + 1))


def tau(n: float | np.ndarray, num_steps: int) -> np.ndarray:
    """Index coordinate n/(N-1)."""
    return np.asarray(n, dtype=np.float64) / max(num_steps - 1, 1)


def xi(n: float | np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Noise-progress coordinate (sigma_0 - sigma_n)/(sigma_0 - sigma_{N-1}), linear between steps."""
    return sigma_coordinate(sigmas)(n)


def index_coordinate(num_steps: int, force_last: bool = True) -> Coordinate:
    span = num_steps - 1 if force_last else num_steps
    return Coordinate(np.arange(span + 1, dtype=np.float64) / max(span, 1), "index")


def sigma_coordinate(sigmas: Sequence[float], force_last: bool = True) -> Coordinate:
    """xi over a sigma grid of N+1 values (the sampler's list, ending at the final sigma)."""
    sig = _checked_sigmas(sigmas)
    span = len(sig) - 2 if force_last else len(sig) - 1
    drop = sig[0] - sig[span]
    if span > 0 and not drop > 0:
        raise ScheduleError("sigma grid does not decrease over the steps; cannot use the sigma coordinate")
    values = (sig[0] - sig[: span + 1]) / drop if span > 0 else np.zeros(1)
    return Coordinate(values, "sigma")


def make_coordinate(coord: str, num_steps: int, force_last: bool = True,
                    sigmas: Sequence[float] | None = None) -> Coordinate:
    if coord == "index":
        return index_coordinate(num_steps, force_last)
    if coord != "sigma":
        raise ScheduleError(f"unknown coordinate {coord!r}; expected one of {list(COORDS)}")
    if sigmas is None:
        raise ScheduleError("the sigma coordinate needs a sigma grid (N+1 values); none was given")
    if len(sigmas) != num_steps + 1:
        raise ScheduleError(f"sigma grid has {len(sigmas)} values, expected num_steps+1 = {num_steps + 1}")
    return sigma_coordinate(sigmas, force_last)


def _checked_sigmas(sigmas: Sequence[float]) -> np.ndarray:
    sig = np.asarray(sigmas, dtype=np.float64).ravel()
    if sig.size < 2:
        raise ScheduleError("a sigma grid needs at least 2 values")
    if not np.all(np.isfinite(sig)):
        raise ScheduleError("sigma grid contains NaN or infinity")
    if np.any(np.diff(sig) > 0):
        raise ScheduleError("sigma grid must be non-increasing (from noise to data)")
    return sig


def sigma_positions(schedule_sigmas: Sequence[float], run_sigmas: Sequence[float]) -> np.ndarray:
    """Fractional positions of ``run_sigmas`` on the step grid of ``schedule_sigmas``.

    sigma(n) is taken piecewise linear between the schedule's grid points
    0..len-1, so a run whose sigma list is a slice of the schedule's (a
    KSamplerAdvanced start/end window, one stage of a two-stage Wan 2.2 run)
    lands exactly on integer positions, and any other grid falls in between.
    Sigmas outside the schedule's range are clamped to its first/last position.
    """
    grid = _checked_sigmas(schedule_sigmas)
    run = np.asarray(run_sigmas, dtype=np.float64).ravel()
    if not np.all(np.isfinite(run)):
        raise ScheduleError("run sigmas contain NaN or infinity")
    return np.interp(-run, -grid, np.arange(grid.size, dtype=np.float64))


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



# --- warps --------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Warp:
    """Piecewise-linear quantile function through the knots (levels[k], values[k]).

    ``force_last`` says whether the value 1 is the last step (True) or the
    virtual sink past it (False); sampling honours it.
    """

    levels: np.ndarray
    values: np.ndarray
    force_last: bool = True

    def __post_init__(self) -> None:
        u = np.asarray(self.levels, dtype=np.float64)
        t = np.asarray(self.values, dtype=np.float64)
        if u.ndim != 1 or u.shape != t.shape or u.size < 2:
            raise ScheduleError("a warp needs at least two (level, value) knots of equal length")
        if u[0] != 0.0 or u[-1] != 1.0 or np.any(np.diff(u) <= 0):
            raise ScheduleError("warp levels must increase strictly from 0 to 1")
        if np.any(np.diff(t) < 0) or not np.all(np.isfinite(t)):
            raise ScheduleError("warp values must be finite and non-decreasing")
        object.__setattr__(self, "levels", u)
        object.__setattr__(self, "values", t)

    def __call__(self, u: float | np.ndarray) -> np.ndarray:
        return np.interp(u, self.levels, self.values)

    evaluate = __call__

    @classmethod
    def from_values(cls, values: Sequence[float], force_last: bool = True) -> "Warp":
        """Warp through equally spaced levels: the lossless representation of K positions."""
        t = np.asarray(values, dtype=np.float64)
        if t.size == 1:
            return cls(np.array([0.0, 1.0]), np.array([t[0], t[0]]), force_last)
        return cls(np.linspace(0.0, 1.0, t.size), t, force_last)

    @classmethod
    def from_schedule(cls, schedule: Schedule, coord: str | None = None,
                      sigmas: Sequence[float] | None = None) -> "Warp":
        """phi_S in ``coord`` (default: the schedule's own), on ``sigmas`` or the schedule's grid."""
        chi = make_coordinate(coord or schedule.coord, schedule.num_steps, schedule.force_last,
                              sigmas if sigmas is not None else schedule.sigmas)
        points = list(schedule.compute_steps)
        if not schedule.force_last:
            points.append(schedule.num_steps)
        if len(points) == 1:  # N = 1: the only schedule computes everything
            return cls(np.array([0.0, 1.0]), np.array([0.0, 1.0]), schedule.force_last)
        return cls.from_values(chi(np.asarray(points, dtype=np.float64)), schedule.force_last)

    def sample(self, budget: int) -> np.ndarray:
        """The warp at ``budget`` equally spaced levels (``budget``+1, sink dropped, without force_last)."""
        count = budget if self.force_last else budget + 1
        if count == 1:
            return self(np.zeros(1))
        values = self(np.linspace(0.0, 1.0, count))
        return values if self.force_last else values[:-1]

    def positions(self, budget: int, coordinate: Coordinate) -> np.ndarray:
        """Real step positions of ``budget`` computations on the grid of ``coordinate``."""
        return coordinate.inverse(self.sample(budget))

    def blend(self, other: "Warp", lam: float) -> "Warp":
        """(1-lam)*self + lam*other: the W2 geodesic between the two compute densities."""
        if self.force_last != other.force_last:
            raise ScheduleError("cannot blend warps with different force_last settings")
        u = np.union1d(self.levels, other.levels)
        return Warp(u, (1.0 - lam) * self(u) + lam * other(u), self.force_last)


def w2(a: Warp, b: Warp) -> float:
    """Exact W2 between two piecewise-linear quantile functions.

    On each interval of the union of knots d = phi_a - phi_b is linear, and
    the integral of d^2 over [u0, u1] is (u1-u0)(d0^2 + d0*d1 + d1^2)/3.
    """
    u = np.union1d(a.levels, b.levels)
    d = a(u) - b(u)
    d0, d1 = d[:-1], d[1:]
    return math.sqrt(max(0.0, float(np.sum(np.diff(u) * (d0 * d0 + d0 * d1 + d1 * d1) / 3.0))))


def atomic_w2(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact W2 between the uniform atomic measures (1/K) sum delta_{t_k} (diagnostic only)."""
    ta, tb = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    cuts = np.union1d(np.linspace(0.0, 1.0, ta.size + 1), np.linspace(0.0, 1.0, tb.size + 1))
    mid = 0.5 * (cuts[:-1] + cuts[1:])
    qa = ta[np.minimum((mid * ta.size).astype(np.int64), ta.size - 1)]
    qb = tb[np.minimum((mid * tb.size).astype(np.int64), tb.size - 1)]
    return math.sqrt(float(np.sum(np.diff(cuts) * (qa - qb) ** 2)))


# --- retargeting --------------------------------------------------------------

def retarget(schedule: Schedule, num_steps: int, sigmas: Sequence[float] | None = None,
             keep: str = "speedup", max_gap: int | None = None, coord: str | None = None,
             budget: int | None = None) -> Schedule:
    """The same schedule shape on ``num_steps`` steps (and/or another sigma grid), §5.6.

    ``keep="speedup"`` keeps N/K (K' = round(K*N'/N), :func:`retarget_budget`); ``"budget"`` keeps K
    (capped at N'); a ``budget`` given is used as K' (a caller that computed it already). ``coord=None`` picks the sigma coordinate when both the
    schedule and the target carry a sigma grid, else the index coordinate.
    ``max_gap=None`` scales the schedule's gap cap by N'/N and raises it only
    as far as K' needs; an explicit ``max_gap`` is strict (InfeasibleBudgetError).
    Unchanged N and grid with the same K return the schedule itself.
    """
    if keep not in KEEP:
        raise ScheduleError(f"keep must be one of {list(KEEP)}, got {keep!r}")
    check_feasible(1, num_steps, None, False)  # validates num_steps
    if sigmas is not None and len(sigmas) != num_steps + 1:
        raise ScheduleError(f"target sigma grid has {len(sigmas)} values, expected num_steps+1 = {num_steps + 1}")
    if coord == "sigma" and schedule.sigmas is None:
        raise ScheduleError("the schedule carries no sigma grid, so it cannot be retargeted in the sigma coordinate")
    budget = _target_budget(schedule, num_steps, keep) if budget is None else int(budget)
    same_grid = _same_grid(sigmas, schedule.sigmas)
    if num_steps == schedule.num_steps and same_grid and budget == schedule.budget and (
            max_gap is None or schedule.largest_gap <= max_gap):
        return schedule if sigmas is None or schedule.sigmas is not None else schedule.replace(sigmas=tuple(sigmas))
    coord = coord or ("sigma" if sigmas is not None and schedule.sigmas is not None else "index")
    target_sigmas = _target_sigmas(schedule, num_steps, sigmas, coord)
    gap = _retarget_gap(schedule, num_steps, budget, max_gap)
    steps = _place(Warp.from_schedule(schedule, coord), budget, num_steps, gap, coord, target_sigmas)
    return schedule.replace(
        num_steps=num_steps, compute_steps=steps, sigmas=target_sigmas, max_gap=gap,
        provenance=_retarget_provenance(schedule, num_steps, budget, coord, keep))


def _same_grid(target: Sequence[float] | None, own: Sequence[float] | None) -> bool:
    """A missing grid on either side cannot differ; grids of different length always do."""
    if target is None or own is None:
        return True
    return len(target) == len(own) and bool(np.allclose(target, own, rtol=1e-9, atol=0))


def _target_budget(schedule: Schedule, num_steps: int, keep: str) -> int:
    if keep == "budget":
        return max(_least(schedule, num_steps), min(schedule.budget, num_steps))
    return retarget_budget(schedule, num_steps)


def _least(schedule: Schedule, num_steps: int) -> int:
    return 2 if schedule.force_last and num_steps > 1 else 1


def retarget_budget(schedule: Schedule, num_steps: int, speedup: float | None = None) -> int:
    """K' of ``schedule`` on ``num_steps`` steps at ``speedup``, by default its own N/K (at least 2 with a forced
    last step). A caller that knows the speed-up the user asked passes it: the schedule's own N/K is that
    speed-up already rounded once to N, and rounding it again to another N can miss by a step."""
    return budget_for_speedup(num_steps, speedup or schedule.num_steps / schedule.budget, _least(schedule, num_steps))


def _target_sigmas(schedule: Schedule, num_steps: int, sigmas: Sequence[float] | None,
                   coord: str) -> tuple[float, ...] | None:
    if sigmas is not None:
        return tuple(float(s) for s in sigmas)
    if num_steps == schedule.num_steps:
        return schedule.sigmas
    if coord == "sigma":
        raise ScheduleError("retargeting in the sigma coordinate to another step count needs the target sigma grid")
    return None


def _retarget_gap(schedule: Schedule, num_steps: int, budget: int, max_gap: int | None) -> int | None:
    if max_gap is not None:
        check_feasible(budget, num_steps, max_gap, schedule.force_last)
        return max_gap
    source_gap = schedule.max_gap or schedule.largest_gap
    # The cap keeps its ratio to the uniform gap (method.md §5.6): the warp keeps a schedule's gaps in
    # proportion to it at K', and scaling the cap by the span instead -- the same only when K stays --
    # squeezed the schedule when K' fell faster than N' (on 30 of 50 steps at 4x, 1.2x the uniform gap,
    # which flattened a front-loaded schedule into a uniform one).
    scale = uniform_gap(num_steps, budget, schedule.force_last) / uniform_gap(
        schedule.num_steps, schedule.budget, schedule.force_last)
    scaled = math.ceil(source_gap * scale - 1e-9)
    return max(1, scaled, smallest_feasible_gap(num_steps, budget, schedule.force_last))


def _place(warp: Warp, budget: int, num_steps: int, max_gap: int | None, coord: str,
           sigmas: Sequence[float] | None) -> tuple[int, ...]:
    """Sample ``warp`` at ``budget`` levels, map to the target grid, project to integers."""
    target = make_coordinate(coord, num_steps, warp.force_last, sigmas)
    return project(warp.positions(budget, target), num_steps, max_gap, warp.force_last)


def _retarget_provenance(schedule: Schedule, num_steps: int, budget: int, coord: str, keep: str) -> dict:
    prov = {k: v for k, v in schedule.provenance.items()}
    prov["retargeted_from"] = {"num_steps": schedule.num_steps, "budget": schedule.budget,
                               "coord": coord, "keep": keep}
    if "steps" in prov:
        prov["steps"] = num_steps
    if "budget" in prov:
        prov["budget"] = budget
    return prov


# --- carrying a schedule onto a run ---------------------------------------------------

def retarget_mask(schedule: Schedule, num_steps: int, run_sigmas: Sequence[float] | None,
                  budget: int | None = None) -> tuple[bool, ...]:
    """Mask of ``schedule`` carried to a full run of ``num_steps`` steps, keeping its speedup (or with
    ``budget`` computed steps, when the caller computed the run's K already).

    The schedule's own coordinate decides: index (step fraction) or sigma
    (noise level, when the schedule and the run both have a grid). Should the
    warp's projection find no feasible schedule (tiny runs), the density rule
    takes over rather than failing the user's sampling run.
    """
    use_sigma = schedule.coord == "sigma" and schedule.sigmas is not None and run_sigmas is not None
    try:
        target = retarget(schedule, num_steps, sigmas=list(run_sigmas) if use_sigma else None,
                          coord="sigma" if use_sigma else "index", budget=budget)
        return tuple(target.mask)
    except ValueError:   # ScheduleError and InfeasibleBudgetError are ValueErrors
        if use_sigma:
            pos = sigma_positions(schedule.sigmas, run_sigmas)
        else:
            pos = np.arange(num_steps + 1, dtype=np.float64) * (schedule.num_steps / num_steps)
        return crossing_mask(schedule, pos, force_last=schedule.force_last)


def resample(schedule: Schedule, budget: int) -> Schedule:
    """``schedule``'s warp at ``budget`` computed steps on its own N (no gap cap)."""
    n = schedule.num_steps
    budget = max(1, min(int(budget), n))
    if budget == schedule.budget:
        return schedule
    if budget == n:
        return schedule.replace(compute_steps=tuple(range(n)), kind="interpolated", max_gap=None)
    force_last = schedule.force_last and budget >= 2
    phi = Warp.from_schedule(schedule)
    coordinate = make_coordinate(schedule.coord, n, schedule.force_last, schedule.sigmas)
    steps = project(phi.positions(budget, coordinate), n, None, force_last)
    return schedule.replace(compute_steps=steps, kind="interpolated", force_last=force_last, max_gap=None)
