"""Sampling the benchmark models the way KSampler does, for a batch of (prompt, seed) pairs at once.

Each pair gets the noise KSampler would draw for its seed (``comfy.sample.prepare_noise`` on a batch-1
latent), so a batched run gives every pair the image it would get alone; the batch only saves Python
overhead. Static schedules decide per step, the same for every pair, so batching does not change them.
Dynamic caches (EasyCache, LazyCache) decide from the whole batch, so the benchmark runs those per pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from . import codec, setups


@dataclass(frozen=True)
class Pair:
    """One (prompt, seed) pair: ``prompt`` indexes ``prompts.prompt_text``."""

    prompt: int
    seed: int


def noise_for(setup: setups.Setup, pairs: Sequence[Pair]) -> torch.Tensor:
    import comfy.sample

    return torch.cat([comfy.sample.prepare_noise(setup.empty_latent(1), p.seed) for p in pairs])


def sample(model: Any, setup: setups.Setup, pairs: Sequence[Pair], steps: int, cfg: float | None = None,
           sampler: str | None = None, scheduler: str | None = None) -> torch.Tensor:
    """External latents of ``pairs`` sampled with ``model`` (a ModelPatcher, cached or not)."""
    import comfy.sample

    latent = comfy.sample.fix_empty_latent_channels(model, setup.empty_latent(len(pairs)))
    positive = setup.conditioning([p.prompt for p in pairs])
    negative = setup.negative(len(pairs))
    return comfy.sample.sample(model, noise_for(setup, pairs), steps, setup.cfg if cfg is None else cfg,
                               sampler or setup.sampler, scheduler or setup.scheduler, positive, negative, latent,
                               disable_pbar=True, seed=pairs[0].seed)


def images(model: Any, setup: setups.Setup, pairs: Sequence[Pair], steps: int, **kw: Any) -> torch.Tensor:
    """Decoded images (B, H, W, 3) in [0, 1] of ``pairs``."""
    return codec.decode(model, sample(model, setup, pairs, steps, **kw))
