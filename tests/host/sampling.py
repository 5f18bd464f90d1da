"""Run ComfyUI's own samplers on a tiny model the way its sampler nodes do, and steer CFG batching.

``run_sampler`` mirrors ``nodes.common_ksampler`` (KSampler / KSamplerAdvanced) without importing ``nodes``
(heavy, and it would register every core node): same latent fix-up, same noise, same ``comfy.sample.sample``.
``run_two_stage`` mirrors two chained KSamplerAdvanced nodes (the Wan 2.2 high-noise / low-noise setup).

CFG batching: ``comfy.samplers._calc_cond_batch`` puts cond and uncond into one model call only when
``model.memory_required(batched shape) * 1.5 < free memory``; the free memory comes from
``comfy.model_management.get_free_memory`` (v0.3.64 directly, v0.33 through ``ModelPatcher.get_free_memory``,
which adds 0 on CPU). On a CPU device the model loader never asks that function, so reporting no free memory
forces split CFG and reporting plenty forces batched CFG, and nothing else changes.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from comfy_host import ensure_comfy_importable

ensure_comfy_importable()

import comfy.model_management  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402

KSAMPLER_END = 10000  # KSamplerAdvanced's default end_at_step


def run_sampler(model_patcher, bundle, steps: int, cfg: float, sampler_name: str = "euler",
                scheduler: str = "simple", seed: int = 0, batch: int = 1, denoise: float = 1.0,
                start_step: int | None = None, last_step: int | None = None, force_full_denoise: bool = False,
                disable_noise: bool = False, sigmas: torch.Tensor | None = None,
                latent: torch.Tensor | None = None, positive: list | None = None,
                negative: list | None = None) -> torch.Tensor:
    """Sample like ``common_ksampler`` and return the latent (``bundle`` gives conds and the empty latent)."""
    if latent is None:
        latent = bundle.empty_latent(batch)
    latent = comfy.sample.fix_empty_latent_channels(model_patcher, latent)
    if disable_noise:
        noise = torch.zeros(latent.size(), dtype=latent.dtype, layout=latent.layout, device="cpu")
    else:
        noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(
        model_patcher, noise, steps, cfg, sampler_name, scheduler,
        bundle.positive if positive is None else positive, bundle.negative if negative is None else negative,
        latent, denoise=denoise, disable_noise=disable_noise, start_step=start_step, last_step=last_step,
        force_full_denoise=force_full_denoise, sigmas=sigmas, disable_pbar=True, seed=seed)


def run_custom(model_patcher, bundle, sigmas: torch.Tensor, cfg: float, sampler_name: str = "euler",
               seed: int = 0, batch: int = 1, latent: torch.Tensor | None = None) -> torch.Tensor:
    """Sample like ``SamplerCustom`` (explicit sigma list, sampler object) and return the latent."""
    if latent is None:
        latent = bundle.empty_latent(batch)
    latent = comfy.sample.fix_empty_latent_channels(model_patcher, latent)
    noise = comfy.sample.prepare_noise(latent, seed)
    sampler = comfy.samplers.sampler_object(sampler_name)
    return comfy.sample.sample_custom(model_patcher, noise, cfg, sampler, sigmas, bundle.positive,
                                      bundle.negative, latent, disable_pbar=True, seed=seed)


def run_two_stage(first_patcher, second_patcher, bundle, steps: int, switch_step: int, cfg: float,
                  sampler_name: str = "euler", scheduler: str = "simple", seed: int = 0,
                  batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two KSamplerAdvanced nodes: steps [0, switch) with leftover noise, then [switch, end) without noise.

    Returns (intermediate latent, final latent). Pass the same patcher twice for a plain split run, or the
    Wan 2.2 high-noise and low-noise models.
    """
    mid = run_sampler(first_patcher, bundle, steps, cfg, sampler_name, scheduler, seed=seed, batch=batch,
                      start_step=0, last_step=switch_step, force_full_denoise=False, disable_noise=False)
    final = run_sampler(second_patcher, bundle, steps, cfg, sampler_name, scheduler, seed=seed, batch=batch,
                        start_step=switch_step, last_step=KSAMPLER_END, force_full_denoise=True,
                        disable_noise=True, latent=mid)
    return mid, final


def schedule_sigmas(model_patcher, steps: int, scheduler: str = "simple") -> torch.Tensor:
    """The steps+1 sigmas ComfyUI's KSampler uses for this model (for samplers that do not drop one)."""
    model_sampling = model_patcher.get_model_object("model_sampling")
    return comfy.samplers.calculate_sigmas(model_sampling, scheduler, steps).cpu()


@contextlib.contextmanager
def _free_memory_reported(free_bytes: int) -> Iterator[None]:
    """Make ComfyUI's free-memory query answer ``free_bytes`` inside the block, restored afterwards."""
    mm = comfy.model_management
    original = mm.get_free_memory

    def fake(dev=None, torch_free_too=False):
        return (free_bytes, free_bytes) if torch_free_too else free_bytes

    mm.get_free_memory = fake
    try:
        yield
    finally:
        mm.get_free_memory = original


def forced_split_cfg():
    """Context manager: cond and uncond go to the model as separate calls (as under memory pressure)."""
    return _free_memory_reported(0)


def forced_batched_cfg():
    """Context manager: cond and uncond go to the model as one batched call (as with ample memory)."""
    return _free_memory_reported(1 << 50)
