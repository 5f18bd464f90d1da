"""Sampling inside a node, the way ComfyUI's KSampler does it (comfyui.md §4).

Calibrate and Anchor Search both run many samplings of the user's model: uncached
runs whose every step is recorded, tail re-runs that restart mid-trajectory, and
cached trial runs. They all go through ``comfy.sample`` (so every model, sampler
and scheduler works) on *clones* of the user's model, and every model call checks
ComfyUI's interrupt flag first, so a long job stops within one model call.

Latents come in two spaces: ComfyUI's *external* latent (what LATENT carries) and
the sampler's *internal* one (``process_latent_in`` applied, noise scaling
included): the recorded x_n and model outputs are internal, as the engine's
formulas (x_{n+1} = x_n + (sigma_{n+1} - sigma_n) v_n) need.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

INTERRUPT_KEY = "otcache_interrupt_check"
log = logging.getLogger("otcache")


@dataclass(frozen=True)
class SamplerSettings:
    """The KSampler inputs of one node."""

    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    positive: Any
    negative: Any
    latent: dict
    denoise: float = 1.0

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.latent["samples"].shape)


def _check_interrupt() -> None:
    import comfy.model_management
    comfy.model_management.throw_exception_if_processing_interrupted()


def _interrupt_wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
    _check_interrupt()
    return executor(*args, **kwargs)


def interruptible(model: Any) -> Any:
    """A clone whose every diffusion-model call first checks ComfyUI's interrupt flag."""
    import comfy.patcher_extension as pe
    m = model.clone()
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, INTERRUPT_KEY, _interrupt_wrapper)
    return m


def uncached(model: Any) -> Any:
    """A clone that samples without OTCache, even when the user connected an already cached model."""
    m = model.clone()
    if "otcache" in m.model_options.get("transformer_options", {}):
        from ..runtime import patcher
        remove = getattr(patcher, "remove_otcache", None) or getattr(patcher, "_remove_previous")
        remove(m)
    return m


def run_sigmas(model: Any, s: SamplerSettings) -> torch.Tensor:
    """The steps+1 sigmas KSampler will use (denoise and the samplers that drop a sigma included)."""
    import comfy.samplers
    ks = comfy.samplers.KSampler(model, steps=s.steps, device="cpu", sampler=s.sampler_name,
                                 scheduler=s.scheduler, denoise=s.denoise, model_options=model.model_options)
    return ks.sigmas.detach().float().cpu()


def prepared_latent(model: Any, s: SamplerSettings) -> torch.Tensor:
    import comfy.sample
    return comfy.sample.fix_empty_latent_channels(model, s.latent["samples"])


def sample(model: Any, s: SamplerSettings, seed: int,
           step_callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """One KSampler run; returns the external latent. ``step_callback(i, x_i, denoised_i)`` per step."""
    import comfy.sample

    latent_image = prepared_latent(model, s)
    noise = comfy.sample.prepare_noise(latent_image, seed, s.latent.get("batch_index"))

    def callback(i: int, denoised: torch.Tensor, x: torch.Tensor, total: int) -> None:
        if step_callback is not None:
            step_callback(i, x, denoised)
        _check_interrupt()

    return comfy.sample.sample(model, noise, s.steps, s.cfg, s.sampler_name, s.scheduler, s.positive,
                               s.negative, latent_image, denoise=s.denoise, noise_mask=s.latent.get("noise_mask"),
                               callback=callback, disable_pbar=True, seed=seed)


def to_internal(model: Any, latent: torch.Tensor) -> torch.Tensor:
    return model.model.process_latent_in(latent.float().cpu()).float()


def from_internal(model: Any, x: torch.Tensor) -> torch.Tensor:
    """The sampler's latent of an internal-space tensor (a copy: ComfyUI may scale in place)."""
    return model.model.process_latent_out(x.clone())


def tail_sample(model: Any, s: SamplerSettings, x_internal: torch.Tensor, sigmas: torch.Tensor, seed: int,
                on_step: Callable[[], None] | None = None,
                step_callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Restart sampling from internal state ``x_internal`` at ``sigmas[0]`` and run the remaining steps.

    KSamplerAdvanced's convention makes this exact: a latent handed over mid-run is the internal
    state with the inverse noise scaling applied, and sampling it with zero noise scales it back.
    Returns the final latent in the internal space. ``step_callback(i, x_i)`` per step of the tail.
    """
    import comfy.sample
    import comfy.samplers

    ms = model.get_model_object("model_sampling")
    sigma0 = sigmas[0]
    latent = model.model.process_latent_out(ms.inverse_noise_scaling(sigma0, x_internal.float()))
    noise = torch.zeros_like(latent)

    def callback(i: int, denoised: torch.Tensor, x: torch.Tensor, total: int) -> None:
        if on_step is not None:
            on_step()
        if step_callback is not None:
            step_callback(i, x)
        _check_interrupt()

    out = comfy.sample.sample_custom(model, noise, s.cfg, comfy.samplers.sampler_object(s.sampler_name), sigmas,
                                     s.positive, s.negative, latent, callback=callback, disable_pbar=True, seed=seed)
    return to_internal(model, out)


class Progress:
    """ComfyUI's progress bar counted in model calls (steps); also re-checks the interrupt flag. With a
    ``label`` it also logs each tenth of the way with the time spent and an estimate of the time left
    (from the rate so far), so a long calibration says when it will end."""

    def __init__(self, total: int, label: str = "", unit: str = "model calls"):
        import comfy.utils
        self.total = max(1, int(total))
        self.done = 0
        self.label, self.unit = label, unit
        self.started = time.monotonic()
        self._tenth = 0
        self.bar = comfy.utils.ProgressBar(self.total)

    def step(self, n: int = 1) -> None:
        self.done += n
        self.bar.update_absolute(min(self.done, self.total), self.total)
        self._say()

    def set(self, done: int, total: int | None = None, unit: str | None = None) -> None:
        if total is not None:
            self.total = max(1, int(total))
            self._tenth, self.started = 0, time.monotonic()
        if unit is not None:
            self.unit = unit
        self.done = done
        self.bar.update_absolute(min(done, self.total), self.total)
        self._say()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def _say(self) -> None:
        tenth = min(10, 10 * self.done // self.total)
        if not self.label or tenth <= self._tenth or self.done <= 0:
            return
        from .cost import duration

        self._tenth = tenth
        left = self.seconds * (self.total - min(self.done, self.total)) / self.done
        log.info("[OTCache] %s: %d/%d %s (%d%%), %s so far, about %s left", self.label, min(self.done, self.total),
                 self.total, self.unit, 10 * tenth, duration(self.seconds), duration(left))
