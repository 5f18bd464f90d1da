"""Reference schedules: K-constrained paths through the step DAG (method.md §3).

A schedule with budget K is a path ``0 = s_1 -> s_2 -> ... -> s_K = N-1`` with K nodes
(``force_last``), or K real nodes followed by an edge into the virtual sink ``N``
(``force_last=False``), every edge of length ``<= L``. Objectives:

* ``"additive"``  -- ``min sum_e w_e ** power`` (ShortDF / MeanCache style);
* ``"bottleneck"`` -- ``min max_e w_e``;
* ``"leximax"``   -- LeMiCa's lexicographic minimax: compare the sorted-descending edge weight
  vectors lexicographically. Exact via rank encoding (§3.4): weights quantised to a tolerance
  ``q`` (default ``1e-3 * max w``), edge cost ``M ** rank`` with ``M`` larger than the number of
  edges of any path, summed as Python big integers in the additive DP. Ties are broken by the
  plain sum of weights, then by the smaller predecessor index.

Every budget comes from one DP table over "number of computed steps". Weight matrices are
(N, N+1) as produced by :mod:`otcache_engine.edge_errors` ((N, N) is accepted with
``force_last``); NaN and +inf entries are forbidden edges; gap-1 edges are normally 0.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import CalibrationError, InfeasibleBudgetError, ScheduleError
from .schedule import Schedule

OBJECTIVES = ("leximax", "additive", "bottleneck")


# --- inputs ---------------------------------------------------------------------

def prepare_weights(weights: Any, max_gap: int | None = None, force_last: bool = True) -> tuple[np.ndarray, int]:
    """Validate a weight matrix; return it as (N, N+1) float64 with +inf on forbidden edges, and L.

    ``max_gap=None`` takes the longest edge that has a finite weight.
    """
    try:
        w = np.array(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError("edge weights must be a numeric (N, N+1) matrix") from None
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] not in (w.shape[0], w.shape[0] + 1):
        raise CalibrationError(f"edge weights must be an (N, N+1) matrix (or (N, N) with force_last), "
                               f"got shape {w.shape}")
    n = w.shape[0]
    if w.shape[1] == n:
        if not force_last:
            raise CalibrationError("force_last=False needs the sink column: pass an (N, N+1) weight matrix")
        w = np.concatenate([w, np.full((n, 1), np.inf)], axis=1)
    w[np.isnan(w)] = np.inf
    if (w < 0).any():
        raise CalibrationError("edge weights must be >= 0 (use +inf or NaN to forbid an edge)")
    i = np.arange(n)[:, None]
    j = np.arange(n + 1)[None, :]
    gap = j - i
    w[gap < 1] = np.inf
    if force_last:
        w[:, n] = np.inf
    if max_gap is None:
        fin = np.isfinite(w)
        L = int(gap[fin].max()) if fin.any() else 1
    else:
        if isinstance(max_gap, bool) or not isinstance(max_gap, (int, np.integer)) or max_gap < 1:
            raise ScheduleError(f"max_gap must be a positive integer, got {max_gap!r}")
        L = int(max_gap)
    w[gap > L] = np.inf
    return w, L


def smallest_feasible_budget(num_steps: int, max_gap: int, force_last: bool = True) -> int:
    """``1 + ceil((N-1)/L)`` with a forced last step, ``ceil(N/L)`` with the sink (all edges allowed)."""
    n, L = int(num_steps), int(max_gap)
    if force_last:
        return 1 + math.ceil((n - 1) / L)
    return max(1, math.ceil(n / L))


def _check_budgets(budgets: Any, k_max: Any, num_steps: int) -> list[int]:
    if budgets is None and k_max is None:
        return list(range(1, num_steps + 1))
    if budgets is None:
        if isinstance(k_max, bool) or not isinstance(k_max, (int, np.integer)) or k_max < 1:
            raise ScheduleError(f"k_max must be a positive integer, got {k_max!r}")
        return list(range(1, int(k_max) + 1))
    if isinstance(budgets, (int, np.integer)) and not isinstance(budgets, bool):
        budgets = [budgets]
    out = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ScheduleError(f"budgets must be positive integers, got {b!r}")
        out.append(int(b))
    if not out:
        raise ScheduleError("no budget given")
    return sorted(set(out))


def _feasible_layers(w: np.ndarray, kmax: int, force_last: bool) -> list[bool]:
    """feasible[k] for k = 0..kmax: a path with k real nodes exists (boolean reachability DP)."""
    n = w.shape[0]
    fin = np.isfinite(w)
    reach = np.zeros(n, dtype=bool)
    reach[0] = True
    out = [False]
    for k in range(1, kmax + 1):
        if k > 1:
            reach = (reach[:, None] & fin[:, :n]).any(axis=0)
        out.append(bool(reach[n - 1]) if force_last else bool((reach & fin[:, n]).any()))
    return out


# --- DP kernels -------------------------------------------------------------------

def _dp_numeric(w: np.ndarray, L: int, kmax: int, force_last: bool, objective: str,
                power: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Additive / bottleneck DP, vectorised over j (and the L candidate gaps).

    Returns D (kmax+1, N), P (kmax+1, N) and, per layer, the sink answer and its predecessor.
    """
    n = w.shape[0]
    cost = w if objective == "bottleneck" else np.where(np.isfinite(w), w ** power, np.inf)
    # band[g-1, j] = cost[j-g, j] for j >= g (j < N), rows ordered from the largest gap to the smallest
    gaps = np.arange(min(L, n - 1), 0, -1) if n > 1 else np.zeros(0, dtype=int)
    band = np.full((gaps.size, n), np.inf)
    for r, g in enumerate(gaps):
        band[r, g:] = cost[np.arange(0, n - g), np.arange(g, n)]
    D = np.full((kmax + 1, n), np.inf)
    P = np.full((kmax + 1, n), -1, dtype=np.int64)
    D[1, 0] = 0.0
    cand = np.full((gaps.size, n), np.inf)
    combine = np.maximum if objective == "bottleneck" else np.add
    cols = np.arange(n)
    for k in range(2, kmax + 1):
        prev = D[k - 1]
        for r, g in enumerate(gaps):
            combine(prev[: n - g], band[r, g:], out=cand[r, g:])
        best = np.argmin(cand, axis=0) if gaps.size else np.zeros(n, dtype=int)
        D[k] = cand[best, cols] if gaps.size else np.inf
        P[k] = cols - gaps[best] if gaps.size else -1
    sink_val = np.full(kmax + 1, np.inf)
    sink_pred = np.full(kmax + 1, -1, dtype=np.int64)
    if not force_last:
        tail = cost[:, n]
        tot = combine(D, tail[None, :])
        sink_pred[:] = np.argmin(tot, axis=1)
        sink_val[:] = tot[np.arange(kmax + 1), sink_pred]
    D[~np.isfinite(D)] = np.inf
    return D, P, sink_val, sink_pred


def _quantised_ranks(w: np.ndarray, tolerance: float | None) -> tuple[np.ndarray, float]:
    fin = np.isfinite(w)
    vals = w[fin]
    top = float(vals.max()) if vals.size else 0.0
    q = 1e-3 * top if tolerance is None else float(tolerance)
    if not math.isfinite(q) or q < 0:
        raise ScheduleError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    key = np.floor(vals / q + 0.5) if q > 0 else vals
    _, inv = np.unique(key, return_inverse=True)
    ranks = np.full(w.shape, -1, dtype=np.int64)
    ranks[fin] = inv.reshape(-1)
    return ranks, q


def _dp_leximax(w: np.ndarray, L: int, kmax: int, force_last: bool, tolerance: float | None):
    """Exact leximax DP with rank-encoded big-integer costs and (sum C, sum w, smaller i) tie-breaks."""
    n = w.shape[0]
    ranks, q = _quantised_ranks(w, tolerance)
    incoming = _encoded_edges(w, ranks, L, kmax + 1)   # base > edges of any path with <= kmax real nodes
    D: list[list[Any]] = [[None] * n for _ in range(kmax + 1)]
    S: list[list[float]] = [[0.0] * n for _ in range(kmax + 1)]
    P: list[list[int]] = [[-1] * n for _ in range(kmax + 1)]
    if kmax >= 1:
        D[1][0] = 0
    lo_reach, hi_reach = 0, 0                       # nodes reachable in layer k-1 lie in [lo, hi]
    for k in range(2, kmax + 1):
        new_lo, new_hi = n, -1
        for j in range(lo_reach + 1, min(n - 1, hi_reach + L) + 1):
            best, bs, bi = _best_incoming(incoming[j], D[k - 1], S[k - 1])
            if best is not None:
                D[k][j], S[k][j], P[k][j] = best, bs, bi
                new_lo, new_hi = min(new_lo, j), j
        if new_hi < 0:
            break                                   # nothing reachable any more: later layers stay empty
        lo_reach, hi_reach = new_lo, new_hi
    sink: list[tuple[Any, float, int]] = [(None, 0.0, -1)] * (kmax + 1)
    if not force_last:
        for k in range(1, kmax + 1):
            sink[k] = _best_incoming(incoming[n], D[k], S[k])
    return D, P, sink, q


def _encoded_edges(w: np.ndarray, ranks: np.ndarray, L: int, base: int) -> list[list[tuple[int, int, float]]]:
    """incoming[j] = [(i, base ** rank(i, j), w_ij), ...] over allowed edges, ascending i."""
    n = w.shape[0]
    powers: dict[int, int] = {}
    incoming: list[list[tuple[int, int, float]]] = [[] for _ in range(n + 1)]
    for j in range(1, n + 1):
        for i in range(max(0, j - L), j):
            r = int(ranks[i, j])
            if r >= 0:
                c = powers.get(r)
                if c is None:
                    c = powers[r] = base ** r
                incoming[j].append((i, c, float(w[i, j])))
    return incoming


def _best_incoming(edges: list[tuple[int, int, float]], prev: list[Any],
                   prev_sums: list[float]) -> tuple[Any, float, int]:
    """Smallest encoded cost over the edges into one node; ties by the smaller weight sum, then smaller i."""
    best, bs, bi = None, 0.0, -1
    for i, c, wij in edges:
        p = prev[i]
        if p is None:
            continue
        val = p + c
        s = prev_sums[i] + wij
        if best is None or val < best or (val == best and s < bs):
            best, bs, bi = val, s, i
    return best, bs, bi


def _backtrack(P: Any, k: int, j: int) -> list[int]:
    path = [j]
    while k > 1:
        j = int(P[k][j])
        path.append(j)
        k -= 1
    path.reverse()
    return path


# --- public API --------------------------------------------------------------------

def path_edges(steps: Sequence[int], num_steps: int, force_last: bool = True) -> list[tuple[int, int]]:
    """The edges of a compute set (with the sink edge when ``force_last`` is off)."""
    s = [int(x) for x in steps]
    edges = list(zip(s, s[1:]))
    if not force_last:
        edges.append((s[-1], num_steps))
    return edges


def schedule_cost(weights: Any, schedule: Schedule | Sequence[int], objective: str = "additive",
                  power: float = 1.0, force_last: bool | None = None) -> float | tuple[float, ...]:
    """Cost of a schedule under a weight matrix: the sum (``additive``, of ``w ** power``), the largest edge
    (``bottleneck``) or the sorted-descending edge weights (``leximax``). +inf when it uses a forbidden edge."""
    if isinstance(schedule, Schedule):
        steps, fl = schedule.compute_steps, schedule.force_last if force_last is None else force_last
    else:
        steps, fl = tuple(int(x) for x in schedule), True if force_last is None else force_last
    w, _ = prepare_weights(weights, None, fl)
    vals = [float(w[i, j]) for i, j in path_edges(steps, w.shape[0], fl)]
    if objective == "additive":
        return float(sum(v ** power for v in vals))
    if objective == "bottleneck":
        return float(max(vals, default=0.0))
    if objective == "leximax":
        return tuple(sorted(vals, reverse=True))
    raise ScheduleError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")


def reference_schedules(weights: Any, budgets: Iterable[int] | int | None = None, *, k_max: int | None = None,
                        max_gap: int | None = None, objective: str = "leximax", force_last: bool = True,
                        power: float = 1.0, tolerance: float | None = None, kind: str = "reference",
                        sigmas: Sequence[float] | None = None,
                        provenance: Mapping[str, Any] | None = None) -> dict[int, Schedule]:
    """Optimal schedules for several budgets from one DP table.

    ``budgets``: the budgets K wanted (or ``k_max``: every feasible K up to it; neither: every feasible K
    up to N). Explicitly asked budgets below the smallest feasible one raise
    :class:`InfeasibleBudgetError` (message and ``.smallest_feasible`` name it); with ``k_max`` or no
    budgets the infeasible ones are left out. ``K >= N`` gives the all-computed schedule.
    """
    if objective not in OBJECTIVES:
        raise ScheduleError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
    if not isinstance(power, (int, float)) or isinstance(power, bool) or not (power > 0 and math.isfinite(power)):
        raise ScheduleError(f"power must be a finite number > 0, got {power!r}")
    w, L = prepare_weights(weights, max_gap, force_last)
    n = w.shape[0]
    explicit = budgets is not None
    wanted = _check_budgets(budgets, k_max, n)
    dp_budgets = [k for k in wanted if k < n]
    kmax = max(dp_budgets, default=0)
    feasible = _feasible_layers(w, kmax, force_last) if kmax else [False]
    infeasible = [k for k in dp_budgets if not feasible[k]]
    if infeasible and (explicit or len(infeasible) == len(wanted)):
        raise _infeasible(w, infeasible[0] if explicit else max(infeasible), L, force_last)
    dp_budgets = [k for k in dp_budgets if feasible[k]]
    kmax = max(dp_budgets, default=0)
    base_prov = dict(provenance or {})
    common = dict(num_steps=n, force_last=force_last, max_gap=L,
                  sigmas=tuple(sigmas) if sigmas is not None else None)
    out: dict[int, Schedule] = {}
    q = None
    if kmax:
        if objective == "leximax":
            D, P, sink, q = _dp_leximax(w, L, kmax, force_last, tolerance)
        else:
            D, P, sink_val, sink_pred = _dp_numeric(w, L, kmax, force_last, objective, power)
        for k in dp_budgets:
            if force_last:
                path = _backtrack(P, k, n - 1)
            else:
                pred = sink[k][2] if objective == "leximax" else int(sink_pred[k])
                path = _backtrack(P, k, pred)
            edges = [float(w[i, j]) for i, j in path_edges(path, n, force_last)]
            prov = {"source": "graph", "objective": objective, "budget": k, "max_gap": L,
                    "max_edge": max(edges, default=0.0), "sum_edges": float(sum(edges)), **base_prov}
            if objective == "leximax":
                prov["tolerance"] = q
            if objective == "additive" and power != 1.0:
                prov["power"] = float(power)
            out[k] = Schedule(compute_steps=tuple(path), kind=kind, provenance=prov, **common)
    for k in wanted:
        if k >= n:
            out[k] = Schedule(compute_steps=tuple(range(n)), kind=kind,
                              provenance={"source": "graph", "objective": objective, "budget": k, "max_gap": L,
                                          "note": "budget >= N: every step computed", **base_prov}, **common)
    return dict(sorted(out.items()))


def reference_schedule(weights: Any, budget: int, **kwargs: Any) -> Schedule:
    """The optimal schedule for one budget (see :func:`reference_schedules` for the options)."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ScheduleError(f"budget must be a positive integer, got {budget!r}")
    return reference_schedules(weights, [int(budget)], **kwargs)[int(budget)]


def _infeasible(w: np.ndarray, k: int, L: int, force_last: bool) -> InfeasibleBudgetError:
    n = w.shape[0]
    feas = _feasible_layers(w, n - 1, force_last) if n > 1 else [False]
    smallest = next((kk for kk in range(1, n) if kk < len(feas) and feas[kk]), n)
    formula = smallest_feasible_budget(n, L, force_last)
    why = ("1+ceil((N-1)/L)" if force_last else "ceil(N/L)") if smallest == formula else \
        "some edges are forbidden (NaN/inf weights)"
    hint = ""
    if force_last and k >= 2 and smallest == formula:
        hint = f", or raise max_gap to {math.ceil((n - 1) / (k - 1))}"
    elif not force_last and smallest == formula:
        hint = f", or raise max_gap to {math.ceil(n / k)}"
    msg = (f"budget K={k} is infeasible for N={n} steps with max gap L={L}"
           f"{' and a forced last step' if force_last else ''}: the smallest feasible budget is K={smallest} "
           f"({why}); use K >= {smallest}{hint}")
    return InfeasibleBudgetError(msg, smallest_feasible=smallest)
