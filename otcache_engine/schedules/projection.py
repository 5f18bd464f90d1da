"""Exact L1 projection of real step positions onto a feasible integer schedule.

Every continuous source of schedules (the OT warp, the anchor search's gap
fractions) produces K real positions; the sampler needs K distinct integer
steps that start at 0, end at N-1 (unless ``force_last`` is off) and never
leave more than ``max_gap`` steps between two computations. Rounding alone can
collide in a dense head or break the gap cap, so we solve the nearest feasible
schedule exactly (method.md §4.2):

    F[0][n] = 0 if n == 0 else inf
    F[k][n] = |n - y_k| + min_{n-L <= m <= n-1} F[k-1][m]

The inner minimum is a sliding-window minimum (van Herk / Gil-Werman, O(N) per
row whatever L is); the argmin is recomputed only along the
backtracked path, so the whole projection is O(K*N) plus O(K*L).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import InfeasibleBudgetError, ScheduleError


def smallest_feasible_budget(num_steps: int, max_gap: int | None, force_last: bool = True) -> int:
    """The least K for which a schedule with gaps <= max_gap exists.

    With ``force_last`` the K-1 gaps must cover N-1 steps; without it the K
    gaps, the last one to the virtual sink N, must cover N steps.
    """
    span = num_steps - 1 if force_last else num_steps
    gap = max_gap if max_gap is not None else max(span, 1)
    if force_last:
        return 1 + math.ceil(span / gap) if span > 0 else 1
    return max(1, math.ceil(span / gap))


def uniform_gap(num_steps: int, budget: int, force_last: bool = True) -> float:
    """The gap of ``budget`` evenly spread computations on ``num_steps`` steps: the K-1 intervals cover N-1
    steps with ``force_last``, the K intervals up to the sink cover N without it (the span when there are none)."""
    span = num_steps - 1 if force_last else num_steps
    intervals = budget - 1 if force_last else budget
    return span / intervals if span > 0 and intervals > 0 else float(max(span, 1))


def smallest_feasible_gap(num_steps: int, budget: int, force_last: bool = True) -> int:
    """The least max gap that makes ``budget`` computed steps feasible."""
    span = num_steps - 1 if force_last else num_steps
    intervals = budget - 1 if force_last else budget
    if span <= 0:
        return 1
    if intervals <= 0:
        raise InfeasibleBudgetError(
            f"budget K={budget} cannot reach step {num_steps - 1} whatever the max gap; use K >= 2",
            smallest_feasible=2)
    return max(1, math.ceil(uniform_gap(num_steps, budget, force_last)))


def check_feasible(budget: int, num_steps: int, max_gap: int | None, force_last: bool = True) -> None:
    """Raise a one-line, actionable error when no schedule fits the constraints."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ScheduleError(f"num_steps must be a positive integer, got {num_steps!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise InfeasibleBudgetError(f"budget must be a positive integer, got {budget!r}", smallest_feasible=None)
    if max_gap is not None and (isinstance(max_gap, bool) or not isinstance(max_gap, (int, np.integer))
                                or max_gap < 1):
        raise ScheduleError(f"max_gap must be a positive integer or None, got {max_gap!r}")
    if budget > num_steps:
        raise InfeasibleBudgetError(
            f"budget K={budget} exceeds num_steps N={num_steps}: at most every step can be computed",
            smallest_feasible=None)
    least = smallest_feasible_budget(num_steps, max_gap, force_last)
    if budget < least:
        intervals = budget - 1 if force_last else budget
        hint = (f" (or raise the max gap to {smallest_feasible_gap(num_steps, budget, force_last)})"
                if intervals > 0 and max_gap is not None else "")
        raise InfeasibleBudgetError(
            f"budget K={budget} is infeasible for N={num_steps} steps with max gap {max_gap}: "
            f"the smallest feasible budget is {least}{hint}",
            smallest_feasible=least)


def is_feasible(steps: Sequence[int], num_steps: int, max_gap: int | None, force_last: bool = True) -> bool:
    """Whether integer ``steps`` already form a valid schedule under the constraints."""
    s = np.asarray(steps, dtype=np.int64)
    if s.size == 0 or s[0] != 0 or s[-1] > num_steps - 1:
        return False
    if force_last and s[-1] != num_steps - 1:
        return False
    gaps = np.diff(s)
    if np.any(gaps < 1):
        return False
    if max_gap is None:
        return True
    tail = [] if force_last else [num_steps - s[-1]]
    return bool(np.all(gaps <= max_gap) and all(t <= max_gap for t in tail))


def project(y: Sequence[float], num_steps: int, max_gap: int | None,
            force_last: bool = True) -> tuple[int, ...]:
    """Nearest (in L1) K strictly increasing integer steps from 0 with gaps <= max_gap.

    ``max_gap=None`` means no gap cap. Returns ``rint(y)`` unchanged whenever
    that is already feasible (appendix A), so a schedule's own positions come
    back exactly. Ties in the DP go to the smaller predecessor.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    budget = int(y.size)
    check_feasible(budget, num_steps, max_gap, force_last)
    if not np.all(np.isfinite(y)):
        raise ScheduleError("positions to project contain NaN or infinity")
    rounded = np.rint(y)
    if is_feasible(rounded.astype(np.int64), num_steps, max_gap, force_last):
        return tuple(int(v) for v in rounded)
    return _project_dp(y, num_steps, max_gap if max_gap is not None else num_steps, force_last)


def _project_dp(y: np.ndarray, num_steps: int, gap: int, force_last: bool) -> tuple[int, ...]:
    n = np.arange(num_steps, dtype=np.float64)
    table = np.full((y.size, num_steps), np.inf)
    table[0, 0] = abs(y[0])
    for k in range(1, y.size):
        table[k] = np.abs(n - y[k]) + _window_min_before(table[k - 1], gap)
    last = table[-1]
    if force_last:
        end = num_steps - 1
    else:
        allowed = np.where(n >= num_steps - gap, last, np.inf)
        end = int(np.argmin(allowed))
    return _backtrack(table, end, gap)


def _window_min_before(row: np.ndarray, gap: int) -> np.ndarray:
    """out[n] = min(row[max(0, n-gap) : n]); inf where the window is empty.

    van Herk / Gil-Werman: cut the (left-padded) row into blocks of the window
    width w; a window spans at most two blocks, so its minimum is the suffix
    minimum of its first block at its start and the prefix minimum of its
    second block at its end. O(N) whatever w, numpy only.
    """
    n = row.size
    w = min(gap, n)
    padded = np.concatenate((np.full(w - 1, np.inf), row))
    blocks = np.concatenate((padded, np.full(-padded.size % w, np.inf))).reshape(-1, w)
    prefix = np.minimum.accumulate(blocks, axis=1).ravel()
    suffix = np.minimum.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].ravel()
    start = np.arange(n)
    trailing = np.minimum(suffix[start], prefix[start + w - 1])  # min(row[m-w+1 : m+1]) for m = start
    return np.concatenate(([np.inf], trailing[:-1]))


def _backtrack(table: np.ndarray, end: int, gap: int) -> tuple[int, ...]:
    steps = [end]
    for k in range(table.shape[0] - 1, 0, -1):
        hi = steps[-1]
        lo = max(0, hi - gap)
        steps.append(lo + int(np.argmin(table[k - 1, lo:hi])))
    return tuple(reversed(steps))
