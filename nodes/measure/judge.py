"""Judging schedules where they are used: sample the user's model with a schedule and a reuse operator on the
calibration pairs, and compare the result with the uncached one.

The graph search of Calibrate predicts errors; Anchor Search, the reuse-operator choice and the check of a
reference against a uniform schedule need the real end-to-end error instead. All of them go through this
one judge: the same pairs, the same metric, the same way of sampling (ComfyUI's own, on interruptible
clones), so their numbers can be compared with each other.

Latent metrics compare *internal* latents (the sampler's space, where the calibration runs were recorded),
so the uncached references of a calibration are its recorded final latents and cost no model call.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ...otcache_engine import Schedule
from ...otcache_engine.metrics import Perceptual
from ..runtime.operators import Operator
from .sampling import Progress, interruptible, sample, to_internal
from .shared_prefix import SharedPrefixes


class Judge:
    """The uncached output of every pair (computed once, or given) and the metric that compares a run with it."""

    def __init__(self, model: Any, pairs: Sequence[Any], metric: Perceptual, vae: Any = None,
                 refs: Sequence[torch.Tensor] | None = None, prefixes: SharedPrefixes | None = None):
        self.model, self.pairs, self.metric, self.vae = model, list(pairs), metric, vae
        self.refs: list[torch.Tensor] = list(refs) if refs is not None else []
        self.calls = 0       # model calls spent so far: what a stage reports it cost
        self._means: dict[tuple, float] = {}   # a schedule + operator already judged costs nothing again
        # runs of a pair that share their first decisions share those model calls too
        self.prefixes = prefixes if prefixes is not None else SharedPrefixes()

    def output(self, latent: torch.Tensor) -> torch.Tensor:
        if self.metric.on == "latent" or self.vae is None:
            return to_internal(self.model, latent)
        return self.vae.decode(latent).float().cpu()

    def prepare(self, progress: Progress) -> None:
        """Sample the uncached outputs (unless they were given)."""
        if self.refs:
            return
        base = interruptible(self.model)

        def on_step(*_: Any) -> None:
            self.calls += 1
            progress.step()
        for p in self.pairs:
            self.refs.append(self.output(sample(base, p.settings, p.seed, on_step)))

    def score(self, schedule: Schedule, pair: int, op: Operator) -> float:
        """Distance to the uncached output of ``pair`` when sampling with ``schedule`` and ``op``."""
        from ..runtime.patcher import cached_model

        m = interruptible(cached_model(self.model, schedule, reuse=op.reuse, gamma=op.gamma,
                                                    order=op.order, space=op.space))
        final, calls = self.prefixes.sample(m, self.pairs[pair], (pair, op), schedule)
        self.calls += calls
        return self.metric(self.output(final), self.refs[pair])

    def saving(self) -> str:
        """What prefix sharing saved so far, for a stage's report ('' when nothing)."""
        p = self.prefixes
        if not p.saved_calls:
            return ""
        return (f"{p.resumed_runs} run(s) resumed from a shared prefix saved {p.saved_calls} model calls "
                f"({p.store.stats()['states']} states kept, {p.store.bytes / 2 ** 20:.1f} MiB)")

    def mean(self, schedule: Schedule, op: Operator, on_pair: Callable[[], None] | None = None) -> float:
        """Mean distance over every pair. Sampling is deterministic for a schedule, an operator and the
        pairs, so a pair already judged (the ladder's uniform candidate and the free default are often the
        same) is looked up instead of sampled again."""
        key = (schedule.num_steps, schedule.compute_steps, schedule.force_last, schedule.sigmas, op)
        if key in self._means:
            return self._means[key]
        total = 0.0
        for i in range(len(self.pairs)):
            total += self.score(schedule, i, op)
            if on_pair is not None:
                on_pair()
        self._means[key] = total / max(1, len(self.pairs))
        return self._means[key]
