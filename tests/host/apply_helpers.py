"""Shared pieces of the OTCache Apply host tests: cached tiny models, patched runs, counting.

Import after ``require_comfy()``. Every helper samples clones; the tiny models are built once per session.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from comfy_host import ensure_comfy_importable

ensure_comfy_importable()

import comfy.sample  # noqa: E402

import sampling  # noqa: E402
import tiny_models as tm  # noqa: E402
import tiny_models_2026 as t26  # noqa: E402
from probes import ModelProbe, attach_probe  # noqa: E402
from otcache_pack.nodes.runtime import families  # noqa: E402
from otcache_pack.nodes.runtime.patcher import PatchOptions, patch_model  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402
from otcache_pack.otcache_engine.runtime import StepPlan  # noqa: E402

CFG = 3.0
_BUNDLES: dict[tuple[str, int], tm.FamilyBundle] = {}


def bundle(family: str, seed: int = 0) -> tm.FamilyBundle:
    """The tiny model of ``family``, built once per session; skips the test where this ComfyUI lacks it."""
    key = (family, seed)
    if key not in _BUNDLES:
        try:
            _BUNDLES[key] = tm.build(family, "tiny", seed)
        except t26.Unavailable as e:
            pytest.skip(str(e))
    return _BUNDLES[key]


def unregistered(monkeypatch: pytest.MonkeyPatch, b: tm.FamilyBundle) -> None:
    """For one test, ``b``'s class is unknown to the family registry: the whole-model fallback of a diffusion
    transformer OTCache has no entry for (every tiny DiT of the harness has one)."""
    cls = type(b.diffusion_model)
    monkeypatch.delitem(families._BY_CLASS, (cls.__module__, cls.__name__))


def patched(model: Any, schedule: Schedule | None, **options: Any) -> Any:
    return patch_model(model, schedule, PatchOptions(**options))


def probed_run(model: Any, b: tm.FamilyBundle, steps: int, cfg: float = CFG,
               **kw: Any) -> tuple[torch.Tensor, ModelProbe]:
    """Sample a probed clone of ``model``; the probe counts calls, evaluations and real block runs."""
    probed, probe = attach_probe(model)
    return sampling.run_sampler(probed, b, steps, cfg, **kw), probe


def run(model: Any, b: tm.FamilyBundle, steps: int, cfg: float = CFG, **kw: Any) -> torch.Tensor:
    return sampling.run_sampler(model, b, steps, cfg, **kw)


def sample_with_callback(model: Any, b: tm.FamilyBundle, steps: int, callback, cfg: float = CFG,
                         seed: int = 0) -> torch.Tensor:
    latent = comfy.sample.fix_empty_latent_channels(model, b.empty_latent(1))
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", b.positive, b.negative, latent,
                               callback=callback, disable_pbar=True, seed=seed)


def plan_of(probe: ModelProbe, schedule: Schedule, b: tm.FamilyBundle, scheduler: str = "simple") -> StepPlan:
    """The plan the runtime must have made for the run the probe saw (its sampler's sigma list)."""
    run_sigmas = probe.calls[0].sample_sigmas
    reference = sampling.schedule_sigmas(b.patcher, schedule.num_steps, scheduler).tolist()
    return StepPlan.build(schedule, run_sigmas, None if schedule.sigmas is not None else reference)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())
