"""Static baseline schedules (method.md §7): :func:`uniform_k` (budget-matched uniform, §7.1), :func:`every_k`,
:func:`magcache_schedule` (the MagCache rule replayed on its calibrated ratios, §7.3 -- prompt-independent).

The dynamic rules (TeaCache, FBCache, EasyCache on a recorded run) and the threshold matching to a budget
are in ``dynamic_baselines``. Each returns a :class:`Schedule` of the matching kind.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..calibration.calibration_run import CalibrationRun, magcache_ratios_from_norms
from ..errors import CalibrationError, InfeasibleBudgetError, ScheduleError
from .schedule import Schedule

EPS = 1e-12

#: TeaCache's FLUX rescaling polynomial, highest power first (numpy.poly1d), method.md §7.2.
TEACACHE_FLUX_COEFFICIENTS = (498.651651, -283.781631, 55.8554382, -3.82021401, 0.264230861)


def _int(value: Any, what: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ScheduleError(f"{what} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)):
        raise ScheduleError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _sigmas_of(run: CalibrationRun | None) -> tuple[float, ...] | None:
    return tuple(float(s) for s in run.sigmas) if run is not None else None


# --- uniform ---------------------------------------------------------------------

def _round_half_up(num: int, den: int) -> int:
    """floor(num/den + 1/2) exactly, for non-negative integers (monotone, so distinct stays distinct)."""
    return (2 * num + den) // (2 * den)


def uniform_k(num_steps: int, budget: int, force_last: bool = True, warmup: int = 0) -> Schedule:
    """Uniform-K (§7.1): ``s_k = round((k-1)(N-1)/(K-1))``, k = 1..K (distinct for K <= N).

    ``warmup=w`` computes ``0 .. w-1`` and spreads the rest uniformly over ``[w-1, N-1]``. Without
    ``force_last`` the K points are spread over ``[0, N)`` as ``round((k-1) N / K)`` (the sink at N).
    """
    n = _int(num_steps, "num_steps", 1)
    k = _int(budget, "budget", 1)
    w = _int(warmup, "warmup", 0)
    prov = {"source": "uniform", "budget": k}
    if w:
        prov["warmup"] = w
    if k >= n:
        return Schedule.full(n, kind="uniform", force_last=force_last, provenance=prov)
    if force_last and k < 2 and n > 1:
        raise InfeasibleBudgetError(f"budget K={k} cannot compute both step 0 and the last step of N={n}; "
                                    f"the smallest feasible budget is K=2", smallest_feasible=2)
    if w >= k:
        raise ScheduleError(f"warmup={w} leaves no budget for the rest (K={k}); use warmup < K")
    head = list(range(max(w - 1, 0)))
    start = max(w - 1, 0)
    m = k - len(head)                                   # points on [start, N-1] (or [start, N))
    span = (n - 1 - start) if force_last else (n - start)
    if force_last:
        pts = [start + _round_half_up(t * span, m - 1) for t in range(m)] if m > 1 else [start]
    else:
        pts = [start + _round_half_up(t * span, m) for t in range(m)]
    steps = tuple(head + pts)
    return Schedule(num_steps=n, compute_steps=steps, kind="uniform", force_last=force_last, provenance=prov)


def every_k(num_steps: int, k: int, force_last: bool = True) -> Schedule:
    """Compute iff ``n mod k == 0`` (plus ``N-1`` with ``force_last``)."""
    n = _int(num_steps, "num_steps", 1)
    k = _int(k, "k", 1)
    steps = set(range(0, n, k))
    if force_last:
        steps.add(n - 1)
    return Schedule(num_steps=n, compute_steps=tuple(sorted(steps)), kind="uniform", force_last=force_last,
                    provenance={"source": "every_k", "interval": k})


# --- MagCache (static) --------------------------------------------------------------

def nearest_interp(values: Sequence[float], target_length: int) -> np.ndarray:
    """MagCache's nearest interpolation of a calibrated table to another step count
    (``values[round(n (N_cal-1)/(N-1))]``; numpy's round-half-even, as the source)."""
    src = np.asarray(values, dtype=np.float64)
    if target_length == 1:
        return src[-1:].copy()
    scale = (src.size - 1) / (target_length - 1)
    idx = np.round(np.arange(target_length) * scale).astype(int)
    return src[idx]


def magcache_ratios(run: CalibrationRun, stream: str | None = None) -> np.ndarray:
    """gamma_n of a calibration run: its recorded ``magcache_ratio`` signal, else from its residual norms."""
    if stream is None and "magcache_ratio" in run.signals:
        return np.asarray(run.signals["magcache_ratio"], dtype=np.float64)
    if not run.residual_norms:
        raise CalibrationError("this calibration run has neither a 'magcache_ratio' signal nor residual norms")
    if stream is None:
        stream = sorted(run.residual_norms)[0]
    if stream not in run.residual_norms:
        raise CalibrationError(f"no residual norms for stream {stream!r} (have {sorted(run.residual_norms)})")
    return magcache_ratios_from_norms(run.residual_norms[stream])


def magcache_schedule(ratios: Sequence[float] | CalibrationRun, num_steps: int | None = None,
                      threshold: float = 0.24, k_max: int = 5, retention: float = 0.1, quirk: bool = False,
                      quirk_index: int = 11, quirk_ref_steps: int = 28) -> Schedule:
    """Replay MagCache's rule (§7.3) on calibrated magnitude ratios; the mask is prompt-independent.

    ``ratios``: the table gamma_0..gamma_{N_cal-1} (gamma_0 = 1) or a calibration run. With ``num_steps``
    different from the table length the table is nearest-interpolated. ``quirk`` reproduces the FLUX
    script's forced compute at the step mapped to index ``quirk_index`` of a ``quirk_ref_steps`` grid.
    The last step is not forced (``force_last=False``).
    """
    sigmas = None
    if isinstance(ratios, CalibrationRun):
        sigmas = _sigmas_of(ratios)
        ratios = magcache_ratios(ratios)
    table = np.asarray(ratios, dtype=np.float64)
    if table.ndim != 1 or table.size < 1 or not np.isfinite(table).all():
        raise CalibrationError("MagCache ratios must be a 1-D array of finite numbers")
    n = table.size if num_steps is None else _int(num_steps, "num_steps", 1)
    if n != table.size:
        table = nearest_interp(table, n)
        sigmas = None
    thr = _num(threshold, "threshold")
    k_max = _int(k_max, "k_max", 0)
    ret = _num(retention, "retention")
    keep = int(math.floor(ret * n + 0.5))
    R, E, c = 1.0, 0.0, 0
    steps = []
    for step in range(n):
        if step < keep:
            steps.append(step)
            continue
        R *= float(table[step])
        c += 1
        E += abs(1.0 - R)
        forced = quirk and n > 1 and int(np.round(step * ((quirk_ref_steps - 1) / (n - 1)))) == quirk_index
        if E <= thr and c <= k_max and not forced and step > 0:
            continue                                          # skip: reuse the cached residual
        steps.append(step)
        R, E, c = 1.0, 0.0, 0
    prov = {"source": "magcache", "threshold": thr, "k_max": k_max, "retention": ret, "quirk": bool(quirk)}
    return Schedule(num_steps=n, compute_steps=tuple(steps), kind="magcache", force_last=False,
                    sigmas=sigmas, provenance=prov)
