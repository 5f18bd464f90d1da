"""The whole-model fallback for models without block hooks, announced, and its APPLY_MODEL route.

Every tiny DiT of the harness has a registry entry, so a diffusion transformer without one is a tiny Lumina 2
with its class taken out of the registry for the test (``apply_helpers.unregistered``)."""
from __future__ import annotations

import logging

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import comfy.patcher_extension as pe  # noqa: E402

import sampling  # noqa: E402
import tiny_models as tm  # noqa: E402
from apply_helpers import CFG, bundle, patched, probed_run, run, unregistered  # noqa: E402
from otcache_pack.nodes.runtime.families import detect_family  # noqa: E402
from otcache_pack.nodes.runtime.patcher import WRAPPER_KEY, patched_config  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))


def test_unhookable_model_gets_whole_model_reuse_announced(caplog, monkeypatch):
    b = bundle("lumina2")
    unregistered(monkeypatch, b)
    with caplog.at_level(logging.INFO, logger="otcache"):
        m = patched(b.patcher, SCHED)
    cfg = patched_config(m)
    assert not cfg.family.block_caching and cfg.reuse.space == "output"
    assert any("whole-model output reuse (no per-block cache hook for this architecture)" in r.getMessage()
               for r in caplog.records)
    assert not m.object_patches
    assert "dit" not in m.model_options["transformer_options"].get("patches_replace", {})


def test_family_detection_by_class():
    names = {f: detect_family(bundle(f).diffusion_model).name for f in ("flux", "chroma", "qwen_image",
                                                                         "hunyuan_video", "wan21", "ltxv", "lumina2")}
    assert names == {"flux": "flux", "chroma": "chroma", "qwen_image": "qwen_image",
                     "hunyuan_video": "hunyuan_video", "wan21": "wan", "ltxv": "ltxv", "lumina2": "nextdit"}
    spec = detect_family(bundle("flux").diffusion_model)
    assert spec.blocks[0] == ("double_block", 0) and spec.blocks[-1][0] == "single_block" and spec.last_is_single


@pytest.mark.parametrize("family", ["lumina2", "flux"])
def test_apply_model_route_matches_the_diffusion_model_route(family, batched_cfg, monkeypatch):
    """A model whose forward runs no DIFFUSION_MODEL wrapper is cached at APPLY_MODEL, in x - sigma*eps
    space: for flow and eps models that is exactly output reuse, so both routes give the same result."""
    b = bundle(family)
    if family == "lumina2":
        unregistered(monkeypatch, b)
    direct = run(patched(b.patcher, SCHED, reuse="output"), b, N)
    m = patched(b.patcher, SCHED, reuse="output")
    if family != "lumina2":   # block families get APPLY_MODEL only when they fall back; add it as the fallback does
        from otcache_pack.nodes.runtime.patcher import apply_model_wrapper
        m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, WRAPPER_KEY, apply_model_wrapper)
    m.remove_wrappers_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)   # as if the forward had no hook
    out, probe = probed_run(m, b, N)
    assert probe.n_calls == probe.block_runs == SCHED.budget
    assert torch.allclose(out, direct, atol=1e-4, rtol=1e-4)


# ------------------------------------------------ real SD3 (APPLY_MODEL route) and SD1.5 UNet (eps prediction)

class ForwardCount:
    """Batch sizes of every real run of a model: forwards of its output layer (a hook, removed on exit).

    Not the model's own forward: the UNet's forward runs the DIFFUSION_MODEL wrappers inside it, so it is
    called on reused steps too and returns the cache; its output layer runs only when the model computes.
    SD3's MMDiT runs no such wrapper, which is why a probe at DIFFUSION_MODEL would see nothing there.
    """

    def __init__(self, dm: torch.nn.Module) -> None:
        self.module = dm.out if isinstance(getattr(dm, "out", None), torch.nn.Module) else dm.final_layer
        self.batches: list[int] = []

    def __enter__(self) -> "ForwardCount":
        self.handle = self.module.register_forward_hook(lambda _m, inputs, _o: self.batches.append(inputs[0].shape[0]))
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


@pytest.mark.parametrize("family", tm.UNET_ERA_FAMILIES)
def test_unet_era_models_get_whole_model_reuse_announced(family, caplog):
    b = bundle(family)
    with caplog.at_level(logging.INFO, logger="otcache"):
        m = patched(b.patcher, SCHED)
    cfg = patched_config(m)
    assert cfg.family.name == "generic" and not cfg.family.block_caching and cfg.reuse.space == "output"
    assert any("whole-model output reuse" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("family", tm.UNET_ERA_FAMILIES)
def test_unet_era_full_budget_is_exact(family, batched_cfg):
    b = bundle(family)
    ref = run(b.patcher, b, N)
    assert torch.allclose(run(patched(b.patcher, Schedule.full(N)), b, N), ref, atol=1e-6, rtol=0)
    assert torch.allclose(run(patched(b.patcher, Schedule.full(N), always_on=True), b, N), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("family", tm.UNET_ERA_FAMILIES)
def test_unet_era_model_runs_k_times(family, batch, batched_cfg):
    b = bundle(family)
    with ForwardCount(b.diffusion_model) as count:
        out = run(patched(b.patcher, SCHED), b, N, batch=batch)
    assert count.batches == [2 * batch] * SCHED.budget
    ref = run(b.patcher, b, N, batch=batch)
    assert torch.isfinite(out).all() and not torch.equal(out, ref)


@pytest.mark.parametrize("family", tm.UNET_ERA_FAMILIES)
def test_unet_era_split_cfg_matches_batched(family):
    b = bundle(family)
    with sampling.forced_split_cfg(), ForwardCount(b.diffusion_model) as count:
        split = run(patched(b.patcher, SCHED), b, N, batch=2)
    assert count.batches == [2] * (2 * SCHED.budget)          # cond and uncond: one call each per computed step
    with sampling.forced_batched_cfg():
        batched = run(patched(b.patcher, SCHED), b, N, batch=2)
    assert torch.allclose(batched, split, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", tm.UNET_ERA_FAMILIES)
def test_unet_era_two_sampler_split(family, batched_cfg):
    b = bundle(family)
    m = patched(b.patcher, SCHED)
    with ForwardCount(b.diffusion_model) as count:
        sampling.run_two_stage(m, m, b, N, 3, CFG)
    expected = list(SCHED.mask)
    expected[3] = True                                         # the second run starts without a cache
    assert len(count.batches) == sum(expected)


def test_sd3_is_cached_at_apply_model(batched_cfg):
    """SD3's forward never reaches a DIFFUSION_MODEL wrapper: the reuse must happen one level up."""
    b = bundle("sd3")
    m = patched(b.patcher, SCHED)
    seen = []
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "otcache_test_seen",
                           lambda executor, *a, **k: seen.append(1) or executor(*a, **k))
    with ForwardCount(b.diffusion_model) as count:
        run(m, b, N)
    assert seen == [] and len(count.batches) == SCHED.budget
