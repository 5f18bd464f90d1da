"""OmniCache: curvature-driven reuse selection and cache-noise correction (method.md §6).

* :func:`curvature_scores` -- a per-step curvature ``kappa_n`` from recorded runs (§6.2):
  ``"cos"`` (default) ``1 - cos(v_{n-1}, v_n)``, ``"magnitude"`` ``||v_n - v_{n-1}||_2 / ||v_{n-1}||_2``,
  ``"step"`` ``|sigma_{n+1}-sigma_n| ||v_n - v_{n-1}||_1 / ||x_n||_1``; averaged over runs; ``kappa_0 = +inf``.
* :func:`select_reuse` -- the exact DP of §6.3: choose ``N - K`` reused steps of least total curvature
  with at most ``r_max`` consecutive reuses, at least ``c_min`` computed steps between two reuse runs,
  and protected steps (step 0, the last step with ``force_last``, warm-up, outside a window).
* :func:`fit_gammas` -- the least-squares gamma of the damped extrapolation
  ``v_hat_n = v_c + gamma_n s_n (v_c - v_c')`` (§6.4), clipped to ``[0, 1.5]``.
* :func:`omnicache_schedule` -- all three together: a Schedule (kind ``"omnicache"``) and the gammas.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Any, Iterable, Sequence

import numpy as np

from ..calibration.calibration_run import CalibrationRun, as_runs
from ..errors import InfeasibleBudgetError, ScheduleError
from .schedule import Schedule

EPS = 1e-12
CURVATURES = {"cos": "curvature_cos", "magnitude": "curvature_mag", "step": "curvature_step"}
GAMMA_CLIP = (0.0, 1.5)


def curvature_scores(runs: CalibrationRun | Iterable[CalibrationRun], kind: str = "cos") -> np.ndarray:
    """Mean curvature score per step over the runs; ``kappa_0 = +inf`` (step 0 is never reused)."""
    if kind not in CURVATURES:
        raise ScheduleError(f"unknown curvature kind {kind!r}; expected one of {sorted(CURVATURES)}")
    runs = as_runs(runs)
    kappa = np.mean([np.asarray(r.signal(CURVATURES[kind]), dtype=np.float64) for r in runs], axis=0)
    kappa = kappa.copy()
    kappa[0] = np.inf
    return kappa


def _check_int(value: Any, what: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ScheduleError(f"{what} must be an integer >= {lo}, got {value!r}")
    return int(value)


def reusable_steps(num_steps: int, force_last: bool = True, protected: Iterable[int] = (), warmup: int = 0,
                   window: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean mask of the steps that may be reused (step 0 never; N-1 not with ``force_last``)."""
    ok = np.ones(num_steps, dtype=bool)
    ok[0] = False
    if force_last:
        ok[num_steps - 1] = False
    ok[: max(0, int(warmup))] = False
    for p in protected:
        p = int(p)
        if not 0 <= p < num_steps:
            raise ScheduleError(f"protected step {p} is out of range for {num_steps} steps")
        ok[p] = False
    if window is not None:
        a, b = (int(window[0]), int(window[1]))
        if a > b:
            raise ScheduleError(f"reuse window ({a}, {b}) is empty")
        idx = np.arange(num_steps)
        ok &= (idx >= a) & (idx <= b)
    return ok


def _reuse_dp(cost: np.ndarray, ok: np.ndarray, r_max: int, c_min: int) -> tuple[np.ndarray, np.ndarray]:
    """DP over (step, #reused, run type/length). Returns final costs (U+1, S) and predecessors (N, U+1, S).

    States: index ``l-1`` = computed run of length ``l`` (capped at ``c_min``), ``c_min + l - 1`` = reuse run of
    length ``l`` (<= ``r_max``). A C-target comes from a compute (u unchanged), an R-target from a reuse (u+1).
    """
    n = cost.size
    U = n                                              # u ranges over 0..N-1
    S = c_min + r_max
    inf = np.inf
    cur = np.full((U + 1, S), inf)
    cur[0, 0] = 0.0                                    # step 0 computed: C run of length 1
    pred = np.full((n, U + 1, S), -1, dtype=np.int16)
    uidx = np.arange(U + 1)
    for step in range(1, n):
        new = np.full((U + 1, S), inf)
        pst = pred[step]
        # compute transitions (u unchanged)
        for l in range(1, c_min + 1):                  # target C(l)
            srcs = []
            if l == 1:
                srcs = [c_min + m - 1 for m in range(1, r_max + 1)]        # from any R run
                if c_min == 1:
                    srcs = [0] + srcs                                       # C(1) capped stays C(1)
            else:
                srcs = [l - 2]                                              # C(l-1) -> C(l)
                if l == c_min:
                    srcs.append(c_min - 1)                                  # C(c_min) stays capped
            cand = cur[:, srcs]
            best = np.argmin(cand, axis=1)
            new[:, l - 1] = cand[uidx, best]
            pst[:, l - 1] = np.asarray(srcs)[best]
        if ok[step] and math.isfinite(cost[step]):
            shifted = np.full((U + 1, S), inf)
            shifted[1:] = cur[:-1] + cost[step]         # reuse: u -> u+1
            # target R(1): from C(c_min) always, from shorter C runs only before the first reuse (u_src == 0)
            srcs = list(range(c_min))
            cand = shifted[:, srcs].copy()
            if c_min > 1:
                cand[2:, : c_min - 1] = inf              # u_target >= 2 <=> u_src >= 1: c_min gap needed
            best = np.argmin(cand, axis=1)
            new[:, c_min] = cand[uidx, best]
            pst[:, c_min] = np.asarray(srcs)[best]
            for l in range(2, r_max + 1):               # R(l-1) -> R(l)
                new[:, c_min + l - 1] = shifted[:, c_min + l - 2]
                pst[:, c_min + l - 1] = c_min + l - 2
        cur = new
    return cur, pred


def select_reuse(kappa: Sequence[float], budget: int, r_max: int = 2, c_min: int = 1,
                 protected: Iterable[int] = (), warmup: int = 0, window: tuple[int, int] | None = None,
                 force_last: bool = True) -> list[int]:
    """The reuse set ``R`` (sorted steps), ``|R| = N - K``, of least total curvature under the constraints.

    Raises :class:`InfeasibleBudgetError` naming the smallest feasible budget when no such set exists.
    NaN/inf curvature marks a step that cannot be reused.
    """
    kap = np.asarray(kappa, dtype=np.float64)
    if kap.ndim != 1 or kap.size < 1:
        raise ScheduleError(f"kappa must be a 1-D array of N curvature scores, got shape {kap.shape}")
    n = kap.size
    k = _check_int(budget, "budget", 1)
    r_max = _check_int(r_max, "r_max", 1)
    c_min = _check_int(c_min, "c_min", 1)
    if k >= n:
        return []
    ok = reusable_steps(n, force_last, protected, warmup, window)
    cost = np.where(np.isnan(kap), np.inf, kap)
    if (cost < 0).any():
        raise ScheduleError("curvature scores must be >= 0")
    final, pred = _reuse_dp(cost, ok, r_max, c_min)
    want = n - k
    row = final[want]
    if not np.isfinite(row).any():
        feasible_u = [u for u in range(final.shape[0]) if np.isfinite(final[u]).any()]
        smallest = n - max(feasible_u)
        raise InfeasibleBudgetError(
            f"budget K={k} is infeasible for OmniCache selection over N={n} steps with r_max={r_max}, "
            f"c_min={c_min} and {int((~ok).sum())} protected step(s): at most {max(feasible_u)} steps can be "
            f"reused, so the smallest feasible budget is K={smallest}", smallest_feasible=smallest)
    s = int(np.argmin(row))
    u = want
    reused = []
    for step in range(n - 1, 0, -1):
        prev_s = int(pred[step, u, s])
        if s >= c_min:                                  # this step was reused
            reused.append(step)
            u -= 1
        s = prev_s
    reused.reverse()
    return reused


def reuse_cost(kappa: Sequence[float], reused: Iterable[int]) -> float:
    kap = np.asarray(kappa, dtype=np.float64)
    return float(sum(kap[r] for r in reused))


def satisfies_constraints(reused: Iterable[int], num_steps: int, r_max: int, c_min: int,
                          ok: np.ndarray | None = None) -> bool:
    """Check a reuse set against the §6.3 constraints (used by tests and as a guard)."""
    rs = sorted(set(int(r) for r in reused))
    if ok is not None and any(not ok[r] for r in rs):
        return False
    if any(r <= 0 or r >= num_steps for r in rs):
        return False
    mask = np.zeros(num_steps, dtype=bool)
    mask[rs] = True
    runs, gaps = [], []
    n = 0
    seen_reuse = False
    while n < num_steps:
        m = n
        while m < num_steps and mask[m] == mask[n]:
            m += 1
        if mask[n]:
            runs.append(m - n)
            seen_reuse = True
        elif seen_reuse and m < num_steps:
            gaps.append(m - n)                        # computed run between two reuse runs
        n = m
    return all(r <= r_max for r in runs) and all(g >= c_min for g in gaps)


def brute_force_reuse(kappa: Sequence[float], budget: int, r_max: int, c_min: int,
                      ok: np.ndarray) -> tuple[float, list[int] | None]:
    """Exhaustive search over reuse sets (small N only): (best cost, a best set) -- a test oracle."""
    kap = np.asarray(kappa, dtype=np.float64)
    n = kap.size
    want = n - budget
    cand = [s for s in range(n) if ok[s] and math.isfinite(kap[s])]
    best, best_set = math.inf, None
    for combo in combinations(cand, want) if want >= 0 else []:
        if satisfies_constraints(combo, n, r_max, c_min, ok):
            c = float(sum(kap[list(combo)]))
            if c < best:
                best, best_set = c, list(combo)
    return best, best_set


def fit_gammas(runs: CalibrationRun | Iterable[CalibrationRun], schedule: Schedule, coord: str = "index",
               per_step: bool = True) -> list[float]:
    """Least-squares gamma per reused step (method.md §6.4), over the calibration runs.

    For a reused step ``n`` with last compute ``c`` and previous compute ``c'``:
    ``D_n = s_n (v_c - v_c')``, ``s_n = (n - c)/(c - c')`` (``coord="index"``) or
    ``(sigma_n - sigma_c)/(sigma_c - sigma_c')`` (``"sigma"``);
    ``gamma_n = sum_p <v_n - v_c, D_n> / sum_p <D_n, D_n>`` clipped to [0, 1.5]; 0 at computed steps, where no
    ``c'`` exists, or where ``D_n`` vanishes. ``per_step=False`` fits one gamma for every reused step.
    """
    runs = as_runs(runs)
    if coord not in ("index", "sigma"):
        raise ScheduleError(f"coord must be 'index' or 'sigma', got {coord!r}")
    n = runs[0].num_steps
    if schedule.num_steps != n:
        raise ScheduleError(f"the schedule has {schedule.num_steps} steps, the calibration runs {n}")
    computed = list(schedule.compute_steps)
    gam = [0.0] * n
    nums: dict[int, float] = {}
    dens: dict[int, float] = {}
    scale: dict[int, float] = {}
    for step in range(n):
        if schedule.is_computed(step):
            continue
        c = max(s for s in computed if s <= step)
        prior = [s for s in computed if s < c]
        if not prior:
            continue
        cp = prior[-1]
        num = den = ref = 0.0
        for r in runs:
            if coord == "index":
                sn = (step - c) / (c - cp)
            else:
                sig = r.sigmas.double()
                dsg = float(sig[c] - sig[cp])
                sn = float(sig[step] - sig[c]) / dsg if abs(dsg) > EPS else 0.0
            vc = r.v[c].double()
            dvec = sn * (vc - r.v[cp].double())
            num += float(((r.v[step].double() - vc) * dvec).sum())
            den += float((dvec * dvec).sum())
            ref += float((vc * vc).sum())
        nums[step], dens[step], scale[step] = num, den, ref
    if per_step:
        for step in nums:
            if dens[step] > EPS * max(scale[step], EPS):
                gam[step] = float(np.clip(nums[step] / dens[step], *GAMMA_CLIP))
    elif nums:
        tot_den = sum(dens.values())
        if tot_den > EPS * max(sum(scale.values()), EPS):
            g = float(np.clip(sum(nums.values()) / tot_den, *GAMMA_CLIP))
            for step in nums:
                if dens[step] > EPS * max(scale[step], EPS):
                    gam[step] = g
    return gam


def omnicache_schedule(runs: CalibrationRun | Iterable[CalibrationRun], budget: int, r_max: int = 2,
                       c_min: int = 1, curvature: str = "cos", protected: Iterable[int] = (), warmup: int = 0,
                       window: tuple[int, int] | None = None, force_last: bool = True, fit_gamma: bool = True,
                       gamma_coord: str = "index", per_step_gamma: bool = True) -> tuple[Schedule, list[float]]:
    """OmniCache's schedule at budget K and its gammas (0 everywhere when ``fit_gamma`` is off).

    The gammas are also stored in the schedule's provenance (``"gammas"``) so that a runtime reading the
    schedule file can apply the correction.
    """
    runs = as_runs(runs)
    kappa = curvature_scores(runs, curvature)
    n = kappa.size
    reused = set(select_reuse(kappa, budget, r_max, c_min, protected, warmup, window, force_last))
    steps = tuple(s for s in range(n) if s not in reused)
    prov = {"source": "omnicache", "budget": int(budget), "r_max": r_max, "c_min": c_min, "curvature": curvature,
            "reuse_cost": reuse_cost(kappa, reused) if reused else 0.0}
    if warmup:
        prov["warmup"] = int(warmup)
    if window is not None:
        prov["window"] = [int(window[0]), int(window[1])]
    meta = runs[0].meta
    for key in ("model_family", "model_hash", "sampler", "scheduler", "resolution"):
        if key in meta:
            prov[key] = meta[key]
    sched = Schedule(num_steps=n, compute_steps=steps, kind="omnicache", force_last=force_last,
                     sigmas=tuple(float(s) for s in runs[0].sigmas), provenance=prov)
    gammas = fit_gammas(runs, sched, gamma_coord, per_step_gamma) if fit_gamma else [0.0] * n
    sched = sched.with_provenance(gammas=gammas, gamma_coord=gamma_coord)
    return sched, gammas
