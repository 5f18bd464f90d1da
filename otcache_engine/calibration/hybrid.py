"""Hybrid edge errors (method.md §2.5): local E1 scaled by the downstream amplification of each landing step.

The amplification alpha_j is measured where it is cheap to measure: the global (tail re-run) error of the
gap-2 edge landing at j, divided by its local error, at a few probe steps, and interpolated in between.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .edge_errors import EPS, EdgeJob, check_matrix, global_jobs
from ..errors import CalibrationError


HYBRID_PROBES = 8   # landing steps at which hybrid calibration measures the amplification


def probe_steps(num_steps: int, count: int | None = HYBRID_PROBES) -> tuple[int, ...]:
    """Landing steps ``j`` of the gap-2 probes of hybrid calibration: ``count`` evenly spread over
    ``2 .. N-1`` (every one of them when ``count`` is None or covers them all). The amplification varies
    slowly with ``j`` (it is smoothed anyway), so a few probes measure it for a fraction of the calls."""
    last = num_steps - 1
    if last < 2:
        return ()
    every = tuple(range(2, last + 1))
    if count is None or count >= len(every):
        return every
    if count < 2:
        raise CalibrationError(f"hybrid calibration needs at least 2 probes, got {count}")
    return tuple(sorted({int(round(v)) for v in np.linspace(2, last, count)}))


def hybrid_jobs(num_steps: int, force_last: bool = True, probes: int | None = HYBRID_PROBES) -> list[EdgeJob]:
    """Global tail re-runs of the gap-2 edges ``(j-2 -> j)`` at the probe steps (method.md §2.5); ``probes``
    None re-runs every one of them."""
    if num_steps < 3:
        return []
    at = set(probe_steps(num_steps, probes))
    return [job for job in global_jobs(num_steps, 2, force_last, gaps={2}) if job.j in at]


def moving_median(values: Sequence[float], width: int = 5) -> np.ndarray:
    """Centred moving median (window shrinks at the ends), ignoring NaN; all-NaN windows stay NaN."""
    a = np.asarray(values, dtype=np.float64)
    if width < 1:
        raise CalibrationError(f"smoothing width must be >= 1, got {width}")
    h = width // 2
    out = np.full(a.shape, np.nan)
    for k in range(a.size):
        win = a[max(0, k - h): k + h + 1]
        win = win[~np.isnan(win)]
        if win.size:
            out[k] = np.median(win)
    return out


def hybrid_alpha(local: np.ndarray, global_gap2: np.ndarray | Mapping[int, float], width: int = 5) -> np.ndarray:
    """Per-landing-step amplification ``alpha_j = w_glob(j-2, j) / w_loc(j-2, j)`` (method.md §2.5).

    ``global_gap2`` is a global weight matrix (only its gap-2 entries are read) or ``{j: w_glob(j-2, j)}``,
    measured at every ``j`` or at a few probe steps. Measured at every step, the values are smoothed by a
    moving median of ``width``; probes a few steps apart are each already a local estimate and are used as
    they are. In between, ``log alpha`` is interpolated linearly (constant beyond the ends). Returns an
    array of length N+1 (index j); 1 when nothing was measured."""
    w = check_matrix(local, "local weights")
    n = w.shape[0]
    if isinstance(global_gap2, Mapping):
        glob = {int(j): float(val) for j, val in global_gap2.items()}
    else:
        g = np.asarray(global_gap2, dtype=np.float64)
        if g.shape != w.shape:
            raise CalibrationError(f"global weights have shape {g.shape}, local weights {w.shape}")
        glob = {j: float(g[j - 2, j]) for j in range(2, n + 1)}
    js, values = [], []
    for j in range(2, n + 1):
        gv, lv = glob.get(j), w[j - 2, j]
        if gv is None or not math.isfinite(gv) or not math.isfinite(lv) or lv <= EPS or gv < 0:
            continue
        js.append(j)
        values.append(max(gv / lv, EPS))
    if not js:
        return np.ones(n + 1)
    dense = js == list(range(js[0], js[-1] + 1))
    smooth = moving_median(values, width) if dense else np.asarray(values)
    return np.exp(np.interp(np.arange(n + 1), js, np.log(smooth)))


def hybrid_weights(local: np.ndarray, global_gap2: np.ndarray | Mapping[int, float], width: int = 5) -> np.ndarray:
    """``w_hyb(i, j) = alpha_j * w_loc(i, j)`` (method.md §2.5); forbidden edges stay +inf, gap 1 stays 0."""
    w = check_matrix(local, "local weights")
    alpha = hybrid_alpha(w, global_gap2, width)
    out = w * alpha[None, :]
    out[~np.isfinite(w)] = np.inf
    out[np.isnan(out)] = np.inf
    return out
