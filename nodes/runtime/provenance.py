"""Where a schedule came from, and whether it fits where it is used.

A schedule is calibrated for one model, step count, sampler and resolution; used
elsewhere it still runs, but its quality claim no longer holds. Every schedule the
pack makes records that context in its provenance, and OTCache Apply calls
:func:`check_schedule` (or its two halves) to warn -- never to fail -- when a
schedule is used away from its calibration.

The model identity is a cheap content hash of the diffusion model: its state-dict
keys, shapes and dtypes, a few weight values sampled at fixed positions of a few
fixed tensors, and the LoRA-style weight patches of the ModelPatcher. It tells two
checkpoints (or a checkpoint with and without a LoRA) apart without reading
gigabytes. Nothing here imports ComfyUI at module level.
"""
from __future__ import annotations

import hashlib
import weakref
from typing import Any, Mapping, Sequence

import torch

HASH_CHARS = 16
_SAMPLED_TENSORS = 8
_SAMPLED_VALUES = 16
_cache: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


# --- model identity ------------------------------------------------------------------

def _diffusion_model(model: Any) -> torch.nn.Module:
    getter = getattr(model, "get_model_object", None)
    if getter is not None:
        return getter("diffusion_model")
    inner = getattr(getattr(model, "model", None), "diffusion_model", None)
    if isinstance(inner, torch.nn.Module):
        return inner
    if isinstance(model, torch.nn.Module):
        return model
    raise TypeError(f"cannot find a diffusion model in {type(model).__name__}")


def _sample_values(t: torch.Tensor) -> bytes:
    """A few values at evenly spaced flat positions (exotic tensor types: shape only)."""
    try:
        if t.is_meta or t.numel() == 0:
            return b""
        flat = t.detach().reshape(-1)
        idx = torch.linspace(0, flat.numel() - 1, min(_SAMPLED_VALUES, flat.numel())).long().to(flat.device)
        return flat[idx].float().cpu().numpy().tobytes()
    except Exception:  # noqa: BLE001 - quantised / custom tensor classes: keys and shapes still count
        return b""


def weights_hash(dm: torch.nn.Module, originals: Mapping[str, torch.Tensor] | None = None) -> str:
    """Content hash of a module: every key, shape and dtype plus sampled values of a few tensors.

    Values come from 1-D tensors (norm gains, biases) where possible: weight patches (LoRAs) are
    applied in place to the big matrices while a model is loaded, so those would hash differently
    before and after a run. ``originals`` maps a key to its unpatched tensor when one is known.
    """
    state = dm.state_dict(keep_vars=True)
    keys = sorted(state)
    h = hashlib.sha1()
    for k in keys:
        t = state[k]
        h.update(f"{k}:{tuple(getattr(t, 'shape', ()))}:{getattr(t, 'dtype', '')};".encode())
    for k in sampled_keys(state):
        h.update(_sample_values((originals or {}).get(k, state[k])))
    return h.hexdigest()


def sampled_keys(state: Mapping[str, Any]) -> list[str]:
    """The few tensors whose values are hashed: evenly spread over the sorted 1-D tensors, plus the last."""
    keys = sorted(state)
    small = [k for k in keys if getattr(state[k], "ndim", 0) == 1] or keys
    if not small:
        return []
    step = max(1, len(small) // _SAMPLED_TENSORS)
    return list(dict.fromkeys(small[::step][:_SAMPLED_TENSORS] + [small[-1]]))


def _originals(model: Any) -> dict[str, torch.Tensor]:
    """Unpatched weights the ModelPatcher set aside while its patches are applied."""
    out = {}
    for key, backup in (getattr(model, "backup", None) or {}).items():
        weight = getattr(backup, "weight", None)
        if isinstance(key, str) and key.startswith("diffusion_model.") and isinstance(weight, torch.Tensor):
            out[key[len("diffusion_model."):]] = weight
    return out


def _patches_digest(model: Any) -> str:
    """The ModelPatcher's weight patches (LoRAs): which keys, with which strengths."""
    patches = getattr(model, "patches", None) or {}
    if not patches:
        return ""
    h = hashlib.sha1()
    for key in sorted(patches):
        for p in patches[key]:
            strengths = [x for x in (p[0], p[2] if len(p) > 2 else None) if isinstance(x, (int, float))]
            h.update(f"{key}:{strengths};".encode())
    return h.hexdigest()


def model_hash(model: Any) -> str:
    """Identity hash of a ModelPatcher (or a bare diffusion module); the weight part is cached per module."""
    dm = _diffusion_model(model)
    base = _cache.get(dm)
    if base is None:
        base = weights_hash(dm, _originals(model))
        _cache[dm] = base
    patches = _patches_digest(model)
    if not patches:
        return base[:HASH_CHARS]
    return hashlib.sha1((base + patches).encode()).hexdigest()[:HASH_CHARS]


def model_family(model: Any) -> str:
    """The DiT family name (``flux``, ``wan``...), or the class name for other models."""
    from .families import detect_family
    dm = _diffusion_model(model)
    spec = detect_family(dm)
    return spec.name if spec.name != "generic" else type(dm).__name__


def model_identity(model: Any) -> dict[str, str]:
    return {"model_family": model_family(model), "model_hash": model_hash(model)}


# --- the run context ------------------------------------------------------------------

def latent_resolution(model: Any, latent_shape: Sequence[int]) -> str:
    """``WxH`` in pixels (``WxHxT`` for video latents), from the latent and the model's latent format."""
    shape = list(latent_shape)
    ratio = 8
    fmt = getattr(getattr(model, "model", None), "latent_format", None)
    if isinstance(getattr(fmt, "spacial_downscale_ratio", None), int):
        ratio = fmt.spacial_downscale_ratio
    if len(shape) >= 5:
        return f"{shape[-1] * ratio}x{shape[-2] * ratio}x{shape[-3]}"
    return f"{shape[-1] * ratio}x{shape[-2] * ratio}"


def run_provenance(model: Any, *, steps: int, sampler: str, scheduler: str, latent_shape: Sequence[int],
                   sigmas: Sequence[float] | None = None, cfg: float | None = None,
                   denoise: float | None = None) -> dict[str, Any]:
    """Everything a schedule made for this run should carry (model identity, sampling setup)."""
    prov: dict[str, Any] = dict(model_identity(model))
    prov.update({"steps": int(steps), "sampler": sampler, "scheduler": scheduler,
                 "resolution": latent_resolution(model, latent_shape),
                 "latent_shape": [int(x) for x in latent_shape]})
    if cfg is not None:
        prov["cfg"] = float(cfg)
    if denoise is not None:
        prov["denoise"] = float(denoise)
    if sigmas is not None:
        prov["sigma_grid"] = hashlib.sha1(",".join(f"{float(s):.6g}" for s in sigmas).encode()).hexdigest()[:12]
    return prov


# --- checks Apply can call -------------------------------------------------------------

def _prov(schedule: Any) -> Mapping[str, Any]:
    return getattr(schedule, "provenance", None) or {}


def check_model(schedule: Any, model: Any) -> list[str]:
    """Warnings when ``schedule`` was calibrated on another model (family or weights)."""
    prov = _prov(schedule)
    out = []
    fam = prov.get("model_family")
    if fam:
        try:
            here = model_family(model)
        except Exception:  # noqa: BLE001 - a check must never break sampling
            here = None
        if here and here != fam:
            out.append(f"this schedule was calibrated on a {fam} model, not on this {here} model")
            return out
    want = prov.get("model_hash")
    if want:
        try:
            got = model_hash(model)
        except Exception:  # noqa: BLE001
            return out
        if got != want:
            out.append(f"this schedule was calibrated on another model (hash {want}, this model {got}); "
                       f"recalibrate for best quality")
    return out


def check_run(schedule: Any, *, steps: int | None = None, sampler: str | None = None,
              scheduler: str | None = None, resolution: str | None = None,
              sigmas: Sequence[float] | None = None) -> list[str]:
    """Warnings when the run's step count, sampler, scheduler, resolution or sigma grid differ from the
    calibration. Unknown values (None, or absent from the provenance) are not compared."""
    prov = _prov(schedule)
    out = []
    cal_steps = prov.get("steps", getattr(schedule, "num_steps", None))
    if steps is not None and isinstance(cal_steps, int) and cal_steps != steps:
        out.append(f"schedule made for {cal_steps} steps, used with {steps} (it is retargeted)")
    for key, value in (("sampler", sampler), ("scheduler", scheduler), ("resolution", resolution)):
        want = prov.get(key)
        if value is not None and want and str(want) != str(value):
            out.append(f"schedule calibrated with {key} {want}, used with {value}")
    if sigmas is not None and prov.get("sigma_grid") and (steps is None or steps == cal_steps):
        grid = hashlib.sha1(",".join(f"{float(s):.6g}" for s in sigmas).encode()).hexdigest()[:12]
        if grid != prov["sigma_grid"] and not any("resolution" in w or "scheduler" in w for w in out):
            out.append("the run's noise levels differ from the calibration's (other shift or resolution?)")
    return out


def check_schedule(schedule: Any, model: Any = None, **run: Any) -> list[str]:
    """All warnings for using ``schedule`` with ``model`` and the run settings in ``run``
    (``steps``, ``sampler``, ``scheduler``, ``resolution``, ``sigmas``). Never raises."""
    out = check_model(schedule, model) if model is not None else []
    try:
        out += check_run(schedule, **run)
    except Exception as e:  # noqa: BLE001
        out.append(f"could not compare the run with the schedule's calibration ({e})")
    return out
