"""The OTCACHE_CALIBRATION value: what OTCache Calibrate measured, passed on to later stages.

It bundles the recorded uncached runs (``CalibrationRun``: sigmas, latents, outputs,
signals), the edge-weight matrix the reference was solved on, the settings that
produced it and the reference itself. The anchor search takes its graph warm start
from the weights; Save Schedule writes it next to the schedule as
``<name>.calib.safetensors`` (safetensors with a JSON header, never pickle).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...otcache_engine import Schedule, schedule_io
from ...otcache_engine.calibration.calibration_run import CalibrationRun, calibration_id
from ...otcache_engine.calibration.calibration_io import load_runs_with_metadata, save_runs
from ...otcache_engine.errors import CalibrationError, OTCacheError

EXTRA_KEY = "otcache_calibration"
CALIB_SUFFIX = ".calib.safetensors"


def _weights_to_json(w: np.ndarray) -> list[list[float | None]]:
    return [[float(x) if math.isfinite(x) else None for x in row] for row in np.asarray(w, dtype=np.float64)]


def _weights_from_json(rows: Any) -> np.ndarray:
    try:
        w = np.array([[np.inf if x is None else float(x) for x in row] for row in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError("the stored edge weights are not a matrix of numbers") from None
    if w.ndim != 2 or w.shape[1] != w.shape[0] + 1:
        raise CalibrationError(f"the stored edge weights must be an (N, N+1) matrix, got shape {w.shape}")
    return w


@dataclass(frozen=True, eq=False)
class CalibrationData:
    """Calibration of one model/sampler/resolution: runs, edge weights, settings, reference."""

    runs: tuple[CalibrationRun, ...]
    weights: np.ndarray
    reference: Schedule
    settings: Mapping[str, Any] = field(default_factory=dict)
    pairs: tuple = ()   # the (prompt, seed) inputs of the runs, in memory only: later stages judge on them

    def __post_init__(self) -> None:
        if not self.runs:
            raise CalibrationError("a calibration needs at least one recorded run")
        n = self.runs[0].num_steps
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (n, n + 1):
            raise CalibrationError(f"edge weights have shape {w.shape}, the runs have N={n} steps")
        if self.reference.num_steps != n:
            raise CalibrationError(f"the reference has {self.reference.num_steps} steps, the runs {n}")
        object.__setattr__(self, "runs", tuple(self.runs))
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "settings", dict(self.settings))
        object.__setattr__(self, "pairs", tuple(self.pairs))

    @property
    def num_steps(self) -> int:
        return self.runs[0].num_steps

    @property
    def finals(self) -> list:
        """Each run's final latent (internal space): the uncached output of its pair, already sampled."""
        return [run.latents[-1] for run in self.runs]

    @property
    def max_gap(self) -> int:
        return int(self.settings.get("max_gap") or self.reference.max_gap or self.num_steps - 1)

    @property
    def id(self) -> str:
        return calibration_id(list(self.runs))

    def weights_for_gap(self, gap: int) -> np.ndarray:
        """Edge weights up to ``gap``. Beyond the calibrated max gap, local weights are recomputed from the
        runs (free) and hybrid ones re-use the measured per-step amplification; global ones cannot grow."""
        if gap <= self.max_gap or self.settings.get("error_mode") == "global":
            return self.weights
        from ...otcache_engine.calibration.edge_errors import combine_weights, e1_weights
        runs = list(self.runs)
        norm = "median" if len(runs) > 1 else None

        def local(g: int) -> np.ndarray:
            return combine_weights([e1_weights(r, g, self.reference.force_last) for r in runs], normalize=norm)

        wide = local(gap)
        if self.settings.get("error_mode") != "hybrid":
            return wide
        base = local(self.max_gap)
        ok = np.isfinite(self.weights) & np.isfinite(base) & (base > 1e-12)
        ratio = np.where(ok, self.weights / np.where(ok, base, 1.0), np.nan)
        alpha = np.array([np.nanmedian(col) if np.isfinite(col).any() else np.nan for col in ratio.T])
        alpha[~np.isfinite(alpha)] = np.nanmedian(alpha) if np.isfinite(alpha).any() else 1.0
        return wide * alpha[None, :]

    def graph_schedule(self, budget: int, max_gap: int | None = None) -> Schedule | None:
        """The graph optimum at ``budget`` with gaps up to ``max_gap`` (default: the calibrated one);
        None when no such schedule exists on the measured edges."""
        from ...otcache_engine.schedules.graph_search import reference_schedule
        gap = int(max_gap or self.max_gap)
        try:
            return reference_schedule(self.weights_for_gap(gap), budget, max_gap=gap,
                                      objective=str(self.settings.get("objective", "leximax")),
                                      force_last=self.reference.force_last, kind="graph")
        except OTCacheError:
            return None

    def widened_graph_schedule(self, budget: int) -> Schedule | None:
        """The graph optimum at a low ``budget``, with the gap cap widened as far as that budget needs
        (``ceil((N - 1) / (K - 1))``) when the calibrated one cannot reach it."""
        need = math.ceil((self.num_steps - 1) / (budget - 1)) if budget > 1 else self.num_steps
        return self.graph_schedule(budget, max(self.max_gap, need))

    def summary(self) -> dict[str, Any]:
        keep = ("error_mode", "objective", "max_gap", "seeds", "model_calls", "steps", "sampler", "scheduler")
        return {k: self.settings[k] for k in keep if k in self.settings} | {"calibration_id": self.id}

    # --- files ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        extra = {EXTRA_KEY: {"settings": dict(self.settings), "weights": _weights_to_json(self.weights),
                             "reference": self.reference.to_dict()}}
        return save_runs(list(self.runs), path, dtype="float16", extra_metadata=extra)

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationData":
        runs, extra = load_runs_with_metadata(path)
        body = extra.get(EXTRA_KEY)
        if not isinstance(body, Mapping):
            raise CalibrationError(f"{path}: not written by OTCache Calibrate (no '{EXTRA_KEY}' header entry)")
        try:
            reference = schedule_io.from_dict(body.get("reference"), f"{path}: reference")
            settings = body.get("settings") or {}
            if not isinstance(settings, Mapping):
                raise CalibrationError("settings must be a JSON object")
            return cls(tuple(runs), _weights_from_json(body.get("weights")), reference, settings)
        except OTCacheError as e:
            raise CalibrationError(f"{path}: {e}") from None
