"""What one uncached sampling run records (its file format: ``calibration_io``).

A :class:`CalibrationRun` holds the per-step arrays of one full (uncached) run
(method.md §2.1): the sigma grid ``sigma_0 .. sigma_N``, the latents
``x_0 .. x_N`` (``x_n`` is the input of step ``n``, ``x_N`` the final latent),
the model outputs ``v_0 .. v_{N-1}`` after CFG, optional per-stream residual
norms, optional per-step scalar signals and a JSON metadata dict. Everything
downstream (edge weights, OmniCache, baselines, replays) is computed from it
without a model call.

Tensors are kept as float32 CPU torch tensors (the sigma grid as float64, exactly as
given).

Conventions
-----------
* ``||a||_1`` is the *mean* absolute value over all elements (as in every
  source implementation: ``(a - b).abs().mean()``).
* Signals are arrays of length N indexed by step. Signals defined against the
  previous step (relative changes, ratios) hold a neutral value at step 0
  (0 for changes, 1 for ratios); they must be finite.
* Residual norms (``residual_norms[stream]``) have shape (N, ...) -- typically
  (N, tokens): the per-token L2 norm of the block-stack residual of a stream;
  MagCache's ratio is ``mean_tokens(||r_n|| / ||r_{n-1}||)``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import CalibrationError

FORMAT = "otcache.calibration"
VERSION = 1
EPS = 1e-12

#: Scalar per-step signals this engine knows (others are accepted and kept).
KNOWN_SIGNALS = (
    "teacache_rel_l1",      # ||m_n - m_{n-1}||_1 / ||m_{n-1}||_1 of TeaCache's modulated block-0 input
    "fbcache_rel_l1",       # first-block output (or residual) rel-L1 vs the previous step
    "magcache_ratio",       # mean_tokens(||r_n||_2 / ||r_{n-1}||_2), 1 at step 0
    "magcache_std",         # its std over tokens
    "magcache_cos",         # mean cosine distance of r_n and r_{n-1}
    "easycache_k",          # ||v_n - v_{n-1}||_1 / ||x_n - x_{n-1}||_1
    "output_rel_l1",        # ||v_n - v_{n-1}||_1 / ||v_{n-1}||_1
    "curvature_cos",        # 1 - cos(v_{n-1}, v_n)
    "curvature_mag",        # ||v_n - v_{n-1}||_2 / ||v_{n-1}||_2
    "curvature_step",       # |sigma_{n+1} - sigma_n| * ||v_n - v_{n-1}||_1 / ||x_n||_1
    "step_time",            # wall time of the step in seconds
)

#: Metadata keys with a fixed meaning (others are kept as they are).
META_KEYS = ("model_family", "model_hash", "sampler", "scheduler", "steps", "cfg", "seed", "resolution",
             "prompt_id", "created")

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _as_tensor(value: Any, what: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        value = np.array(value)  # torch warns on read-only numpy buffers
    try:
        t = torch.as_tensor(value) if not isinstance(value, torch.Tensor) else value
    except Exception as e:  # noqa: BLE001 - any conversion failure is a user error here
        raise CalibrationError(f"{what} is not an array of numbers ({type(value).__name__}: {e})") from None
    if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or t.dtype in (
            torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise CalibrationError(f"{what} must hold real numbers, got dtype {t.dtype}")
    return t.detach().to(device="cpu", dtype=dtype).contiguous()


def _check_finite(t: torch.Tensor, what: str) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise CalibrationError(f"{what} contains {bad} NaN or infinite value(s)")


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
        raise CalibrationError(f"{what} name {name!r} must be a non-empty string of letters, digits, '_' or '-'")
    return name


def check_json(meta: Any) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise CalibrationError(f"meta must be a dict, got {type(meta).__name__}")
    out = {}
    for k, v in meta.items():
        if not isinstance(k, str):
            raise CalibrationError(f"meta keys must be strings, got {k!r}")
        out[k] = v
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CalibrationError(f"meta must be JSON-serialisable without NaN ({e})") from None
    return out


@dataclass(frozen=True, eq=False)
class CalibrationRun:
    """The recorded arrays of one uncached run (method.md §2.1); validated on construction.

    ``sigmas``: (N+1,) float64, non-increasing, sigma_0 > sigma_N >= 0.
    ``latents``: (N+1, *shape), x_0 (initial noise) .. x_N (final latent).
    ``outputs``: (N, *shape), v_0 .. v_{N-1} (model outputs after CFG).
    ``residual_norms``: {stream: (N, ...)} optional per-stream residual norms.
    ``signals``: {name: (N,)} optional per-step scalars (see ``KNOWN_SIGNALS``).
    ``meta``: JSON dict (model_family, model_hash, sampler, scheduler, steps, cfg, seed, resolution, ...).
    """

    sigmas: torch.Tensor
    latents: torch.Tensor
    outputs: torch.Tensor
    residual_norms: Mapping[str, torch.Tensor] = field(default_factory=dict)
    signals: Mapping[str, np.ndarray] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sig = _checked_sigmas(self.sigmas)
        n = sig.numel() - 1
        lat, out = _checked_trajectory(self.latents, self.outputs, n)
        object.__setattr__(self, "sigmas", sig)
        object.__setattr__(self, "latents", lat)
        object.__setattr__(self, "outputs", out)
        object.__setattr__(self, "residual_norms", _checked_norms(self.residual_norms, n))
        object.__setattr__(self, "signals", _checked_signals(self.signals, n))
        object.__setattr__(self, "meta", _checked_meta(self.meta, n))

    # --- views -------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """N, the number of sampling steps."""
        return int(self.sigmas.numel()) - 1

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape[1:])

    @property
    def x(self) -> torch.Tensor:
        """x_0..x_N flattened to (N+1, D)."""
        return self.latents.reshape(self.num_steps + 1, -1)

    @property
    def v(self) -> torch.Tensor:
        """v_0..v_{N-1} flattened to (N, D)."""
        return self.outputs.reshape(self.num_steps, -1)

    @property
    def final_latent(self) -> torch.Tensor:
        return self.latents[-1]

    def signal(self, name: str) -> np.ndarray:
        """A recorded or derivable scalar signal; CalibrationError when neither."""
        if name in self.signals:
            return self.signals[name]
        derived = derived_signals(self)
        if name in derived:
            return derived[name]
        if name == "magcache_ratio" and self.residual_norms:
            return magcache_ratios_from_norms(next(iter(self.residual_norms.values())))
        raise CalibrationError(
            f"this calibration run has no signal {name!r} (recorded: {sorted(self.signals) or 'none'}; "
            f"derivable from x and v: {sorted(derived)})")

    def with_signals(self, **signals: Any) -> "CalibrationRun":
        merged = dict(self.signals)
        merged.update(signals)
        return replace(self, signals=merged)

    def with_derived_signals(self, overwrite: bool = False) -> "CalibrationRun":
        """A copy with every signal derivable from x and v added (recorded ones win unless ``overwrite``)."""
        derived = derived_signals(self)
        merged = {**self.signals, **derived} if overwrite else {**derived, **self.signals}
        return replace(self, signals=merged)

    def check_euler_consistency(self, rtol: float = 1e-3) -> float:
        """Relative max deviation of x_{n+1} from x_n + (sigma_{n+1}-sigma_n) v_n (diagnostic)."""
        x = self.x.double()
        v = self.v.double()
        ds = (self.sigmas[1:] - self.sigmas[:-1]).double()[:, None]
        err = (x[1:] - x[:-1] - ds * v).abs().max().item()
        scale = max(x.abs().max().item(), EPS)
        return err / scale


# --- validation (one function per recorded field) ------------------------------------

def _checked_sigmas(value: Any) -> torch.Tensor:
    sig = _as_tensor(value, "sigmas", torch.float64)
    if sig.ndim != 1 or sig.numel() < 2:
        raise CalibrationError(f"sigmas must be a 1-D array of N+1 >= 2 values, got shape {tuple(sig.shape)}")
    _check_finite(sig, "sigmas")
    if bool((sig < 0).any()):
        raise CalibrationError("sigmas must be non-negative")
    if bool((sig[1:] > sig[:-1]).any()):
        raise CalibrationError("sigmas must be non-increasing (from noise to data)")
    if not sig[0] > sig[-1]:
        raise CalibrationError("sigmas must decrease from sigma_0 to sigma_N")
    return sig


def _checked_trajectory(latents: Any, outputs: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    lat, out = _as_tensor(latents, "latents"), _as_tensor(outputs, "outputs")
    if lat.ndim < 1 or lat.shape[0] != n + 1:
        raise CalibrationError(
            f"latents must have N+1 = {n + 1} entries (x_0..x_N) along the first axis, got shape {tuple(lat.shape)}")
    if out.ndim < 1 or out.shape[0] != n:
        raise CalibrationError(
            f"outputs must have N = {n} entries (v_0..v_(N-1)) along the first axis, got shape {tuple(out.shape)}")
    if lat.shape[1:] != out.shape[1:]:
        raise CalibrationError(
            f"latents and outputs must have the same per-step shape, got {tuple(lat.shape[1:])} "
            f"and {tuple(out.shape[1:])}")
    if lat[0].numel() == 0:
        raise CalibrationError("latents are empty")
    _check_finite(lat, "latents")
    _check_finite(out, "outputs")
    return lat, out


def _checked_norms(value: Any, n: int) -> dict[str, torch.Tensor]:
    if value is not None and not isinstance(value, Mapping):
        raise CalibrationError("residual_norms must be a dict {stream: (N, ...) array}")
    norms: dict[str, torch.Tensor] = {}
    for name, item in dict(value or {}).items():
        check_name(name, "residual stream")
        t = _as_tensor(item, f"residual_norms[{name!r}]")
        if t.ndim < 1 or t.shape[0] != n:
            raise CalibrationError(
                f"residual_norms[{name!r}] must have N = {n} entries along the first axis, got {tuple(t.shape)}")
        _check_finite(t, f"residual_norms[{name!r}]")
        if bool((t < 0).any()):
            raise CalibrationError(f"residual_norms[{name!r}] must be non-negative (they are norms)")
        norms[name] = t
    return norms


def _checked_signals(value: Any, n: int) -> dict[str, np.ndarray]:
    if value is not None and not isinstance(value, Mapping):
        raise CalibrationError("signals must be a dict {name: (N,) array}")
    sigs: dict[str, np.ndarray] = {}
    for name, item in dict(value or {}).items():
        check_name(name, "signal")
        a = _as_tensor(item, f"signal {name!r}").double().numpy()
        if a.shape != (n,):
            raise CalibrationError(f"signal {name!r} must have shape (N,) = ({n},), got {a.shape}")
        if not np.isfinite(a).all():
            raise CalibrationError(f"signal {name!r} contains NaN or infinite values "
                                   f"(use 0 for 'no previous step' at step 0)")
        a.setflags(write=False)
        sigs[name] = a
    return sigs


def _checked_meta(value: Any, n: int) -> dict[str, Any]:
    meta = check_json(value)
    steps = meta.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps != n):
        raise CalibrationError(f"meta['steps'] = {steps!r} does not match the N = {n} recorded steps")
    return meta


# --- derived signals ---------------------------------------------------

def _mean_abs(t: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return t.abs().mean(dim=dim)


def derived_signals(run: CalibrationRun) -> dict[str, np.ndarray]:
    """Scalar per-step signals that follow from x, v and sigma alone (value at step 0: 0).

    ``output_rel_l1[n] = ||v_n - v_{n-1}||_1 / ||v_{n-1}||_1``;
    ``easycache_k[n] = ||v_n - v_{n-1}||_1 / ||x_n - x_{n-1}||_1``;
    ``curvature_cos[n] = 1 - cos(v_{n-1}, v_n)``;
    ``curvature_mag[n] = ||v_n - v_{n-1}||_2 / ||v_{n-1}||_2``;
    ``curvature_step[n] = |sigma_{n+1} - sigma_n| * ||v_n - v_{n-1}||_1 / ||x_n||_1``.
    Denominators are guarded with 1e-12, so no value is NaN.
    """
    n = run.num_steps
    out = {k: np.zeros(n) for k in ("output_rel_l1", "easycache_k", "curvature_cos", "curvature_mag",
                                     "curvature_step")}
    if n >= 2:
        v = run.v.double()
        x = run.x.double()
        dv = v[1:] - v[:-1]                                   # (N-1, D): v_n - v_{n-1}, n = 1..N-1
        dv_l1 = _mean_abs(dv)
        out["output_rel_l1"][1:] = (dv_l1 / _mean_abs(v[:-1]).clamp_min(EPS)).numpy()
        out["easycache_k"][1:] = (dv_l1 / _mean_abs(x[1:n] - x[:n - 1]).clamp_min(EPS)).numpy()
        dot = (v[1:] * v[:-1]).sum(-1)
        nv = v.norm(dim=-1)
        cos = dot / (nv[1:] * nv[:-1]).clamp_min(EPS)
        out["curvature_cos"][1:] = (1.0 - cos.clamp(-1.0, 1.0)).numpy()
        out["curvature_mag"][1:] = (dv.norm(dim=-1) / nv[:-1].clamp_min(EPS)).numpy()
        ds = (run.sigmas[2:] - run.sigmas[1:-1]).double().abs()   # |sigma_{n+1} - sigma_n|, n = 1..N-1
        out["curvature_step"][1:] = (ds * dv_l1 / _mean_abs(x[1:n]).clamp_min(EPS)).numpy()
    for a in out.values():
        a.setflags(write=False)
    return out


def magcache_ratios_from_norms(norms: Any) -> np.ndarray:
    """MagCache's gamma_n = mean_tokens(||r_n||_2 / ||r_{n-1}||_2), gamma_0 = 1 (method.md §7.3).

    ``norms``: (N, ...) per-token residual norms of one stream (or (N,) whole-tensor norms).
    """
    t = _as_tensor(norms, "residual norms").double()
    n = t.shape[0]
    out = np.ones(n)
    if n >= 2:
        flat = t.reshape(n, -1)
        out[1:] = (flat[1:] / flat[:-1].clamp_min(EPS)).mean(-1).numpy()
    return out


# --- several runs ---------------------------------------------------------

def as_runs(runs: CalibrationRun | Iterable[CalibrationRun]) -> list[CalibrationRun]:
    """Normalise one run or an iterable of runs to a non-empty list of compatible runs."""
    if isinstance(runs, CalibrationRun):
        out = [runs]
    else:
        try:
            out = list(runs)
        except TypeError:
            raise CalibrationError(f"expected a CalibrationRun or a list of them, got {type(runs).__name__}") from None
    if not out:
        raise CalibrationError("no calibration runs given")
    for r in out:
        if not isinstance(r, CalibrationRun):
            raise CalibrationError(f"expected CalibrationRun objects, got {type(r).__name__}")
    check_compatible(out)
    return out


def check_compatible(runs: Sequence[CalibrationRun], rtol: float = 1e-5) -> None:
    """Runs that are aggregated together must share N and the sigma grid."""
    first = runs[0]
    for k, r in enumerate(runs[1:], start=1):
        if r.num_steps != first.num_steps:
            raise CalibrationError(
                f"calibration run {k} has {r.num_steps} steps, run 0 has {first.num_steps}: "
                f"runs aggregated together must use the same step count")
        if not torch.allclose(r.sigmas.double(), first.sigmas.double(), rtol=rtol, atol=1e-7):
            raise CalibrationError(
                f"calibration run {k} has another sigma grid than run 0: calibrate at one resolution, "
                f"step count and shift (or keep the runs apart)")


def calibration_id(runs: CalibrationRun | Iterable[CalibrationRun]) -> str:
    """A short content hash of the runs (sigmas, final latents, meta) for provenance."""
    h = hashlib.sha1()
    for r in as_runs(runs):
        h.update(r.sigmas.numpy().tobytes())
        h.update(r.latents[-1].numpy().tobytes())
        h.update(r.outputs[0].numpy().tobytes())
        h.update(json.dumps(r.meta, sort_keys=True).encode())
    return h.hexdigest()[:12]
