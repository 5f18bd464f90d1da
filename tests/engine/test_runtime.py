"""The cache runtime without ComfyUI: step plans, sessions and reuse operators."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from otcache_engine import Schedule
from otcache_engine.errors import OTCacheError
from otcache_engine.runtime import CacheSession, StepPlan, make_reuse
from otcache_engine.schedules.transport import schedule_at
from otcache_engine.schedules.warp import crossing_mask, resample
from otcache_engine.runtime.reuse import CacheEntry, with_space


def grid(n: int, top: float = 1.0) -> list[float]:
    return [float(x) for x in np.linspace(top, 0.0, n + 1)]


SCHED = Schedule(10, (0, 1, 2, 5, 9))


# --- StepPlan ---------------------------------------------------------------------------------

def test_identity_when_the_run_matches_the_schedule():
    for ref in (None, grid(10)):
        plan = StepPlan.build(SCHED, grid(10), ref)
        assert plan.mapping == "identity" and plan.compute == SCHED.mask


def test_identity_for_an_index_schedule_on_another_scheduler_same_step_count():
    other = [1.0, 0.97, 0.93, 0.85, 0.7, 0.5, 0.35, 0.2, 0.1, 0.03, 0.0]
    assert StepPlan.build(SCHED, other, grid(10)).compute == SCHED.mask


def test_sigma_schedule_on_another_grid_follows_noise_levels():
    s = SCHED.replace(coord="sigma", sigmas=tuple(grid(10)))
    run = grid(20)
    plan = StepPlan.build(s, run)
    assert plan.mapping == "retarget" and plan.num_steps == 20
    assert plan.budget == pytest.approx(SCHED.budget * 2, abs=1)
    assert plan.compute[0] and plan.compute[-1]


@pytest.mark.parametrize("n", [5, 7, 20, 33])
def test_retarget_keeps_the_speedup(n):
    plan = StepPlan.build(SCHED, grid(n), grid(10))
    assert plan.mapping == "retarget" and plan.num_steps == n
    assert abs(plan.budget - SCHED.budget * n / 10) <= 1
    assert plan.compute[0] and plan.compute[-1]


def test_slices_of_the_schedule_grid_get_their_part_of_the_schedule():
    g = grid(10)
    first = StepPlan.build(SCHED, g[:6], g)
    second = StepPlan.build(SCHED, g[5:], g)
    assert first.mapping == second.mapping == "slice"
    assert first.mask_string() == "###.."
    assert second.mask_string() == "#...#"          # its first step computes: a new run has no cache
    mid = StepPlan.build(SCHED, g[3:], g)
    assert mid.mask_string() == "#.#...#"


def test_slice_on_a_finer_grid_keeps_the_local_compute_fraction():
    g, fine = grid(10), grid(20)
    tail = StepPlan.build(SCHED, fine[6:], g)        # positions 3..10 of the schedule, 2 runs steps each
    inside = sum(SCHED.mask[3:])                      # 2 computed of 7 schedule steps
    assert tail.mapping == "slice" and tail.num_steps == 14
    assert abs(tail.budget - 2 * inside) <= 1
    assert tail.compute[0] and tail.compute[-1]


def test_denoise_below_one_is_a_tail_slice():
    g = grid(10)
    run = [s for s in grid(20) if s <= 0.6 + 1e-12]   # KSampler with denoise 0.6: last steps of a longer run
    plan = StepPlan.build(SCHED, run, g)
    assert plan.mapping == "slice" and plan.compute[0] and plan.compute[-1]
    assert plan.window[0] == pytest.approx(4.0)


def test_two_stage_split_reassembles_the_schedule():
    s = Schedule(20, (0, 1, 2, 3, 5, 7, 10, 13, 16, 19))
    g = grid(20)
    for switch in range(1, 20):
        a = StepPlan.build(s, g[:switch + 1], g)
        b = StepPlan.build(s, g[switch:], g)
        joined = list(a.compute) + list(b.compute)
        expected = list(s.mask)
        expected[switch] = True                       # the second stage restarts with a computed step
        assert joined == expected, switch


def test_resolve_by_sigma():
    plan = StepPlan.build(SCHED, grid(10), None)
    g = grid(10)
    assert [plan.step_of(g[i]) for i in range(10)] == list(range(10))
    assert plan.step_of(g[3] * (1 + 1e-6)) == 3                      # isclose to a grid sigma
    assert plan.step_of((g[3] + g[4]) / 2) == 3                      # inside the interval of step 3
    assert plan.step_of(5.0) == 0 and plan.step_of(0.0) == 9         # outside the grid
    heun = [g[0], g[1], g[1], g[2], g[2], g[3]]                       # predictor / corrector pairs
    assert [plan.step_of(s) for s in heun] == [0, 1, 1, 2, 2, 3]


def test_unordered_and_empty_runs():
    assert StepPlan.build(SCHED, [0.5, 0.8, 0.0], None).all_compute
    empty = StepPlan.build(SCHED, [1.0], None)
    assert empty.num_steps == 0 and empty.step_of(0.5) is None


def test_full_schedule_is_all_compute():
    plan = StepPlan.build(Schedule.full(8), grid(12), None)
    assert plan.all_compute


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.booleans(), min_size=n - 2, max_size=n - 2))))
def test_crossing_mask_is_the_identity_on_the_own_grid(case):
    n, middle = case
    s = Schedule.from_mask([True] + middle + [True])
    assert crossing_mask(s, np.arange(n + 1, dtype=float), True) == s.mask


@settings(max_examples=60, deadline=None)
@given(st.integers(4, 30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.booleans(), min_size=n - 2, max_size=n - 2), st.integers(1, n - 1))))
def test_crossing_mask_on_an_exact_slice_is_the_schedule_there(case):
    n, middle, start = case
    s = Schedule.from_mask([True] + middle + [True])
    got = crossing_mask(s, np.arange(start, n + 1, dtype=float), True)
    expected = list(s.mask[start:])
    expected[0] = True
    assert list(got) == expected


def test_interpolate_and_resample():
    ref, anc = Schedule(10, (0, 1, 2, 3, 4, 6, 9)), Schedule(10, (0, 4, 9))
    assert schedule_at(ref, anc, 7).compute_steps == ref.compute_steps
    assert schedule_at(ref, anc, 5).budget == 5
    r = resample(ref, 4)
    assert r.budget == 4 and r.compute_steps[0] == 0 and r.compute_steps[-1] == 9


# --- reuse operators -------------------------------------------------------------------------

def test_plain_reuse_returns_the_last_value():
    op, e = make_reuse("residual"), CacheEntry()
    v = torch.randn(2, 3)
    op.update(e, v, 4, (2, 3))
    assert op.predict(e, 7) is v and op.space == "residual"
    assert make_reuse("output").space == "output"


def test_omnicache_extrapolates_with_gamma():
    op = make_reuse("omnicache", gamma=0.5)
    e = CacheEntry()
    a, b = torch.full((3,), 1.0), torch.full((3,), 3.0)
    op.update(e, a, 2, (3,))
    assert torch.equal(op.predict(e, 3), a)                  # no earlier computed step yet
    op.update(e, b, 4, (3,))
    # v_c + gamma * (n-c)/(c-c') * (v_c - v_c') = 3 + 0.5 * (3/2) * 2 = 4.5
    assert torch.allclose(op.predict(e, 7), torch.full((3,), 4.5))
    assert torch.equal(op.predict(e, 4), b)                  # at the computed step itself: the fresh value


def test_omnicache_per_step_gamma_and_space():
    op = make_reuse("omnicache", gamma=[0.0, 0.0, 0.0, 1.0, 0.0], space="output")
    e = CacheEntry()
    op.update(e, torch.zeros(2), 0, (2,))
    op.update(e, torch.ones(2), 2, (2,))
    assert torch.allclose(op.predict(e, 3), torch.full((2,), 1.5))
    assert torch.equal(op.predict(e, 4), torch.ones(2))      # gamma 0 there
    assert op.space == "output" and with_space(op, "residual").space == "residual"


@pytest.mark.parametrize("bad", [-0.1, 2.0, [], [0.5, "x"], True])
def test_bad_gamma_is_a_clear_error(bad):
    with pytest.raises(OTCacheError, match="gamma"):
        make_reuse("omnicache", gamma=bad)


def test_unknown_operator_is_a_clear_error():
    with pytest.raises(OTCacheError, match="unknown reuse operator"):
        make_reuse("teacache")


# --- CacheSession ----------------------------------------------------------------------------

def session(schedule=SCHED, n=10, **kw) -> CacheSession:
    return CacheSession(StepPlan.build(schedule, grid(n), None), **kw)


def evaluate(s: CacheSession, sigma: float):
    s.begin_evaluation()
    return s.decide(sigma)


def test_one_decision_per_evaluation_and_first_evaluation_of_a_step_computes():
    s, g = session(), grid(10)
    d = evaluate(s, g[0])
    assert d.compute and d.step == 0 and s.decide(g[5]) is d       # repeated inside the evaluation
    assert not evaluate(s, (g[0] + g[1]) / 2).compute              # second evaluation in step 0
    assert evaluate(s, g[1]).compute and not evaluate(s, g[3]).compute
    assert evaluate(s, g[5]).compute


def test_heun_runs_the_stack_once_per_computed_step():
    s, g = session(), grid(10)
    computed = 0
    for i in range(10):
        sig = [g[i]] + ([g[i + 1]] if i < 9 else [])              # evaluation, then corrector at sigma_{i+1}
        for x in sig:
            computed += evaluate(s, x).compute
    assert computed == SCHED.budget


def test_per_stream_caches_with_batch_composition_changes():
    s, g = session(), grid(10)
    d = evaluate(s, g[0])
    batch = torch.arange(24.0).reshape(2, 3, 4)
    s.store_batch(["c", "u"], batch, d, (2, 3, 4))
    d = evaluate(s, g[3])
    assert torch.equal(s.predict_batch(["c", "u"], d, (2, 3, 4)), batch)
    assert torch.equal(s.predict("u", d, (1, 3, 4)), batch[1:])    # split CFG next time
    assert torch.equal(s.predict_batch(["u", "c"], d, (2, 3, 4)), torch.cat([batch[1:], batch[:1]]))
    assert s.predict("c", d, (1, 5, 4)) is None                    # another token count
    assert s.predict_batch(["c", "new"], d, (2, 3, 4)) is None     # a stream without cache


def test_all_compute_schedule_disables_caching():
    s = session(Schedule.full(10))
    d = evaluate(s, 0.5)
    assert not s.enabled and d.compute and not d.store
    s.store("c", torch.ones(1), d, (1,))
    assert s.predict("c", d, (1,)) is None
    assert "caching off" in s.summary_line()


def test_summary_line_and_counters():
    s, g = session(), grid(10)
    for i in range(10):
        d = evaluate(s, g[i])
        s.note_call(d.compute, d=d)
    s.note_bypass("ControlNet")
    summary = s.summary()
    assert summary["computed_steps"] == 5 and summary["reused_steps"] == 5
    assert s.summary_line().startswith("OTCache: computed 5/10 steps (reused 5), ")
    assert "1 calls uncached (ControlNet)" in s.summary_line()
    assert summary["work_speedup"] == pytest.approx(11 / 6)


def test_close_drops_every_cached_tensor():
    s, g = session(), grid(10)
    d = evaluate(s, g[0])
    value = torch.randn(2, 8, 4)
    ref = weakref.ref(value)
    s.store_batch(["c", "u"], value, d, tuple(value.shape))
    del value
    gc.collect()
    assert ref() is not None
    s.close()
    gc.collect()
    assert ref() is None and s.closed


def test_cpu_cache_device_keeps_values_on_cpu():
    s, g = session(device="cpu"), grid(10)
    d = evaluate(s, g[0])
    s.store("c", torch.ones(2), d, (2,))
    d = evaluate(s, g[3])
    out = s.predict("c", d, (2,), device=torch.device("cpu"))
    assert out.device.type == "cpu" and torch.equal(out, torch.ones(2))
