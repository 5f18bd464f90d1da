"""What one uncached sampling run records, and its safetensors file format.

A :class:`CalibrationRun` holds the per-step arrays of one full (uncached) run
(algorithms §2.1): the sigma grid ``sigma_0 .. sigma_N``, the latents
``x_0 .. x_N`` (``x_n`` is the input of step ``n``, ``x_N`` the final latent),
the model outputs ``v_0 .. v_{N-1}`` after CFG, optional per-stream residual
norms, optional per-step scalar signals and a JSON metadata dict. Everything
downstream (edge weights, OmniCache, baselines, replays) is computed from it
without a model call.

Tensors are kept as float32 CPU torch tensors (the sigma grid as float64, exactly as
given). Files are safetensors (a list of
runs; the JSON metadata goes into the safetensors header), validated strictly
on load; nothing is ever pickled.

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
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from .errors import CalibrationError

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


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
        raise CalibrationError(f"{what} name {name!r} must be a non-empty string of letters, digits, '_' or '-'")
    return name


def _check_json(meta: Any) -> dict[str, Any]:
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
    """The recorded arrays of one uncached run (algorithms §2.1); validated on construction.

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
        sig = _as_tensor(self.sigmas, "sigmas", torch.float64)
        lat = _as_tensor(self.latents, "latents")
        out = _as_tensor(self.outputs, "outputs")
        if sig.ndim != 1 or sig.numel() < 2:
            raise CalibrationError(f"sigmas must be a 1-D array of N+1 >= 2 values, got shape {tuple(sig.shape)}")
        n = sig.numel() - 1
        _check_finite(sig, "sigmas")
        s = sig
        if bool((s < 0).any()):
            raise CalibrationError("sigmas must be non-negative")
        if bool((s[1:] > s[:-1]).any()):
            raise CalibrationError("sigmas must be non-increasing (from noise to data)")
        if not s[0] > s[-1]:
            raise CalibrationError("sigmas must decrease from sigma_0 to sigma_N")
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
        norms: dict[str, torch.Tensor] = {}
        if self.residual_norms is not None and not isinstance(self.residual_norms, Mapping):
            raise CalibrationError("residual_norms must be a dict {stream: (N, ...) array}")
        for name, value in dict(self.residual_norms or {}).items():
            _check_name(name, "residual stream")
            t = _as_tensor(value, f"residual_norms[{name!r}]")
            if t.ndim < 1 or t.shape[0] != n:
                raise CalibrationError(
                    f"residual_norms[{name!r}] must have N = {n} entries along the first axis, got {tuple(t.shape)}")
            _check_finite(t, f"residual_norms[{name!r}]")
            if bool((t < 0).any()):
                raise CalibrationError(f"residual_norms[{name!r}] must be non-negative (they are norms)")
            norms[name] = t
        sigs: dict[str, np.ndarray] = {}
        if self.signals is not None and not isinstance(self.signals, Mapping):
            raise CalibrationError("signals must be a dict {name: (N,) array}")
        for name, value in dict(self.signals or {}).items():
            _check_name(name, "signal")
            a = _as_tensor(value, f"signal {name!r}").double().numpy()
            if a.shape != (n,):
                raise CalibrationError(f"signal {name!r} must have shape (N,) = ({n},), got {a.shape}")
            if not np.isfinite(a).all():
                raise CalibrationError(f"signal {name!r} contains NaN or infinite values "
                                       f"(use 0 for 'no previous step' at step 0)")
            a.setflags(write=False)
            sigs[name] = a
        meta = _check_json(self.meta)
        steps = meta.get("steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps != n):
            raise CalibrationError(f"meta['steps'] = {steps!r} does not match the N = {n} recorded steps")
        object.__setattr__(self, "sigmas", sig)
        object.__setattr__(self, "latents", lat)
        object.__setattr__(self, "outputs", out)
        object.__setattr__(self, "residual_norms", norms)
        object.__setattr__(self, "signals", sigs)
        object.__setattr__(self, "meta", meta)

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
    """MagCache's gamma_n = mean_tokens(||r_n||_2 / ||r_{n-1}||_2), gamma_0 = 1 (algorithms §7.3).

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


# --- file format ------------------------------------------------------------

_TENSOR_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def save_runs(runs: CalibrationRun | Iterable[CalibrationRun], path: str | os.PathLike,
              dtype: str = "float32", extra_metadata: Mapping[str, Any] | None = None) -> Path:
    """Write runs to a safetensors file (atomically). ``dtype`` of latents/outputs on disk:
    float32 (default), float16 or bfloat16; sigmas and signals are always float32/float64-exact.
    """
    from safetensors.torch import save_file

    runs = [runs] if isinstance(runs, CalibrationRun) else list(runs)
    if not runs or not all(isinstance(r, CalibrationRun) for r in runs):
        raise CalibrationError("save_runs needs one CalibrationRun or a non-empty list of them")
    if dtype not in _TENSOR_DTYPES:
        raise CalibrationError(f"dtype must be one of {sorted(_TENSOR_DTYPES)}, got {dtype!r}")
    big = _TENSOR_DTYPES[dtype]
    tensors: dict[str, torch.Tensor] = {}
    records = []
    for k, r in enumerate(runs):
        p = f"runs.{k}."
        # clones: safetensors refuses tensors that share memory (runs may share arrays)
        tensors[p + "sigmas"] = r.sigmas.double().clone()
        tensors[p + "latents"] = r.latents.to(big).clone()
        tensors[p + "outputs"] = r.outputs.to(big).clone()
        for name, t in r.residual_norms.items():
            tensors[p + "residual_norms." + name] = t.clone()
        for name, a in r.signals.items():
            tensors[p + "signals." + name] = torch.from_numpy(np.array(a, dtype=np.float64))
        records.append({"meta": dict(r.meta), "signals": sorted(r.signals),
                        "residual_streams": sorted(r.residual_norms)})
    header = {"format": FORMAT, "version": str(VERSION), "runs": json.dumps(records, allow_nan=False)}
    if extra_metadata:
        header["extra"] = json.dumps(_check_json(extra_metadata), allow_nan=False)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


def load_runs(path: str | os.PathLike) -> list[CalibrationRun]:
    """Read and validate a calibration file written by :func:`save_runs`.

    Every problem raises :class:`CalibrationError` with one sentence naming the file.
    """
    runs, _ = load_runs_with_metadata(path)
    return runs


def load_runs_with_metadata(path: str | os.PathLike) -> tuple[list[CalibrationRun], dict[str, Any]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such calibration file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            keys = set(f.keys())
            try:
                runs, extra = _runs_from_file(f, header, keys)
            except CalibrationError as e:
                raise CalibrationError(f"{path}: {e}") from None
    except CalibrationError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
        raise CalibrationError(f"{path}: not a readable safetensors calibration file ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else 'corrupt'})") from None
    return runs, extra


def _runs_from_file(f: Any, header: Mapping[str, str], keys: set[str]) -> tuple[list[CalibrationRun], dict]:
    if header.get("format") != FORMAT:
        raise CalibrationError(f"not an OTCache calibration file (header format {header.get('format')!r}, "
                               f"expected {FORMAT!r})")
    if header.get("version") != str(VERSION):
        raise CalibrationError(f"unsupported calibration file version {header.get('version')!r}; "
                               f"this OTCache reads version {VERSION}")
    try:
        records = json.loads(header.get("runs", ""))
    except json.JSONDecodeError as e:
        raise CalibrationError(f"the 'runs' header entry is not valid JSON ({e.msg})") from None
    extra: dict[str, Any] = {}
    if "extra" in header:
        try:
            extra = json.loads(header["extra"])
        except json.JSONDecodeError as e:
            raise CalibrationError(f"the 'extra' header entry is not valid JSON ({e.msg})") from None
        if not isinstance(extra, dict):
            raise CalibrationError("the 'extra' header entry must be a JSON object")
    if not isinstance(records, list) or not records:
        raise CalibrationError("the 'runs' header entry must be a non-empty JSON list")
    expected: set[str] = set()
    runs = []
    for k, rec in enumerate(records):
        if not isinstance(rec, dict) or set(rec) - {"meta", "signals", "residual_streams"}:
            raise CalibrationError(f"run {k}: header record must be an object with meta, signals, residual_streams")
        sig_names = rec.get("signals", [])
        streams = rec.get("residual_streams", [])
        if not isinstance(sig_names, list) or not isinstance(streams, list):
            raise CalibrationError(f"run {k}: 'signals' and 'residual_streams' must be lists of names")
        for nm in list(sig_names) + list(streams):
            _check_name(nm, f"run {k}: signal/stream")
        p = f"runs.{k}."
        names = {"sigmas": p + "sigmas", "latents": p + "latents", "outputs": p + "outputs"}
        sig_keys = {nm: p + "signals." + nm for nm in sig_names}
        norm_keys = {nm: p + "residual_norms." + nm for nm in streams}
        wanted = set(names.values()) | set(sig_keys.values()) | set(norm_keys.values())
        missing = sorted(wanted - keys)
        if missing:
            raise CalibrationError(f"run {k}: tensor(s) {missing[:3]} missing from the file")
        expected |= wanted

        def get(key: str) -> torch.Tensor:
            t = f.get_tensor(key)
            if not t.is_floating_point():
                raise CalibrationError(f"tensor {key!r} must be floating point, got {t.dtype}")
            return t

        try:
            runs.append(CalibrationRun(
                sigmas=get(names["sigmas"]), latents=get(names["latents"]), outputs=get(names["outputs"]),
                residual_norms={nm: get(key) for nm, key in norm_keys.items()},
                signals={nm: get(key).double().numpy() for nm, key in sig_keys.items()},
                meta=rec.get("meta") or {}))
        except CalibrationError as e:
            raise CalibrationError(f"run {k}: {e}") from None
    unknown = sorted(keys - expected)
    if unknown:
        raise CalibrationError(f"unexpected tensor(s) {unknown[:3]} in the file")
    return runs, extra
