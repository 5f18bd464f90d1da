"""Measurement runs that start where an earlier run of the same pair left off (method.md §10.6).

Every stage that judges schedules end to end -- the operator check of Calibrate, Anchor Search's trials, the
validation ladder and its free-default guard -- samples the same calibration pairs many times, with
schedules that often share their first decisions. Up to the first decision where two schedules differ, the
two runs compute the same thing, so the second run restarts from the first one's saved state there
(``runtime.trajectory``: latent and caches) and makes only the model calls after it. The result is the
same run, up to floating-point rounding at the restart; what it saves is reported with each stage's cost.

Restarting is exact only for samplers whose step reads nothing but the current latent and sigmas
(``RESUMABLE_SAMPLERS``); other samplers, inpainting masks and schedules that the run would retarget are
sampled whole, as before. Saved states live in host memory, at most ``OTCACHE_PREFIX_MEMORY_MB``
megabytes (default 2048; 0 turns sharing off).
"""
from __future__ import annotations

import os
from typing import Any, Hashable, Sequence

import torch

from ...otcache_engine import Schedule
from ...otcache_engine.errors import OTCacheError
from ...otcache_engine.runtime import StepPlan
from ...otcache_engine.runtime.trajectory import TAP_KEY, TrajectoryTap
from ...otcache_engine.search.prefix_store import PrefixStore
from .sampling import SamplerSettings, from_internal, run_sigmas, sample, tail_sample

RESUMABLE_SAMPLERS = ("euler", "heun", "dpm_2", "ddim")
MEMORY_ENV = "OTCACHE_PREFIX_MEMORY_MB"
DEFAULT_MB = 2048


def memory_bound() -> int:
    """Bytes of host memory the saved states may take (``OTCACHE_PREFIX_MEMORY_MB``)."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    try:
        mb = float(text) if text else DEFAULT_MB
    except ValueError:
        raise OTCacheError(f"{MEMORY_ENV} must be a number of megabytes (0 turns prefix sharing off), "
                           f"got {text!r}") from None
    return int(max(0.0, mb) * 2 ** 20)


def resumable(s: SamplerSettings) -> bool:
    """Whether a run with these settings can restart mid-way and stay the same run."""
    return s.sampler_name in RESUMABLE_SAMPLERS and s.latent.get("noise_mask") is None


def runs_as_is(schedule: Schedule, sigmas: Sequence[float]) -> bool:
    """Whether the run's plan is the schedule's own mask (not retargeted), so its decisions are known now."""
    if schedule.num_steps != len(sigmas) - 1:
        return False
    return schedule.coord == "index" or (schedule.sigmas is not None
                                         and StepPlan.build(schedule, sigmas).mapping == "identity")


def with_tap(model: Any, tap: TrajectoryTap) -> Any:
    """``model`` (a measuring clone) with ``tap`` in its options, on copies: nothing shared is changed."""
    to = dict(model.model_options.get("transformer_options", {}))
    to[TAP_KEY] = tap
    model.model_options = {**model.model_options, "transformer_options": to}
    return model


class SharedPrefixes:
    """The saved states of one stage's runs, and what they saved."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.store = PrefixStore(memory_bound() if max_bytes is None else max_bytes)
        self.saved_calls = 0
        self.resumed_runs = 0
        self._sigmas: dict[tuple, list[float]] = {}

    def sample(self, model: Any, pair: Any, key: Hashable, schedule: Schedule) -> tuple[torch.Tensor, int]:
        """The final (external) latent of ``model`` -- a clone patched with ``schedule`` -- on ``pair``,
        and the model calls it took."""
        s = pair.settings
        sigmas = self._run_sigmas(model, s)
        if not (self.store.max_bytes and resumable(s) and runs_as_is(schedule, sigmas)) or all(schedule.mask):
            # (a schedule that computes every step runs with caching off: nothing to resume or keep)
            return sample(model, s, pair.seed), schedule.budget
        mask = schedule.mask
        saved = self.store.find(key, mask)
        tap = TrajectoryTap(mask, saved, wanted=lambda step: mask[step])
        start, latents = tap.start, {}

        def keep_latent(i: int, x: torch.Tensor, *_: Any) -> None:
            step = start + i
            if step > start and mask[step]:
                latents[step] = x.detach().to("cpu", copy=True)

        m = with_tap(model, tap)
        if saved is None:
            final = sample(m, s, pair.seed, keep_latent)
        else:
            tail = torch.tensor(saved.sigmas[start:], dtype=torch.float32)
            final = from_internal(m, tail_sample(m, s, saved.latent, tail, pair.seed, step_callback=keep_latent))
            self.resumed_runs += 1
        for state in tap.states(latents):
            self.store.keep(key, mask, state)
        calls = sum(mask[start:])
        self.saved_calls += schedule.budget - calls
        return final, calls

    def _run_sigmas(self, model: Any, s: SamplerSettings) -> list[float]:
        k = (s.steps, s.sampler_name, s.scheduler, s.denoise)
        if k not in self._sigmas:
            self._sigmas[k] = [float(v) for v in run_sigmas(model, s).tolist()]
        return self._sigmas[k]
