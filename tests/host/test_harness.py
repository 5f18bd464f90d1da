"""The harness itself, on every tiny family of the current host: models sample, probes count, CFG is steered.

These are the facts the cache-runtime tests build on; if one fails here, a runtime failure elsewhere means
nothing. Small widths and few steps keep the file at a few seconds per family.
"""

from __future__ import annotations

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import comfy.patcher_extension as pe  # noqa: E402

import sampling  # noqa: E402
import tiny_models as tm  # noqa: E402
from probes import PROBE_KEY, attach_probe  # noqa: E402

STEPS = 6
CFG = 3.0
_CACHE: dict[tuple, tm.FamilyBundle] = {}


def bundle(family: str, seed: int = 0) -> tm.FamilyBundle:
    """Build each tiny model once per session (tests only ever sample clones of it)."""
    key = (family, seed)
    if key not in _CACHE:
        _CACHE[key] = tm.build(family, "tiny", seed)
    return _CACHE[key]


def assert_valid_latent(out: torch.Tensor, b: tm.FamilyBundle, batch: int = 1) -> None:
    assert out.shape == b.empty_latent(batch).shape
    assert torch.isfinite(out).all()
    assert out.abs().max() > 0


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_batched_cfg_one_call_per_step(family: str, batched_cfg) -> None:
    b = bundle(family)
    probed, probe = attach_probe(b.patcher)
    out = sampling.run_sampler(probed, b, STEPS, CFG)
    assert_valid_latent(out, b)
    assert probe.n_calls == STEPS and probe.evaluations == STEPS
    assert all(c.batch == 2 and sorted(c.cond_or_uncond) == [0, 1] for c in probe.calls)
    assert probe.block_runs == STEPS
    expected = sampling.schedule_sigmas(b.patcher, STEPS)
    assert torch.allclose(torch.tensor(probe.call_sigmas), expected[:-1], rtol=1e-5)
    assert all(len(c.sample_sigmas) == STEPS + 1 for c in probe.calls)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_split_cfg_two_calls_per_step(family: str, split_cfg) -> None:
    b = bundle(family)
    probed, probe = attach_probe(b.patcher)
    out = sampling.run_sampler(probed, b, STEPS, CFG)
    assert_valid_latent(out, b)
    assert probe.n_calls == 2 * STEPS and probe.evaluations == STEPS
    assert all(c.batch == 1 and len(c.cond_or_uncond) == 1 for c in probe.calls)
    assert probe.block_runs == 2 * STEPS
    with sampling.forced_batched_cfg():
        batched = sampling.run_sampler(b.patcher, b, STEPS, CFG)
    assert torch.allclose(out, batched, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_same_seed_same_latent(family: str, batched_cfg) -> None:
    b = bundle(family)
    first = sampling.run_sampler(b.patcher, b, STEPS, CFG, seed=5)
    again = sampling.run_sampler(b.patcher, b, STEPS, CFG, seed=5)
    other = sampling.run_sampler(b.patcher, b, STEPS, CFG, seed=6)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_heun_calls_twice_per_step_but_last(family: str, batched_cfg) -> None:
    b = bundle(family)
    probed, probe = attach_probe(b.patcher)
    steps = 3
    out = sampling.run_sampler(probed, b, steps, CFG, sampler_name="heun")
    assert_valid_latent(out, b)
    assert probe.n_calls == 2 * steps - 1  # the last step, to sigma 0, has no corrector
    assert probe.block_runs == probe.n_calls


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_two_stage_split_matches_one_run(family: str, batched_cfg) -> None:
    b = bundle(family)
    first, p1 = attach_probe(b.patcher)
    second, p2 = attach_probe(b.patcher)
    mid, final = sampling.run_two_stage(first, second, b, STEPS, switch_step=3, cfg=CFG)
    assert_valid_latent(final, b)
    assert (p1.n_calls, p2.n_calls) == (3, 3)
    sigmas = sampling.schedule_sigmas(b.patcher, STEPS)
    assert p2.calls[0].sample_sigmas[0] == pytest.approx(float(sigmas[3]), rel=1e-5)
    whole = sampling.run_sampler(b.patcher, b, STEPS, CFG)
    assert torch.allclose(final, whole, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(mid, whole, rtol=1e-2, atol=1e-2)


def test_wan22_two_models(batched_cfg) -> None:
    """Wan 2.2 14B: a high-noise and a low-noise WanModel, each sampling its half of the schedule."""
    high, low = bundle("wan21", seed=0), bundle("wan21", seed=1)
    p_high, probe_high = attach_probe(high.patcher)
    p_low, probe_low = attach_probe(low.patcher)
    _, final = sampling.run_two_stage(p_high, p_low, high, STEPS, switch_step=2, cfg=CFG)
    assert_valid_latent(final, high)
    assert (probe_high.n_calls, probe_low.n_calls) == (2, 4)
    assert max(probe_low.call_sigmas) < min(probe_high.call_sigmas)
    only_high = sampling.run_sampler(high.patcher, high, STEPS, CFG)
    assert not torch.allclose(final, only_high, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("family", ["flux", "wan21"])
def test_batch3_batched_cfg(family: str, batched_cfg) -> None:
    b = bundle(family)
    probed, probe = attach_probe(b.patcher)
    out = sampling.run_sampler(probed, b, 2, CFG, batch=3)
    assert_valid_latent(out, b, batch=3)
    assert probe.n_calls == 2 and all(c.batch == 6 for c in probe.calls)
    assert not torch.allclose(out[0], out[1])  # each batch item has its own noise


def test_probe_leaves_original_patcher_alone(comfy_version: str) -> None:
    b = bundle("flux")
    probed, _ = attach_probe(b.patcher)
    assert PROBE_KEY in probed.wrappers[pe.WrappersMP.DIFFUSION_MODEL]
    assert PROBE_KEY not in b.patcher.wrappers.get(pe.WrappersMP.DIFFUSION_MODEL, {})


def test_weights_ignore_parameter_order(comfy_version: str) -> None:
    """Same seed, same weights whatever the module; different seed, different weights."""
    a, b, c = tm.build_patcher("wan21", seed=3), tm.build_patcher("wan21", seed=3), tm.build_patcher("wan21", seed=4)
    sa, sb, sc = (m.model.diffusion_model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.ffn.0.weight"], sc["blocks.0.ffn.0.weight"])
    assert tm.canonical_name("x.norm.key_norm.scale") == tm.canonical_name("x.norm.key_norm.weight")


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_bench_size_resolves(family: str, comfy_version: str) -> None:
    """The benchmark size maps to the same ComfyUI config (building it is the benchmark's job)."""
    config = tm._model_config(family, tm.SIZES["bench"])
    assert type(config).__name__ == tm.CONFIG_NAMES[family]


def test_block_stacks_and_replace_support(comfy_version: str) -> None:
    for family in tm.FAMILIES:
        b = bundle(family)
        blocks = tm.stack_blocks(b.diffusion_model)
        size = tm.SIZES["tiny"]
        assert len(blocks) == (2 * size.dual_depth if len(b.block_lists) == 2 else size.depth)
        assert b.last_block() is blocks[-1][2]
        assert b.has_dit_replace == (family != "lumina2") and b.block_cached   # lumina2: through its list
