"""Baseline schedules of the benchmark, budget-matched on the toy model (method.md §7).

Every rule comes from ``otcache_engine.schedules.baselines`` (static: uniform-K, MagCache replay;
dynamic: TeaCache, FBCache, EasyCache evaluated on each pair's recorded uncached run) and
OmniCache from ``otcache_engine.schedules.omnicache``. This module only picks their settings for the
toy model and matches their budgets:

- dynamic rules: the threshold is bisected so that the mean K over the *evaluated* pairs is
  closest to the target (only K is matched on them, never quality) -- the rows of one
  table then compare methods at the same mean cost;
- MagCache: its threshold is bisected on the calibration-mean ratio table (a static mask);
- TeaCache's rescaling polynomial is refitted on the calibration runs (its FLUX
  coefficients do not transfer to another model; method.md §7.2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from otcache_engine.schedules import baselines, dynamic_baselines, omnicache
from otcache_engine.calibration.calibration_run import CalibrationRun
from otcache_engine.schedules.schedule import Schedule


@dataclass
class Plan:
    """How to run one baseline row: per-pair schedules and the runtime plumbing it needs."""

    name: str
    schedules: list[Schedule]                       # one per evaluated pair (static: the same one)
    reuse: str = "residual"
    space: str | None = None
    front_blocks: int = 0
    gamma: Sequence[float] | float | None = None
    info: dict = field(default_factory=dict)

    @property
    def mean_k(self) -> float:
        return float(np.mean([s.budget for s in self.schedules]))


def teacache_coefficients(calib: Sequence[CalibrationRun]) -> np.ndarray:
    """4th-order fit of the output change on TeaCache's input change (the per-model rescaling)."""
    xs = np.concatenate([r.signal("teacache_rel_l1")[1:] for r in calib])
    ys = np.concatenate([r.signal("output_rel_l1")[1:] for r in calib])
    return np.polyfit(xs, ys, 4)


def _matched(rule, target: float, hi: float) -> dynamic_baselines.ThresholdMatch:
    return dynamic_baselines.bisect_threshold(rule, target, lo=0.0, hi=hi, grid=24, iters=30)


def teacache(evals: Sequence[CalibrationRun], calib: Sequence[CalibrationRun], target: float) -> Plan:
    coeffs = teacache_coefficients(calib)
    m = _matched(lambda t: [dynamic_baselines.teacache_schedule(r, t, coeffs) for r in evals], target, hi=1.0)
    return Plan("TeaCache", m.schedules, info={"threshold": m.threshold, "coefficients": coeffs.tolist()})


def fbcache(evals: Sequence[CalibrationRun], target: float) -> Plan:
    m = _matched(lambda t: [dynamic_baselines.fbcache_schedule(r, t, force_last=True) for r in evals], target, hi=1.0)
    return Plan("FBCache", m.schedules, front_blocks=1, info={"threshold": m.threshold})


def easycache(evals: Sequence[CalibrationRun], target: float) -> Plan:
    warmup = max(1, round(0.1 * evals[0].num_steps))
    m = _matched(lambda t: [dynamic_baselines.easycache_schedule(r, t, warmup=warmup) for r in evals], target, hi=0.5)
    return Plan("EasyCache", m.schedules, reuse="output", space="transform",
                info={"threshold": m.threshold, "warmup": warmup})


def magcache(calib: Sequence[CalibrationRun], num_pairs: int, target: float) -> Plan:
    n = calib[0].num_steps
    ratios = np.mean([baselines.magcache_ratios(r) for r in calib], axis=0)
    k_max = 2 * math.ceil(n / target)
    m = _matched(lambda t: baselines.magcache_schedule(ratios, threshold=t, k_max=k_max, retention=0.1),
                 target, hi=1.0)
    return Plan("MagCache", m.schedules * num_pairs, info={"threshold": m.threshold, "k_max": k_max})


def uniform(n: int, budget: int, num_pairs: int) -> Plan:
    return Plan("uniform", [baselines.uniform_k(n, budget)] * num_pairs)


def omni(calib: Sequence[CalibrationRun], budget: int, num_pairs: int, gamma: bool) -> Plan:
    """OmniCache: low-curvature reuse steps (exact DP), output reuse, with or without the gamma fit."""
    n = calib[0].num_steps
    r_max = max(2, math.ceil((n - budget) / max(budget - 1, 1)) + 1)
    sched, gammas = omnicache.omnicache_schedule(calib, budget, r_max=r_max, c_min=1, fit_gamma=gamma)
    name = "OmniCache+gamma" if gamma else "OmniCache (no gamma)"
    return Plan(name, [sched] * num_pairs, reuse="omnicache" if gamma else "output",
                gamma=gammas if gamma else None, info={"r_max": r_max})


def static(name: str, schedule: Schedule, num_pairs: int) -> Plan:
    return Plan(name, [schedule] * num_pairs)
