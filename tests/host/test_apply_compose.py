"""OTCache Apply next to other nodes: block patches (wrapped, never dropped), core Skip Layer Guidance,
LoRA-style weight patches (TorchCompileModel: test_apply_compile)."""
from __future__ import annotations

import logging

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

from comfy_extras.nodes_slg import SkipLayerGuidanceDiT  # noqa: E402

import tiny_models as tm  # noqa: E402
from apply_helpers import bundle, patched, probed_run, run  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402
from otcache_pack.otcache_engine.errors import OTCacheError  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))
FULL = Schedule.full(N)
DIT = [f for f in tm.DIT_FAMILIES if f not in ("flux_schnell", "wan22_5b")]


def scaling_patch(calls: list):
    """Another node's block replacement: runs the block, then scales its image output."""
    def patch(args, extra):
        calls.append(1)
        out = extra["original_block"](args)
        out["img"] = out["img"] * 1.05
        return out
    return patch


def with_foreign(model, calls):
    m = model.clone()
    m.set_model_patch_replace(scaling_patch(calls), "dit", "double_block", 0)
    return m


@pytest.mark.parametrize("family", DIT)
def test_existing_block_patch_is_wrapped_and_called_on_computed_steps(family, batched_cfg):
    b = bundle(family)
    calls: list = []
    foreign = with_foreign(b.patcher, calls)
    ref = run(foreign, b, N)
    assert len(calls) == N
    assert torch.allclose(run(patched(foreign, FULL, always_on=True), b, N), ref, atol=1e-6, rtol=0)
    calls.clear()
    out, probe = probed_run(patched(foreign, SCHED), b, N)
    assert len(calls) == SCHED.budget == probe.block_runs
    assert not torch.equal(out, run(patched(b.patcher, SCHED), b, N))   # the other node's patch still acts


@pytest.mark.parametrize("family", ["flux", "wan21", "qwen_image"])
def test_block_patch_added_after_apply_turns_caching_off_for_those_calls(family, batched_cfg, caplog):
    b = bundle(family)
    calls: list = []
    late = with_foreign(patched(b.patcher, SCHED), calls)
    with caplog.at_level(logging.INFO, logger="otcache"):
        out, probe = probed_run(late, b, N)
    assert probe.block_runs == N and len(calls) == N
    assert torch.allclose(out, run(with_foreign(b.patcher, []), b, N), atol=1e-6, rtol=0)
    assert any("another node's block patches" in r.getMessage() for r in caplog.records)


def slg(model, family):
    double, single = ("0", "0") if family in ("flux", "chroma", "hunyuan_video") else ("0", "")
    out = SkipLayerGuidanceDiT.execute(model=model, scale=2.0, start_percent=0.0, end_percent=1.0,
                                       double_layers=double, single_layers=single, rescaling_scale=0.0)
    return out.result[0]


@pytest.mark.parametrize("reuse", ["residual", "output"])
@pytest.mark.parametrize("family", ["flux", "wan21", "hunyuan_video"])
def test_core_skip_layer_guidance_composes(family, reuse, batched_cfg):
    b = bundle(family)
    ref = run(slg(b.patcher, family), b, N)
    exact = slg(patched(b.patcher, FULL, reuse=reuse, always_on=True), family)
    assert torch.allclose(run(exact, b, N), ref, atol=1e-6, rtol=0)
    for model in (slg(patched(b.patcher, SCHED, reuse=reuse), family),
                  patched(slg(b.patcher, family), SCHED, reuse=reuse)):
        out, probe = probed_run(model, b, N)
        extra = probe.evaluations - N                       # SLG's own evaluations (uncached, its patches)
        assert extra > 0
        assert probe.block_runs == SCHED.budget + extra
        assert torch.isfinite(out).all() and not torch.equal(out, ref)


def lora_like(model, family, strength=1.0):
    """A weight 'diff' patch on the first block's first matrix, as LoRA loaders add them."""
    m = model.clone()
    params = dict(m.model.named_parameters())
    name = tm.stack_blocks(m.get_model_object("diffusion_model"))[0][0]
    key = next(k for k, v in params.items() if k.startswith(f"diffusion_model.{name}.0.") and v.ndim == 2)
    g = torch.Generator().manual_seed(5)
    assert m.add_patches({key: (0.5 * torch.randn(params[key].shape, generator=g),)}, strength) == [key]
    return m


@pytest.mark.parametrize("family", ["flux", "wan21", "lumina2"])
def test_lora_weight_patches_keep_working(family, batched_cfg):
    b = bundle(family)
    lora = lora_like(b.patcher, family)
    ref = run(lora, b, N)
    assert not torch.allclose(ref, run(b.patcher, b, N))              # the patch has an effect
    assert torch.allclose(run(patched(lora, FULL), b, N), ref, atol=1e-6, rtol=0)
    before, probe = probed_run(patched(lora, SCHED), b, N)           # LoRA, then OTCache
    assert probe.block_runs == SCHED.budget
    after = run(lora_like(patched(b.patcher, SCHED), family), b, N)   # OTCache, then LoRA
    assert torch.allclose(before, after, atol=1e-6, rtol=0)
    assert not torch.allclose(before, run(patched(b.patcher, SCHED), b, N))


@pytest.mark.parametrize("family", ["flux", "wan21"])
def test_remove_otcache_restores_what_was_wrapped(family, batched_cfg):
    from otcache_pack.nodes.runtime.patcher import patched_config, remove_otcache

    b = bundle(family)
    foreign = with_foreign(b.patcher, [])
    m = patched(foreign, SCHED).clone()
    remove_otcache(m)
    assert patched_config(m) is None
    out, probe = probed_run(m, b, N)
    assert probe.block_runs == N
    assert torch.allclose(out, run(foreign, b, N), atol=1e-6, rtol=0)


def test_context_windows_turn_caching_off_with_a_reason(batched_cfg, caplog):
    """Context windows split one step into several calls on different latent windows with the same
    streams: a per-stream cache cannot tell them apart, so the run goes uncached and says so."""
    import inspect

    import comfy.context_windows as cw
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode as Node

    def windows(model):
        kw = dict(model=model, context_length=1, context_overlap=0,
                  context_schedule=cw.ContextSchedules.STATIC_STANDARD, context_stride=1, closed_loop=False,
                  fuse_method=cw.ContextFuseMethods.PYRAMID, dim=2, freenoise=False)
        params = inspect.signature(Node.execute).parameters
        return Node.execute(**{k: v for k, v in kw.items() if k in params}).result[0]

    b = bundle("wan21")
    ref = run(windows(b.patcher), b, N)
    with caplog.at_level(logging.INFO, logger="otcache"):
        out, probe = probed_run(windows(patched(b.patcher, SCHED)), b, N)
    assert probe.block_runs == probe.n_calls > N                  # several windows per step, all computed
    assert torch.allclose(out, ref, atol=1e-6, rtol=0)
    assert any("caching off: context windows" in r.getMessage() for r in caplog.records)


def test_controlnet_residuals_turn_block_caching_off_for_those_calls(batched_cfg, caplog):
    """ControlNet adds its residuals between blocks, which skipped blocks would double count: a call that
    carries a ``control`` runs uncached. Simulated by an outer wrapper handing Flux an (all-None) control."""
    import inspect

    import comfy.patcher_extension as pe

    b = bundle("flux")
    dm = b.diffusion_model
    index = list(inspect.signature(type(dm)._forward).parameters).index("control") - 1   # without self
    control = {"input": [None] * len(dm.double_blocks), "output": [None] * len(dm.single_blocks)}

    def with_control(executor, *args, **kwargs):
        args = list(args)
        args[index] = control
        return executor(*args, **kwargs)

    base = b.patcher.clone()
    base.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test_control", with_control)   # outside ours
    with caplog.at_level(logging.INFO, logger="otcache"):
        out, probe = probed_run(patched(base, SCHED), b, N)
    assert probe.block_runs == N
    assert torch.allclose(out, run(b.patcher, b, N), atol=1e-6, rtol=0)
    assert any("uncached (ControlNet)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("family", ["flux", "wan21"])
def test_whole_model_reuse_keeps_block_patches_present_at_apply_time(family, batched_cfg):
    b = bundle(family)
    calls: list = []
    foreign = with_foreign(b.patcher, calls)
    out, probe = probed_run(patched(foreign, SCHED, reuse="output"), b, N)
    assert probe.block_runs == len(calls) == SCHED.budget          # cached, and the patch runs when computing
    ref = run(patched(b.patcher, SCHED, reuse="output"), b, N)
    assert not torch.equal(out, ref)
