"""OTCache Apply on every tiny family: exact at full budget, and the block stack runs exactly K times.

K counts computed *steps*: one evaluation per step with batched CFG runs the stack once per computed step;
split CFG makes two calls per evaluation, so twice. Multi-evaluation samplers (heun's corrector, midpoint
samplers) must not add block runs: later evaluations of a computed step reuse its fresh cache.
"""
from __future__ import annotations

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import sampling  # noqa: E402
import tiny_models as tm  # noqa: E402
from apply_helpers import CFG, bundle, patched, plan_of, probed_run, run  # noqa: E402
from probes import attach_probe  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))          # K = 4 of 6


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_full_budget_reproduces_the_unpatched_output(family, batched_cfg):
    b = bundle(family)
    ref = run(b.patcher, b, N)
    assert torch.allclose(run(patched(b.patcher, Schedule.full(N)), b, N), ref, atol=1e-6, rtol=0)
    # the same with the cache machinery running (every step computes, residuals stored, none used)
    forced = patched(b.patcher, Schedule.full(N), always_on=True)
    assert torch.allclose(run(forced, b, N), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("family", tm.FAMILIES)
def test_block_stack_runs_k_times_batched_cfg(family, batch, batched_cfg):
    b = bundle(family)
    out, probe = probed_run(patched(b.patcher, SCHED), b, N, batch=batch)
    # whole-model reuse (no block hooks) never reaches the model on reused steps
    assert probe.n_calls == (N if b.block_cached else SCHED.budget)
    assert all(c.batch == 2 * batch for c in probe.calls)
    assert probe.block_runs == SCHED.budget
    ref = run(b.patcher, b, N, batch=batch)
    assert torch.isfinite(out).all() and not torch.equal(out, ref)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("family", tm.FAMILIES)
def test_block_stack_runs_k_times_split_cfg(family, batch, split_cfg):
    b = bundle(family)
    out, probe = probed_run(patched(b.patcher, SCHED), b, N, batch=batch)
    assert probe.evaluations == N and all(c.batch == batch for c in probe.calls)
    assert probe.block_runs == 2 * SCHED.budget          # cond and uncond: one call each per computed step
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", ["flux", "wan21", "hunyuan_video", "lumina2"])
def test_split_and_batched_cfg_give_the_same_result(family):
    b = bundle(family)
    with sampling.forced_batched_cfg():
        batched = run(patched(b.patcher, SCHED), b, N, batch=2)
    with sampling.forced_split_cfg():
        split = run(patched(b.patcher, SCHED), b, N, batch=2)
    assert torch.allclose(batched, split, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", tm.FAMILIES)
@pytest.mark.parametrize("switch", [2, 3])
def test_two_sampler_split_run(family, switch, batched_cfg):
    """KSamplerAdvanced 0..switch then switch..N: each stage gets its part of the schedule by sigma."""
    b = bundle(family)
    pm = patched(b.patcher, SCHED)
    probed, probe = attach_probe(pm)
    sampling.run_two_stage(probed, probed, b, N, switch, CFG)
    expected = list(SCHED.mask)
    expected[switch] = True                                # the second run starts without a cache
    assert probe.block_runs == sum(expected)


@pytest.mark.parametrize("family", ["flux", "wan21", "qwen_image", "hunyuan_video", "lumina2"])
@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2s_ancestral", "dpmpp_sde"])
def test_multi_evaluation_samplers_run_the_stack_k_times(family, sampler, batched_cfg):
    b = bundle(family)
    ref = run(b.patcher, b, N, sampler_name=sampler)
    out, probe = probed_run(patched(b.patcher, SCHED), b, N, sampler_name=sampler)
    assert probe.evaluations > N                           # the sampler really evaluates more than once per step
    assert probe.block_runs == SCHED.budget
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    exact = run(patched(b.patcher, Schedule.full(N)), b, N, sampler_name=sampler)
    assert torch.allclose(exact, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["flux", "wan21", "ltxv"])
def test_schedule_is_retargeted_to_another_step_count(family, batched_cfg):
    b = bundle(family)
    sched = Schedule(10, (0, 1, 2, 4, 6, 9))
    for steps in (5, 15, 20):
        out, probe = probed_run(patched(b.patcher, sched), b, steps)
        plan = plan_of(probe, sched, b)
        assert plan.mapping == "retarget" and plan.num_steps == steps
        assert abs(plan.budget - sched.budget * steps / 10) <= 1
        assert probe.block_runs == plan.budget
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", ["flux", "wan21", "qwen_image"])
def test_denoise_below_one_maps_the_run_into_the_schedule(family, batched_cfg):
    b = bundle(family)
    sched = Schedule(12, (0, 1, 2, 3, 5, 7, 9, 11))
    latent = run(b.patcher, b, 12)                         # something to re-noise
    ref = run(b.patcher, b, 12, denoise=0.5, latent=latent)
    out, probe = probed_run(patched(b.patcher, sched), b, 12, denoise=0.5, latent=latent)
    plan = plan_of(probe, sched, b)
    assert plan.mapping == "slice" and plan.compute[0] and plan.compute[-1]
    assert probe.block_runs == plan.budget < 12
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    exact = run(patched(b.patcher, Schedule.full(12)), b, 12, denoise=0.5, latent=latent)
    assert torch.allclose(exact, ref, atol=1e-6, rtol=0)
