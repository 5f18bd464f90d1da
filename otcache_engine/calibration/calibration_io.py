"""Calibration runs on disk: safetensors with a JSON header, never pickle (method.md §2.1).

One file holds several runs (their tensors under ``run<i>.<field>`` keys) and the JSON metadata a caller
adds (OTCache Calibrate's settings, weights and reference). Loading validates the header, the keys and
every run again, so a damaged or foreign file fails with one sentence.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from .calibration_run import FORMAT, VERSION, CalibrationRun, check_json, check_name
from ..errors import CalibrationError


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
        header["extra"] = json.dumps(check_json(extra_metadata), allow_nan=False)
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
            check_name(nm, f"run {k}: signal/stream")
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
