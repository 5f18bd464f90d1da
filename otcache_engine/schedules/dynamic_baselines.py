"""Dynamic baseline rules on one recorded (uncached) run, and matching their threshold to a budget (method.md §7).

:func:`teacache_schedule` (§7.2), :func:`fbcache_schedule` (§7.5) and :func:`easycache_replay` (§7.4, a
closed-loop simulation on the recorded x and v, because its indicator depends on the cached trajectory);
:func:`bisect_threshold` finds the threshold whose mean K is closest to a target budget (§7.7). Rules
applied to a recorded run use the signals of the *uncached* trajectory; in a real cached run they would
drift slightly -- that is the approximation every offline budget-matching makes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .baselines import EPS, TEACACHE_FLUX_COEFFICIENTS, _int, _num, _sigmas_of
from ..calibration.calibration_run import CalibrationRun
from ..errors import CalibrationError, ScheduleError
from .schedule import Schedule


def _signal(source: Sequence[float] | CalibrationRun, name: str) -> tuple[np.ndarray, CalibrationRun | None]:
    if isinstance(source, CalibrationRun):
        return np.asarray(source.signal(name), dtype=np.float64), source
    a = np.asarray(source, dtype=np.float64)
    if a.ndim != 1 or a.size < 1:
        raise CalibrationError(f"{name} must be a 1-D array with one value per step, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise CalibrationError(f"{name} contains NaN or infinite values")
    return a, None


def teacache_schedule(signal: Sequence[float] | CalibrationRun, threshold: float,
                      coefficients: Sequence[float] = TEACACHE_FLUX_COEFFICIENTS, force_last: bool = True,
                      absolute: bool = False, window: tuple[float, float] | None = None) -> Schedule:
    """TeaCache's rule (§7.2) on the recorded indicator ``||m_n - m_{n-1}||_1 / ||m_{n-1}||_1``.

    ``A += poly(rel_l1[n])`` each step (``|poly|`` with ``absolute``, the ComfyUI port); skip while
    ``A < threshold``, else compute and reset. Step 0 (and N-1 with ``force_last``, the official rule) is
    always computed. ``window=(start, end)`` (fractions of ``n/(N-1)``) computes every step outside it (the
    ComfyUI variant) [O: index fraction].
    """
    rel, run = _signal(signal, "teacache_rel_l1")
    n = rel.size
    thr = _num(threshold, "threshold")
    poly = np.poly1d(np.asarray(coefficients, dtype=np.float64))
    A = 0.0
    steps = []
    for step in range(n):
        frac = step / (n - 1) if n > 1 else 0.0
        outside = window is not None and not (window[0] <= frac <= window[1])
        if step == 0 or (force_last and step == n - 1) or outside:
            steps.append(step)
            A = 0.0
            continue
        d = float(poly(rel[step]))
        A += abs(d) if absolute else d
        if A < thr:
            continue
        steps.append(step)
        A = 0.0
    prov = {"source": "teacache", "threshold": thr, "coefficients": [float(c) for c in coefficients],
            "absolute": bool(absolute)}
    if window is not None:
        prov["window"] = [float(window[0]), float(window[1])]
    return Schedule(num_steps=n, compute_steps=tuple(steps), kind="teacache", force_last=force_last,
                    sigmas=_sigmas_of(run), provenance=prov)


# --- First-Block Cache (dynamic) ----------------------------------------------------

def fbcache_distances(features: Any) -> np.ndarray:
    """Exact (N, N) matrix ``rel[n, c] = mean|f_n - f_c| / mean|f_c|`` from per-step first-block features."""
    t = torch.as_tensor(features).detach().to("cpu", torch.float64)
    n = t.shape[0]
    flat = t.reshape(n, -1)
    norms = flat.abs().mean(-1).clamp_min(EPS)
    out = np.zeros((n, n))
    for c in range(n):
        out[:, c] = ((flat - flat[c]).abs().mean(-1) / norms[c]).numpy()
    return out


def fbcache_schedule(signal: Sequence[float] | np.ndarray | CalibrationRun, threshold: float = 0.12,
                     start: float = 0.0, end: float = 1.0, max_hits: int | None = None,
                     force_last: bool = False) -> Schedule:
    """First-Block Cache's rule (§7.5) on a recorded first-block signal.

    ``signal``: an (N, N) matrix ``rel[n, c]`` of the first-block change of step ``n`` against step ``c``
    (exact, see :func:`fbcache_distances`), or a 1-D array of the consecutive change vs the previous step
    (``fbcache_rel_l1`` of a run) -- then the change against the last computed step ``c`` is approximated
    by ``sum_{m=c+1}^{n} rel[m]`` [O]. Reuse when the change < ``threshold``, ``start <= n/(N-1) <= end``
    and fewer than ``max_hits`` consecutive reuses; ``f_c`` is refreshed only on compute.
    """
    run = signal if isinstance(signal, CalibrationRun) else None
    if run is not None:
        rel = np.asarray(run.signal("fbcache_rel_l1"), dtype=np.float64)
    else:
        rel = np.asarray(signal, dtype=np.float64)
    if rel.ndim == 2:
        if rel.shape[0] != rel.shape[1]:
            raise CalibrationError(f"the FBCache distance matrix must be (N, N), got {rel.shape}")
    elif rel.ndim != 1:
        raise CalibrationError(f"the FBCache signal must be 1-D (per step) or (N, N), got shape {rel.shape}")
    if rel.size == 0 or not np.isfinite(rel).all():
        raise CalibrationError("the FBCache signal is empty or contains NaN/infinity")
    n = rel.shape[0]
    thr = _num(threshold, "threshold")
    limit = math.inf if max_hits is None or max_hits < 0 else int(max_hits)
    steps = [0]
    c, hits, acc = 0, 0, 0.0
    for step in range(1, n):
        frac = step / (n - 1) if n > 1 else 0.0
        if rel.ndim == 2:
            change = float(rel[step, c])
        else:
            acc += float(rel[step])
            change = acc
        use = change < thr and start <= frac <= end and hits < limit and not (force_last and step == n - 1)
        if use:
            hits += 1
            continue
        steps.append(step)
        c, hits, acc = step, 0, 0.0
    prov = {"source": "fbcache", "threshold": thr, "start": float(start), "end": float(end),
            "signal": "matrix" if rel.ndim == 2 else "consecutive"}
    if max_hits is not None:
        prov["max_hits"] = int(max_hits)
    return Schedule(num_steps=n, compute_steps=tuple(steps), kind="fbcache", force_last=force_last,
                    sigmas=_sigmas_of(run), provenance=prov)


# --- EasyCache (dynamic, closed loop) ------------------------------------------------

def easycache_replay(run: CalibrationRun, threshold: float = 0.025, warmup: int = 5, force_last: bool = True,
                     reuse: str = "transform") -> tuple[Schedule, torch.Tensor]:
    """EasyCache's rule (§7.4) simulated in closed loop on a recorded run.

    The sampler is replayed: a computed step's model output is approximated by the stored ``v_n`` of the
    run; a skipped step returns ``x_hat_n + Delta`` (``reuse="transform"``, R2, ``Delta = v_c - x_hat_c``)
    or ``v_c`` (``"output"``, R0). The indicator accumulates ``k * mean|x_hat_n - x_hat_{n-1}| / mean|v_c|``
    with ``k = mean|v_c - v_c'| / mean|x_hat_c - x_hat_c'|`` between consecutive computed steps; skip while
    it stays below ``threshold``. Returns the schedule and the replayed final latent (float64).
    """
    if reuse not in ("transform", "output"):
        raise ScheduleError(f"reuse must be 'transform' or 'output', got {reuse!r}")
    thr = _num(threshold, "threshold")
    ret = _int(warmup, "warmup", 0)
    n = run.num_steps
    xs, vs = run.x, run.v
    sig = run.sigmas.double()
    x = xs[0].double().clone()
    E = 0.0
    k = None
    x_prev = None
    x_c = v_c = delta = None
    steps = []
    for step in range(n):
        compute = True
        if step < ret or (force_last and step == n - 1):
            E = 0.0
        elif x_prev is not None and v_c is not None and k is not None:
            E += k * float((x - x_prev).abs().mean()) / max(float(v_c.abs().mean()), EPS)
            if E < thr:
                compute = False
            else:
                E = 0.0
        x_prev = x
        if compute:
            out = vs[step].double()
            if v_c is not None:
                k = float((out - v_c).abs().mean()) / max(float((x - x_c).abs().mean()), EPS)
            x_c, v_c = x, out
            delta = out - x
            steps.append(step)
        else:
            out = x + delta if reuse == "transform" else v_c
        x = x + float(sig[step + 1] - sig[step]) * out
    prov = {"source": "easycache", "threshold": thr, "warmup": ret, "reuse": reuse}
    sched = Schedule(num_steps=n, compute_steps=tuple(steps), kind="easycache", force_last=force_last,
                     sigmas=_sigmas_of(run), provenance=prov)
    return sched, x.reshape(run.sample_shape)


def easycache_schedule(run: CalibrationRun, threshold: float = 0.025, warmup: int = 5, force_last: bool = True,
                       reuse: str = "transform") -> Schedule:
    """The schedule of :func:`easycache_replay`."""
    return easycache_replay(run, threshold, warmup, force_last, reuse)[0]


# --- budget matching ------------------------------------------------------------------


@dataclass
class ThresholdMatch:
    """Result of :func:`bisect_threshold`."""

    threshold: float
    mean_budget: float
    target: float
    schedules: list[Schedule] = field(default_factory=list)
    evaluations: list[tuple[float, float]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return abs(self.mean_budget - self.target) < 1e-9


def _mean_budget(value: Any) -> tuple[float, list[Schedule]]:
    if isinstance(value, Schedule):
        return float(value.budget), [value]
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value), []
    items = list(value)
    if not items:
        raise ScheduleError("the rule returned no schedule")
    if all(isinstance(s, Schedule) for s in items):
        return float(np.mean([s.budget for s in items])), items
    if all(isinstance(s, (int, float, np.integer, np.floating)) for s in items):
        return float(np.mean(items)), []
    raise ScheduleError("the rule must return a Schedule, a list of Schedules or a number")


def bisect_threshold(rule: Callable[[float], Any], target_K: float, lo: float = 0.0, hi: float = 1.0,
                     grid: int = 16, iters: int = 40, expand: int = 20) -> ThresholdMatch:
    """The threshold whose mean K (over the schedules ``rule(threshold)`` returns) is closest to ``target_K``.

    K is assumed to fall as the threshold grows (true in practice, not guaranteed by accumulate-and-reset
    rules), so: evaluate a coarse grid on ``[lo, hi]`` (``hi`` doubled up to ``expand`` times while K stays
    above the target), bisect inside the bracket where K crosses the target, and return the best point
    seen (ties: the smaller threshold). Every evaluated point is in ``evaluations``.
    """
    target = _num(target_K, "target_K")
    lo, hi = _num(lo, "lo"), _num(hi, "hi")
    if not hi > lo:
        raise ScheduleError(f"need lo < hi, got lo={lo}, hi={hi}")
    seen: dict[float, tuple[float, list[Schedule]]] = {}

    def f(t: float) -> float:
        if t not in seen:
            seen[t] = _mean_budget(rule(t))
        return seen[t][0]

    for _ in range(max(0, int(expand))):
        if f(hi) <= target:
            break
        hi = lo + 2 * (hi - lo)
    pts = list(np.linspace(lo, hi, max(2, int(grid))))
    vals = [f(float(t)) for t in pts]
    bracket = None
    for a, b, ka, kb in zip(pts, pts[1:], vals, vals[1:]):
        if ka >= target >= kb:
            bracket = (float(a), float(b))
            break
    if bracket is not None:
        a, b = bracket
        for _ in range(max(0, int(iters))):
            if f(a) == target or f(b) == target or b - a <= 1e-9 * max(1.0, abs(b)):
                break
            mid = 0.5 * (a + b)
            if f(mid) >= target:
                a = mid
            else:
                b = mid
    best_t = min(seen, key=lambda t: (abs(seen[t][0] - target), t))
    mean_k, schedules = seen[best_t]
    evals = sorted((t, v[0]) for t, v in seen.items())
    return ThresholdMatch(threshold=best_t, mean_budget=mean_k, target=target, schedules=schedules,
                          evaluations=evals)
