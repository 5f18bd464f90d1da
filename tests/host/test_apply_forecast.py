"""OTCache Apply with the forecasting operator (taylor, TaylorSeer arXiv 2503.06923) on a real ComfyUI: the block
stack still runs exactly K times, the forecast changes the output, and a full budget is the uncached run."""
from __future__ import annotations

import logging

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

from apply_helpers import bundle, patched, probed_run, run  # noqa: E402
from otcache_pack.nodes.apply_node import OTCacheApply  # noqa: E402
from otcache_pack.nodes.runtime import patcher as P  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N = 10
SCHED = Schedule(N, (0, 1, 3, 5, 7, 9))      # three computed steps before the first long gap: order 2 runs


def apply(model, **kw):
    return OTCacheApply.execute(model=model, **kw).result[0]


@pytest.mark.parametrize("family", ["flux", "wan21", "lumina2"])   # lumina2: a stand-in for its block list
def test_taylor_runs_the_block_stack_k_times_and_forecasts(family, batched_cfg, caplog):
    b = bundle(family)
    ref = run(b.patcher, b, N)
    model = apply(b.patcher, reference=SCHED, reuse="taylor")
    space = "residual" if b.block_cached else "output"
    assert P.patched_config(model).reuse.describe() == f"taylor(order=2, {space})"
    with caplog.at_level(logging.INFO, logger="otcache"):
        out, probe = probed_run(model, b, N)
    assert probe.block_runs == SCHED.budget
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    line = next(r.getMessage() for r in caplog.records if "computed 6/10 steps" in r.getMessage())
    assert "forecasts refused" not in line
    plain, _ = probed_run(apply(b.patcher, reference=SCHED, reuse=space), b, N)
    assert not torch.equal(out, plain)                       # the forecast is not plain reuse


def test_taylor_with_split_cfg_counts_one_stack_run_per_stream(split_cfg):
    b = bundle("flux")
    out, probe = probed_run(apply(b.patcher, reference=SCHED, reuse="taylor"), b, N)
    assert probe.block_runs == 2 * SCHED.budget and torch.isfinite(out).all()


def test_taylor_at_full_budget_is_the_uncached_run(batched_cfg):
    b = bundle("flux")
    ref = run(b.patcher, b, N)
    out, probe = probed_run(apply(b.patcher, reference=Schedule.full(N), reuse="taylor"), b, N)
    assert probe.block_runs == N and torch.allclose(out, ref, atol=1e-6, rtol=0)
    forced = patched(b.patcher, Schedule.full(N), reuse="taylor", always_on=True)   # histories kept, none used
    assert torch.allclose(run(forced, b, N), ref, atol=1e-6, rtol=0)


def test_a_schedule_given_as_is_keeps_the_options_order(batched_cfg):
    b = bundle("flux")
    first = patched(b.patcher, SCHED, reuse="taylor", order=1)
    assert P.patched_config(first).reuse.describe() == "taylor(order=1, residual)"
    offloaded = patched(b.patcher, SCHED, reuse="taylor", cache_device="cpu offload")
    out, probe = probed_run(offloaded, b, N)
    assert probe.block_runs == SCHED.budget and torch.isfinite(out).all()
    assert torch.allclose(out, run(patched(b.patcher, SCHED, reuse="taylor"), b, N), atol=1e-6, rtol=0)


@pytest.mark.parametrize("reuse", ["omnicache", "taylor"])
def test_an_extrapolating_operator_in_the_output_space_skips_the_whole_model(reuse, batched_cfg):
    b = bundle("flux")
    ref = run(b.patcher, b, N)
    model = patched(b.patcher, SCHED, reuse=reuse, gamma=1.0, space="output")
    assert P.patched_config(model).reuse.describe().endswith("output)") and P.patched_config(model).num_patches == 0
    out, probe = probed_run(model, b, N)
    assert probe.block_runs == SCHED.budget
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    plain, _ = probed_run(patched(b.patcher, SCHED, reuse="output"), b, N)
    assert not torch.equal(out, plain)
