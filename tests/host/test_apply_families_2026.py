"""OTCache Apply on the 2026 families: FLUX.2, HunyuanVideo 1.5, Qwen-Image edit, Wan 2.2 5B, the Wan subclasses
(I2V, FLF2V, VACE, S2V, Animate), LTX-2 (video only and video + audio), HiDream, Kandinsky 5 and Z-Image.

Which path each class takes (block caching, through block replacements or, for HiDream and Z-Image, whose
forwards iterate their block lists themselves, a stand-in for each list; or the announced whole-model
fallback, with the reason), exact at
full budget, the block stack (or, for the fallback, the model) running K times with batched and split CFG at
batch 1 and 3, and the default with nothing connected. Tiny models of ComfyUI's own classes
(``tiny_models_2026``); a family this host's ComfyUI lacks skips with the reason.
"""
from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import tiny_models as tm  # noqa: E402
from apply_helpers import bundle, patched, probed_run, rel_err, run  # noqa: E402
from otcache_pack.nodes.runtime import families  # noqa: E402
from otcache_pack.nodes.apply_node import OTCacheApply  # noqa: E402
from otcache_pack.nodes.runtime.families import FALLBACK_REASONS, detect_family  # noqa: E402
from otcache_pack.nodes.runtime.patcher import remove_otcache  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))          # K = 4 of 6
K = SCHED.budget
ALL = tm.BLOCK_FAMILIES_2026 + tm.FALLBACK_FAMILIES_2026

# The registry entry each tiny model must be recognised as ("generic": the whole-model fallback).
EXPECTED = {
    "flux2": "flux", "hunyuan_video15": "hunyuan_video", "qwen_image_edit": "qwen_image",
    "qwen_image_edit_2511": "qwen_image", "wan22_5b": "wan", "wan21_i2v": "wan", "wan21_flf2v": "wan",
    "wan21_vace": "wan_vace", "wan21_vace_sparse": "wan_vace", "wan22_s2v": "wan_s2v", "wan22_animate": "wan_animate",
    "ltx2": "ltx2", "ltx2_av": "ltx2", "hidream": "hidream", "kandinsky5": "kandinsky5", "z_image": "nextdit",
    "lumina2": "nextdit",
}


def flat(latent) -> torch.Tensor:
    """A sampled latent as one tensor (LTX-2's video + audio latent is a NestedTensor: rows concatenated)."""
    if getattr(latent, "is_nested", False):
        return torch.cat([t.reshape(t.shape[0], -1) for t in latent.unbind()], dim=1)
    return latent


def sample(model, b, steps: int = N, **kw) -> torch.Tensor:
    return flat(run(model, b, steps, **kw))


def probed(model, b, steps: int = N, **kw):
    out, probe = probed_run(model, b, steps, **kw)
    return flat(out), probe


def messages(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("family", EXPECTED)
def test_each_class_takes_its_path_and_says_so(family, caplog):
    b = bundle(family)
    dm = b.diffusion_model
    spec = detect_family(dm)
    assert spec.name == EXPECTED[family]
    assert spec.block_caching == b.block_cached and spec.list_hook == (b.block_cached and not b.has_dit_replace)
    with caplog.at_level(logging.INFO, logger="otcache"):
        m = patched(b.patcher, SCHED)
    dit = m.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    if spec.block_caching:
        assert f"{spec.name} ({type(dm).__name__}, {len(spec.blocks)} blocks, block-residual cache)" in messages(caplog)
        assert len(spec.blocks) == len(tm.stack_blocks(dm))
        assert len(dit) == (len(spec.blocks) if b.has_dit_replace else 0)   # list-hooked: object patches instead
    else:
        assert FALLBACK_REASONS[(type(dm).__module__, type(dm).__name__)] in messages(caplog)
        assert "whole-model output reuse" in messages(caplog) and not dit


@pytest.mark.parametrize("family", ALL)
def test_full_budget_reproduces_the_unpatched_output(family, batched_cfg):
    b = bundle(family)
    ref = sample(b.patcher, b)
    assert torch.allclose(sample(patched(b.patcher, Schedule.full(N)), b), ref, atol=1e-6, rtol=0)
    # the cache machinery running: every step computes and stores, nothing is reused
    assert torch.allclose(sample(patched(b.patcher, Schedule.full(N), always_on=True), b), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("family", ALL)
def test_block_stack_runs_k_times_batched_cfg(family, batch, batched_cfg):
    b = bundle(family)
    out, probe = probed(patched(b.patcher, SCHED), b, batch=batch)
    assert probe.n_calls == (N if b.block_cached else K)   # whole-model reuse never reaches the model
    assert all(c.batch == 2 * batch for c in probe.calls)
    assert probe.block_runs == K
    assert torch.isfinite(out).all() and not torch.equal(out, sample(b.patcher, b, batch=batch))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("family", ALL)
def test_block_stack_runs_k_times_split_cfg(family, batch, split_cfg):
    b = bundle(family)
    out, probe = probed(patched(b.patcher, SCHED), b, batch=batch)
    assert probe.evaluations == N and all(c.batch == batch for c in probe.calls)
    assert probe.block_runs == 2 * K                     # cond and uncond: one call each per computed step
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", ["ltx2", "ltx2_av"])
def test_ltx2_caches_with_either_reuse_space(family, batched_cfg, caplog):
    """LTX-2's latent reaches the model as a list of streams (video only too): both spaces cache it."""
    b = bundle(family)
    ref = sample(b.patcher, b)
    with caplog.at_level(logging.INFO, logger="otcache"):
        _, blocks = probed(patched(b.patcher, SCHED), b)
        out, whole = probed(patched(b.patcher, SCHED, reuse="output"), b)
    assert blocks.n_calls == N and blocks.block_runs == K      # residuals of both streams, K stack runs
    assert whole.n_calls == whole.block_runs == K              # whole outputs, at APPLY_MODEL: K model calls
    assert f"computed {K}/{N} steps (reused {N - K})" in messages(caplog)
    assert "nothing was cached" not in messages(caplog) and "several latent streams" not in messages(caplog)
    assert not torch.equal(out, ref)
    exact = sample(patched(b.patcher, Schedule.full(N), reuse="output", always_on=True), b)
    assert torch.allclose(exact, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["wan21_vace", "wan22_s2v"])
def test_what_the_forward_adds_between_blocks_is_not_added_twice(family, batched_cfg, monkeypatch):
    """VACE's hints and S2V's audio are added between blocks; they are in the computed step's residual, so a
    reused step rebuilds the stack's output from its input. The same model without that rule drifts further."""
    b = bundle(family)
    steps, sched = 8, Schedule(8, (0, 1, 3, 5, 7))
    ref = sample(b.patcher, b, steps)
    err = rel_err(sample(patched(b.patcher, sched), b, steps), ref)
    key = (type(b.diffusion_model).__module__, type(b.diffusion_model).__name__)
    monkeypatch.setitem(families._BY_CLASS, key, dataclasses.replace(families._BY_CLASS[key], between_blocks=False))
    naive = rel_err(sample(patched(b.patcher, sched), b, steps), ref)
    assert err < 0.75 * naive


@pytest.mark.parametrize("family", ALL)
def test_nothing_connected_runs_the_documented_default(family, batched_cfg, caplog):
    """No shipped preset matches these tiny models (block counts): with nothing connected Apply runs the
    documented default, a uniform schedule at the chosen speed-up (2x here) with the default operator, which
    extrapolates the whole output (omnicache gamma 0.5, output space): a reused step reaches no model."""
    b = bundle(family)
    with caplog.at_level(logging.INFO, logger="otcache"):
        model = OTCacheApply.execute(model=b.patcher, speedup=2.0).result[0]
    assert "uniform schedule" in messages(caplog)
    _, probe = probed(model, b, 10)
    assert probe.block_runs == 5 and probe.n_calls == 5


def test_a_run_that_caches_nothing_says_so(batched_cfg, caplog):
    """Never a silent no-op: every call of this run must bypass (another node's block patch, added after
    Apply), so the run ends with a warning that names the reason."""
    b = bundle("flux")
    late = patched(b.patcher, SCHED).clone()
    late.set_model_patch_replace(lambda args, extra: extra["original_block"](args), "dit", "double_block", 0)
    with caplog.at_level(logging.INFO, logger="otcache"):
        _, probe = probed(late, b)
    assert probe.block_runs == N
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("nothing was cached" in w and f"reuses {N - K} step(s)" in w and "another node's block patches" in w
               for w in warned)


def test_kandinsky5_block_hook_cannot_run_a_block(batched_cfg):
    """Why OTCache runs Kandinsky 5's blocks itself (``Family.block_args``): ComfyUI's own block hook fails on
    any replacement that runs the original block. If this starts to pass, ComfyUI has fixed the hook: the
    registry entry can drop ``block_args`` and use ``original_block`` like every other family."""
    b = bundle("kandinsky5")
    m = b.patcher.clone()
    m.set_model_patch_replace(lambda args, extra: {"x": extra["original_block"](args)}, "dit", "double_block", 0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'x'"):
        run(m, b, 2)


def test_kandinsky5_block_runners_come_off_with_otcache():
    """The blocks OTCache runs itself are part of its own replacements, never left behind as another's."""
    m = patched(bundle("kandinsky5").patcher, SCHED)
    remove_otcache(m)
    assert not m.model_options["transformer_options"].get("patches_replace", {}).get("dit")
