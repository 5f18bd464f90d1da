"""Evaluation harness of the toy model: uncached references, cached runs, scores, timing.

Everything the demo and the benchmark measure goes through here, so both use the same
sampler, the same ``CacheSession`` and the same metrics. A *pair* is a (class, seed)
couple, the toy model's (prompt, seed).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch

from otcache_engine import metrics
from otcache_engine.calibration.calibration_run import CalibrationRun
from otcache_engine.runtime import CacheSession, StepPlan, make_reuse
from otcache_engine.schedules.schedule import Schedule
from .model import ToyDiT
from .record import record_runs
from .sampler import SampleResult, flow_sigmas, initial_noise, sample
from .weights_io import BUNDLED, load_meta, load_model

T = TypeVar("T")


@dataclass(frozen=True)
class Pairs:
    labels: tuple[int, ...]
    seeds: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Sequence[int]) -> "Pairs":
        return Pairs(tuple(self.labels[i] for i in index), tuple(self.seeds[i] for i in index))


def make_pairs(classes: Sequence[int], seeds: Sequence[int]) -> Pairs:
    """Pairs that cycle through ``classes`` with one distinct seed each."""
    labels = tuple(int(classes[i % len(classes)]) for i in range(len(seeds)))
    return Pairs(labels, tuple(int(s) for s in seeds))


@dataclass
class Toy:
    """The bundled model with its sampler settings at one step count."""

    model: ToyDiT
    steps: int
    shift: float
    cfg_scale: float
    sigmas: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.sigmas = flow_sigmas(self.steps, self.shift)

    @classmethod
    def load(cls, steps: int, weights=BUNDLED) -> "Toy":
        meta = load_meta(weights)["sampler"]
        return cls(load_model(weights), steps, float(meta["shift"]), float(meta["cfg_scale"]))

    def at_steps(self, steps: int) -> "Toy":
        return Toy(self.model, steps, self.shift, self.cfg_scale)


@dataclass
class Outcome:
    """Final images of one configuration and what it cost."""

    x: torch.Tensor                    # (B, 3, H, W) in [-1, 1]
    block_runs: float                  # mean block-stack executions per sample (= K for a static schedule)
    seconds: float                     # wall time of the sampling loop (best of the repeats)


def record(toy: Toy, pairs: Pairs) -> list[CalibrationRun]:
    """Uncached, recorded runs (calibration data; also the references for scoring)."""
    return record_runs(toy.model, pairs.labels, pairs.seeds, toy.sigmas, toy.cfg_scale,
                       meta={"shift": toy.shift})


def time_interleaved(jobs: Sequence[Callable[[], T]], repeats: int,
                     clock: Callable[[], float] = time.perf_counter) -> list[tuple[T, float]]:
    """Each job's (result, *minimum* wall time), the jobs run in turn ``repeats`` times: job 1, job 2, ...,
    job 1, job 2, ... On a shared machine other work only ever adds time, so the minimum is the least
    disturbed measurement (as ``timeit``); interleaving gives every job a chance at the quiet moments, so a
    busy spell cannot inflate one job's time (and every ratio against it) alone."""
    results: list = [None] * len(jobs)
    best = [math.inf] * len(jobs)
    for _ in range(max(1, repeats)):
        for i, job in enumerate(jobs):
            t0 = clock()
            results[i] = job()
            best[i] = min(best[i], clock() - t0)
    return list(zip(results, best))


def full_job(toy: Toy, pairs: Pairs) -> Callable[[], SampleResult]:
    """The uncached run (every step computes), as a job to time."""
    labels, noise = torch.tensor(pairs.labels), initial_noise(pairs.seeds)
    return lambda: sample(toy.model, labels, noise, toy.sigmas, toy.cfg_scale)


def schedule_job(toy: Toy, pairs: Pairs, schedule: Schedule, reuse: str = "residual",
                 gamma: float | Sequence[float] | None = None, space: str | None = None,
                 front_blocks: int = 0) -> Callable[[], SampleResult]:
    """Cached sampling of every pair with one schedule through the runtime (a fresh session per call)."""
    labels, noise = torch.tensor(pairs.labels), initial_noise(pairs.seeds)

    def once() -> SampleResult:
        session = session_for(toy, schedule, reuse, gamma)
        try:
            return sample(toy.model, labels, noise, toy.sigmas, toy.cfg_scale, session=session,
                          space=space, front_blocks=front_blocks)
        finally:
            session.close()
    return once


def outcome(timed: tuple[SampleResult, float]) -> Outcome:
    res, secs = timed
    return Outcome(res.x, float(res.block_runs), secs)


def run_full(toy: Toy, pairs: Pairs, repeats: int = 1) -> Outcome:
    """The uncached run, timed (best of ``repeats``)."""
    return outcome(time_interleaved([full_job(toy, pairs)], repeats)[0])


def session_for(toy: Toy, schedule: Schedule, reuse: str = "residual",
                gamma: float | Sequence[float] | None = None) -> CacheSession:
    """A fresh runtime session for ``schedule`` on this run's sigmas (what the ComfyUI wrapper builds)."""
    space = "output" if reuse == "omnicache" else None
    op = make_reuse(reuse, gamma=gamma, space=space)
    return CacheSession(StepPlan.build(schedule, toy.sigmas.tolist()), op, label="OTCache-toy")


def run_schedule(toy: Toy, pairs: Pairs, schedule: Schedule, reuse: str = "residual",
                 gamma: float | Sequence[float] | None = None, space: str | None = None,
                 front_blocks: int = 0, repeats: int = 1) -> Outcome:
    """Cached sampling of every pair with one schedule through the runtime, timed (best of ``repeats``)."""
    job = schedule_job(toy, pairs, schedule, reuse, gamma, space, front_blocks)
    return outcome(time_interleaved([job], repeats)[0])


def run_masks(toy: Toy, pairs: Pairs, schedules: Sequence[Schedule], **kwargs) -> Outcome:
    """Per-pair schedules (dynamic baselines): pairs sharing a mask run together; times add up."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, s in enumerate(schedules):
        groups.setdefault(s.compute_steps, []).append(i)
    x = torch.empty((len(pairs), 3, 32, 32))
    secs, runs = 0.0, 0.0
    for steps, index in groups.items():
        out = run_schedule(toy, pairs.subset(index), schedules[index[0]], **kwargs)
        x[index] = out.x
        secs += out.seconds
        runs += out.block_runs * len(index)
    return Outcome(x, runs / len(pairs), secs)


# --- scores ---------------------------------------------------------------------------

def to_image(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> ComfyUI IMAGE layout (B, H, W, 3) in [0, 1]."""
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)


class Scorer:
    """PSNR / SSIM (always) and LPIPS (only when its backbone is on disk) against references."""

    def __init__(self, use_lpips: bool = True):
        self.lpips_reason = metrics.lpips_unavailable_reason() if use_lpips else "disabled"
        self.lpips = None
        if self.lpips_reason is None:
            try:
                self.lpips = metrics.LPIPS()
            except Exception as e:  # noqa: BLE001 - a corrupt file must not stop the benchmark
                self.lpips_reason = f"loading LPIPS failed ({type(e).__name__}: {e})"

    def __call__(self, x: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        """Mean over samples of each metric (per-image scores, then averaged)."""
        a, b = to_image(x), to_image(ref)
        out = {"psnr": float(np.mean([metrics.psnr(a[i], b[i]) for i in range(len(a))])),
               "ssim": float(np.mean([metrics.ssim(a[i], b[i]) for i in range(len(a))]))}
        out["lpips"] = self.lpips(a, b) if self.lpips is not None else math.nan
        return out


def objective_metric(scorer: Scorer) -> tuple[str, Callable[[torch.Tensor, torch.Tensor], float]]:
    """The anchor search's end-to-end perceptual distance: LPIPS when available, else 1 - SSIM."""
    if scorer.lpips is not None:
        return scorer.lpips.name, lambda x, ref: scorer.lpips(to_image(x), to_image(ref))
    return "1-ssim", lambda x, ref: 1.0 - metrics.ssim(to_image(x), to_image(ref))
