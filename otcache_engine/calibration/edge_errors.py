"""Edge weights of the step DAG (method.md §2.2-2.7).

An edge ``(i -> j)`` means: steps ``i`` and ``j`` are computed, the steps strictly
between them reuse the cache written at ``i``. Weight matrices are numpy arrays of
shape ``(N, N+1)``: ``w[i, j]`` for ``0 <= i < j <= N``, where column ``N`` is the
virtual sink used when the last step is not forced (edge ``(i -> N)`` = reuse ``i``
for ``i+1 .. N-1``). Entries of edges that are not allowed (``j <= i``, ``j - i > L``,
the sink column when ``force_last``) are ``+inf``; gap-1 edges are exactly ``0``.
No entry is ever NaN (denominators are guarded with ``1e-12``).

Weights that need no model call: E1 (re-entry drift, exact for output reuse R0)
and E2 (accumulated output change). Weights that need model calls are split into
*jobs* a host runs (``global_jobs``, ``lookahead_jobs``, and ``hybrid.hybrid_jobs``:
which edges, from which starting latent, how many calls) and *assembly* functions
that turn the host's results into a matrix (``global_weights``, ``lookahead_weights``,
``hybrid.hybrid_weights``). The zero-call replay the jobs start from is ``replay``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .calibration_run import CalibrationRun, as_runs
from ..errors import CalibrationError, ScheduleError
from .replay import EPS, final_error, landing_latent, segment_mask

_CHUNK_BYTES = 1 << 26                   # per-chunk working set of the tensor sweeps (64 MiB)


# --- structure -----------------------------------------------------------------

def _check_gap(max_gap: Any, num_steps: int) -> int:
    if isinstance(max_gap, bool) or not isinstance(max_gap, (int, np.integer)) or max_gap < 1:
        raise ScheduleError(f"max_gap must be a positive integer, got {max_gap!r}")
    return int(min(int(max_gap), num_steps))


def allowed_edges(num_steps: int, max_gap: int, force_last: bool = True) -> np.ndarray:
    """Boolean (N, N+1) matrix of the DAG's edges: ``1 <= j - i <= L``, sink column only without force_last."""
    n = int(num_steps)
    if n < 1:
        raise ScheduleError(f"num_steps must be >= 1, got {num_steps!r}")
    L = _check_gap(max_gap, n)
    i = np.arange(n)[:, None]
    j = np.arange(n + 1)[None, :]
    ok = (j > i) & (j - i <= L)
    if force_last:
        ok[:, n] = False
    return ok


def empty_weights(num_steps: int, max_gap: int, force_last: bool = True) -> np.ndarray:
    """(N, N+1) matrix: 0 on allowed edges, +inf elsewhere."""
    ok = allowed_edges(num_steps, max_gap, force_last)
    return np.where(ok, 0.0, np.inf)


def _finish(num: np.ndarray, ok: np.ndarray) -> np.ndarray:
    w = np.where(ok, num, np.inf)
    w[np.isnan(w)] = np.inf
    gap1 = np.arange(num.shape[0])
    w[gap1, gap1 + 1] = np.where(ok[gap1, gap1 + 1], 0.0, np.inf)
    return w


def _chunks(total: int, rows: int) -> Iterable[slice]:
    size = max(1024, _CHUNK_BYTES // (8 * max(rows, 1)))
    for a in range(0, total, size):
        yield slice(a, min(total, a + size))


def _mean_abs(t: torch.Tensor) -> torch.Tensor:
    return t.double().abs().mean(dim=-1)


# --- local weights (zero model calls) ------------------------------------------

def e1_weights(run: CalibrationRun, max_gap: int, force_last: bool = True, relative: bool = True) -> np.ndarray:
    """E1 re-entry drift for output reuse (R0), method.md §2.3.

    ``delta_ij = x_hat_j - x_j = sum_{n=i+1}^{j-1} (sigma_{n+1} - sigma_n)(v_i - v_n)``, computed with the
    prefix sums ``A_j = sum_{n<j} (sigma_{n+1}-sigma_n) v_n``:
    ``delta_ij = (sigma_j - sigma_{i+1}) v_i - (A_j - A_{i+1})``.
    Weight ``||delta_ij||_1 / ||x_j||_1`` (relative, default) or ``||delta_ij||_1``; ``||.||_1`` = mean |.|.
    Tail edges ``(i -> N)`` (``force_last=False``) use ``j = N``: their plain E1 *is* the exact final error.
    """
    n = run.num_steps
    ok = allowed_edges(n, max_gap, force_last)
    L = _check_gap(max_gap, n)
    sig = run.sigmas.double()
    ds = (sig[1:] - sig[:-1])[:, None]
    x, v = run.x, run.v
    d = v.shape[1]
    acc = np.zeros((n, n + 1))
    jmax = n - 1 if force_last else n
    for sl in _chunks(d, n + 1):
        vc = v[:, sl].double()
        a = torch.zeros((n + 1, vc.shape[1]), dtype=torch.float64)
        torch.cumsum(ds * vc, dim=0, out=a[1:])
        for g in range(2, L + 1):
            m = jmax - g + 1                                       # edges (i, i+g), i = 0..m-1
            if m <= 0:
                continue
            coef = (sig[g:g + m] - sig[1:1 + m])[:, None]          # sigma_j - sigma_{i+1}
            delta = torch.sub(a[1:1 + m], a[g:g + m])              # -(A_j - A_{i+1})
            delta.addcmul_(coef, vc[:m]).abs_()
            i = np.arange(m)
            acc[i, i + g] += delta.sum(dim=1).numpy()
    num = acc / d
    if relative:
        xn = _mean_abs(x).numpy()                                  # ||x_j||_1, j = 0..N
        num = num / np.maximum(xn, EPS)[None, :]
    return _finish(num, ok)


def e2_weights(run: CalibrationRun, max_gap: int, force_last: bool = True) -> np.ndarray:
    """E2 accumulated output change (TeaCache-like, sigma-free), method.md §2.3:
    ``w_ij = sum_{n=i+1}^{j-1} ||v_n - v_i||_1 / ||v_i||_1`` (tail edges: up to ``n = N-1``)."""
    n = run.num_steps
    ok = allowed_edges(n, max_gap, force_last)
    L = _check_gap(max_gap, n)
    v = run.v
    d = v.shape[1]
    diff = np.zeros((n, n))                                        # diff[i, m] = sum |v_m - v_i|, 0 < m - i < L
    for sl in _chunks(d, 2 * n):
        vc = v[:, sl].double()
        for h in range(1, L):
            m = n - h
            if m <= 0:
                continue
            i = np.arange(m)
            diff[i, i + h] += torch.sub(vc[h:], vc[:m]).abs_().sum(dim=1).numpy()
    rel = diff / d / np.maximum(_mean_abs(v).numpy(), EPS)[:, None]
    cum = np.cumsum(rel, axis=1)                                   # cum[i, m] = sum_{k<=m} rel[i, k]
    num = np.zeros((n, n + 1))
    num[:, 1:] = cum                                               # num[i, j] = sum_{m<j} rel[i, m] = sum_{m=i+1}^{j-1}
    return _finish(num, ok)


def local_weights(runs: CalibrationRun | Iterable[CalibrationRun], max_gap: int, kind: str = "E1",
                  force_last: bool = True, relative: bool = True, normalize: str | None = None,
                  reduce: str | float = "mean") -> np.ndarray:
    """E1 or E2 weights over one or several runs, combined by :func:`combine_weights`."""
    runs = as_runs(runs)
    k = kind.upper()
    if k == "E1":
        mats = [e1_weights(r, max_gap, force_last, relative) for r in runs]
    elif k == "E2":
        mats = [e2_weights(r, max_gap, force_last) for r in runs]
    else:
        raise CalibrationError(f"unknown local edge error {kind!r}; expected 'E1' or 'E2'")
    return combine_weights(mats, normalize=normalize, reduce=reduce)


def _median_scale(w: np.ndarray) -> float:
    vals = w[np.isfinite(w) & (w > 0)]
    if vals.size == 0:
        return 1.0
    m = float(np.median(vals))
    return m if m > EPS else 1.0


def combine_weights(mats: Sequence[np.ndarray], normalize: str | None = None,
                    reduce: str | float = "mean") -> np.ndarray:
    """Combine per-run weight matrices (same shape) into one.

    ``normalize="median"`` divides each run's matrix by the median of its positive finite entries first
    (pairs are on different scales). ``reduce``: ``"mean"`` (default), ``"median"``, ``"max"`` or a quantile in
    (0, 1) (robust upper-quantile variant). An edge forbidden (+inf) in any run stays forbidden.
    """
    mats = [np.asarray(m, dtype=np.float64) for m in mats]
    if not mats:
        raise CalibrationError("no weight matrices to combine")
    shape = mats[0].shape
    for m in mats:
        if m.shape != shape or m.ndim != 2:
            raise CalibrationError(f"weight matrices must all have the same 2-D shape, got {shape} and {m.shape}")
    if normalize not in (None, "none", "median"):
        raise CalibrationError(f"normalize must be None or 'median', got {normalize!r}")
    stack = np.stack([np.where(np.isnan(m), np.inf, m) for m in mats])
    if normalize == "median":
        stack = np.stack([m / _median_scale(m) for m in stack])
    forbidden = ~np.isfinite(stack).all(axis=0)
    fin = np.where(np.isfinite(stack), stack, 0.0)
    if reduce == "mean":
        out = fin.mean(axis=0)
    elif reduce == "median":
        out = np.median(fin, axis=0)
    elif reduce == "max":
        out = fin.max(axis=0)
    elif isinstance(reduce, (float, int)) and not isinstance(reduce, bool) and 0.0 < float(reduce) < 1.0:
        out = np.quantile(fin, float(reduce), axis=0)
    else:
        raise CalibrationError(f"reduce must be 'mean', 'median', 'max' or a quantile in (0, 1), got {reduce!r}")
    out[forbidden] = np.inf
    return out


# --- global (LeMiCa) and look-ahead weights ----------------------------------

@dataclass(frozen=True)
class EdgeJob:
    """One edge whose weight needs model calls.

    The host restores the landing latent ``x_hat_j`` (:func:`landing_latent`, or it replays steps
    ``resume_step .. j-1`` itself from ``x_{i+1}`` of the stored run with its own reuse operator, e.g. R1)
    and runs ``model_calls`` model steps from step ``j``: all of ``j .. N-1`` for a global edge (result:
    the final latent), one call at ``j`` for a look-ahead edge (result: the model output at ``x_hat_j``).
    """

    i: int
    j: int
    num_steps: int
    model_calls: int

    @property
    def resume_step(self) -> int:
        """The step whose input ``x_{i+1}`` of the stored run starts the reused segment."""
        return self.i + 1

    @property
    def gap(self) -> int:
        return self.j - self.i

    @property
    def edge(self) -> tuple[int, int]:
        return (self.i, self.j)

    def start_state(self, run: CalibrationRun, reuse: str = "output") -> tuple[int, torch.Tensor]:
        """(j, x_hat_j): the step and latent the host's model calls start from."""
        return self.j, landing_latent(run, self.i, self.j, reuse)


def _caching_edges(num_steps: int, max_gap: int, force_last: bool, gaps: Iterable[int] | None,
                   include_sink: bool) -> list[tuple[int, int]]:
    ok = allowed_edges(num_steps, max_gap, force_last)
    want = None if gaps is None else {int(g) for g in gaps}
    edges = []
    jmax = num_steps if (include_sink and not force_last) else num_steps - 1
    for j in range(2, jmax + 1):
        for i in range(0, j - 1):
            if ok[i, j] and (want is None or j - i in want):
                edges.append((i, j))
    return edges


def global_jobs(num_steps: int, max_gap: int, force_last: bool = True,
                gaps: Iterable[int] | None = None) -> list[EdgeJob]:
    """The tail re-runs of LeMiCa's global edge error (method.md §2.4), sorted by landing step ``j``
    (jobs sharing ``j`` can be batched). Edges to the sink cost no call and are not listed: their exact
    final latent comes from the replay. ``gaps`` restricts the edge lengths (hybrid: ``{2}``)."""
    return [EdgeJob(i, j, num_steps, num_steps - j)
            for i, j in _caching_edges(num_steps, max_gap, force_last, gaps, include_sink=False)]


def lookahead_jobs(num_steps: int, max_gap: int, force_last: bool = True) -> list[EdgeJob]:
    """One model call per caching edge at its landing step (method.md §2.4); sink edges are free."""
    return [EdgeJob(i, j, num_steps, 1)
            for i, j in _caching_edges(num_steps, max_gap, force_last, None, include_sink=False)]


def jobs_by_landing(jobs: Iterable[EdgeJob]) -> dict[int, list[EdgeJob]]:
    """Group jobs by landing step ``j`` (one batch per ``j``)."""
    out: dict[int, list[EdgeJob]] = {}
    for job in jobs:
        out.setdefault(job.j, []).append(job)
    return dict(sorted(out.items()))


def total_model_calls(jobs: Iterable[EdgeJob]) -> int:
    return sum(job.model_calls for job in jobs)


def _result_value(value: Any, ref: torch.Tensor, what: str) -> torch.Tensor | float:
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        f = float(value)
        if not math.isfinite(f) or f < 0:
            raise CalibrationError(f"{what}: the error must be a finite number >= 0, got {value!r}")
        return f
    try:
        t = torch.as_tensor(value).detach().to("cpu", torch.float64)
    except Exception:  # noqa: BLE001
        raise CalibrationError(f"{what}: expected a latent tensor or a number, got {type(value).__name__}") from None
    if t.numel() != ref.numel():
        raise CalibrationError(f"{what}: expected a tensor with {ref.numel()} elements (shape "
                               f"{tuple(ref.shape)}), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise CalibrationError(f"{what}: the result contains NaN or infinity")
    return t.reshape(ref.shape)


def _check_results(results: Mapping[Any, Any]) -> dict[tuple[int, int], Any]:
    if not isinstance(results, Mapping):
        raise CalibrationError("results must be a dict {(i, j): value}")
    out = {}
    for key, value in results.items():
        try:
            i, j = (int(key[0]), int(key[1]))
        except Exception:  # noqa: BLE001
            raise CalibrationError(f"result keys must be (i, j) edges, got {key!r}") from None
        out[(i, j)] = value
    return out


def global_weights(run: CalibrationRun, results: Mapping[Any, Any], max_gap: int, force_last: bool = True,
                   relative: bool = False, allow_missing: bool = False, reuse: str = "output") -> np.ndarray:
    """Assemble LeMiCa's global edge errors from a host's tail re-runs (method.md §2.4).

    ``results[(i, j)]`` is the final latent ``x_N^{(ij)}`` of the run that caches only ``i -> j`` (any
    array with the latent's elements), or the already computed error ``mean|x_N^{(ij)} - x_N|``.
    Weight: ``mean|x_N^{(ij)} - x_N|`` (``/ ||x_N||_1`` when ``relative``). Sink edges are filled from the
    zero-call replay. Missing edges raise :class:`CalibrationError` unless ``allow_missing`` (then +inf).
    """
    xn = run.latents[-1].double()
    scale = max(float(xn.abs().mean()), EPS) if relative else 1.0

    def error(i: int, j: int, value: Any) -> float:
        val = _result_value(value, xn, f"result for edge ({i} -> {j})")
        return (val if isinstance(val, float) else float((val - xn).abs().mean())) / scale

    return _assemble(run, results, max_gap, force_last, reuse, scale, error, allow_missing,
                     "global edge result(s)", "global_jobs")


def lookahead_weights(run: CalibrationRun, results: Mapping[Any, Any], max_gap: int, force_last: bool = True,
                      allow_missing: bool = False, reuse: str = "output") -> np.ndarray:
    """Assemble look-ahead errors (method.md §2.4): ``results[(i, j)] = f(x_hat_j, sigma_j)``, weight
    ``||f - v_j||_1 / ||v_j||_1``. Sink edges have no next output; they get the relative E1 (exact final
    error / ||x_N||_1) [O]."""
    xn_scale = max(float(run.latents[-1].double().abs().mean()), EPS)

    def error(i: int, j: int, value: Any) -> float:
        vj = run.outputs[j].double()
        val = _result_value(value, vj, f"result for edge ({i} -> {j})")
        if isinstance(val, float):
            return val
        return float((val - vj).abs().mean()) / max(float(vj.abs().mean()), EPS)

    return _assemble(run, results, max_gap, force_last, reuse, xn_scale, error, allow_missing,
                     "look-ahead result(s)", "lookahead_jobs")


def _assemble(run: CalibrationRun, results: Mapping[Any, Any], max_gap: int, force_last: bool, reuse: str,
              sink_scale: float, error: Callable[[int, int, Any], float], allow_missing: bool, what: str,
              jobs: str) -> np.ndarray:
    """The weight matrix from per-edge host results; sink edges come from the zero-call replay."""
    n = run.num_steps
    ok = allowed_edges(n, max_gap, force_last)
    res = _check_results(results)
    num = np.zeros((n, n + 1))
    missing = []
    for i, j in _caching_edges(n, max_gap, force_last, None, include_sink=True):
        if j == n:
            num[i, j] = final_error(run, segment_mask(n, i, j), reuse) / sink_scale
        elif (i, j) in res:
            num[i, j] = error(i, j, res[(i, j)])
        else:
            missing.append((i, j))
            num[i, j] = np.inf
    if missing and not allow_missing:
        raise CalibrationError(f"{len(missing)} {what} missing, e.g. {missing[:3]}; run every job "
                               f"of {jobs}() or pass allow_missing=True")
    return _finish(num, ok)


def check_matrix(w: Any, what: str) -> np.ndarray:
    try:
        a = np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{what} must be a numeric (N, N+1) matrix") from None
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != a.shape[0] + 1:
        raise CalibrationError(f"{what} must be an (N, N+1) matrix, got shape {a.shape}")
    return a
