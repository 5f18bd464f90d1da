"""The forecasting reuse operator (taylor, TaylorSeer arXiv 2503.06923): exactness, short histories, safety,
memory and the cache device."""
from __future__ import annotations

import pytest
import torch

from otcache_engine import Schedule
from otcache_engine.errors import OTCacheError
from otcache_engine.runtime import CacheSession, StepPlan, TaylorOperator, make_reuse
from otcache_engine.runtime.reuse import NAMES, CacheEntry, with_space

# Unequal spacing, as karras or shifted flow schedules make it.
SIGMAS = [1.0, 0.93, 0.81, 0.7, 0.52, 0.41, 0.27, 0.18, 0.08, 0.03, 0.0]
SCHED = Schedule(10, (0, 1, 3, 6, 9))
SHAPE = (2, 5, 4)


def run_session(order: int, trajectory, schedule: Schedule = SCHED, **kw) -> tuple[CacheSession, dict]:
    """Sample ``trajectory(t)`` on SIGMAS: store on computed steps, predict on skipped ones."""
    s = CacheSession(StepPlan.build(schedule, SIGMAS, None), make_reuse("taylor", order=order), **kw)
    predicted = {}
    for i in range(10):
        s.begin_evaluation()
        d = s.decide(SIGMAS[i])
        if d.compute:
            s.store("c", trajectory(SIGMAS[i]), d, SHAPE)
        else:
            predicted[i] = s.predict("c", d, SHAPE)
    return s, predicted


def poly(*coefficients: torch.Tensor):
    return lambda t: sum(c * t ** k for k, c in enumerate(coefficients))


def coefficients(n: int, dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return [torch.randn(SHAPE, generator=g, dtype=torch.float64).to(dtype) for _ in range(n)]


# --- exactness --------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2])
def test_a_polynomial_of_the_order_in_time_is_forecast_exactly_on_unequal_spacing(order):
    f = poly(*coefficients(order + 1))
    s, predicted = run_session(order, f)
    assert sorted(predicted) == [2, 4, 5, 7, 8]
    for i, value in predicted.items():
        if order == 2 and i < 3:
            continue                            # two computed steps so far: order 1 (below)
        assert torch.allclose(value, f(SIGMAS[i]), rtol=0, atol=1e-12), i
    assert s.forecast_fallbacks == 0 and s.summary()["reuse"] == f"taylor(order={order}, residual)"


def test_order_one_is_not_exact_on_a_quadratic_and_the_step_index_is_not_time():
    f = poly(*coefficients(3))
    _, first = run_session(1, f)
    assert not torch.allclose(first[5], f(SIGMAS[5]), atol=1e-6)
    linear = poly(*coefficients(2))             # linear in sigma, not in the step index: omnicache misses it
    op, e = make_reuse("omnicache", gamma=1.0), CacheEntry()
    op.update(e, linear(SIGMAS[1]), 1, SHAPE)
    op.update(e, linear(SIGMAS[3]), 3, SHAPE)
    assert not torch.allclose(op.predict(e, 5), linear(SIGMAS[5]), atol=1e-3)


def test_forecast_weights_follow_newton_on_the_operator_directly():
    op, e = make_reuse("taylor", order=2), CacheEntry()
    for step, t in ((0, 3.0), (1, 2.0), (3, 0.5)):
        op.update(e, torch.tensor([t * t]), step, (1,), t)
    assert op.predict(e, 4, -1.0).item() == pytest.approx(1.0)
    assert op.predict(e, 3, 0.5).item() == pytest.approx(0.25)       # at the computed step: its own value
    assert op.predict(e, 4).item() == pytest.approx(16.0)            # without times the step indices stand in


# --- short histories --------------------------------------------------------------------------

def test_short_histories_fall_back_to_the_lower_order():
    two, one = make_reuse("taylor", order=2), make_reuse("taylor", order=1)
    a, b = CacheEntry(), CacheEntry()
    v0, v1 = torch.full((3,), 1.0), torch.full((3,), 2.0)
    for op, e in ((two, a), (one, b)):
        op.update(e, v0, 0, (3,), 1.0)
    assert two.predict(a, 1, 0.5) is v0                                # one value: plain reuse (order 0)
    for op, e in ((two, a), (one, b)):
        op.update(e, v1, 1, (3,), 0.8)
    assert torch.equal(two.predict(a, 2, 0.4), one.predict(b, 2, 0.4))   # two values: order 1
    assert torch.allclose(two.predict(a, 2, 0.4), torch.full((3,), 4.0))  # 2 + (0.4 - 0.8) * (1 / -0.2)


def test_the_first_skipped_steps_of_a_run_use_what_the_history_allows():
    f = poly(*coefficients(3))
    _, predicted = run_session(2, f, Schedule(10, (0, 2, 5, 9)))
    assert torch.equal(predicted[1], f(SIGMAS[0]))                      # one computed step: its value
    order1 = f(SIGMAS[2]) + (SIGMAS[3] - SIGMAS[2]) * (f(SIGMAS[2]) - f(SIGMAS[0])) / (SIGMAS[2] - SIGMAS[0])
    assert torch.allclose(predicted[3], order1, atol=1e-12)
    assert torch.allclose(predicted[6], f(SIGMAS[6]), atol=1e-12)      # three: exact on a quadratic


def test_a_new_input_shape_or_an_earlier_step_starts_the_history_again():
    op, e = make_reuse("taylor", order=2), CacheEntry()
    for step in range(5):
        op.update(e, torch.full((2,), float(step)), step, (2,), 1.0 - step / 10)
    assert e.steps == (2, 3, 4) and len(e.norms) == 3                # order + 1 values kept, no more
    op.update(e, torch.ones(2), 4, (2,), 0.6)
    assert e.steps == (2, 3, 4) and torch.equal(e.value, torch.ones(2))   # the same step: replaced
    op.update(e, torch.ones(3), 5, (3,), 0.5)
    assert e.steps == (5,)
    op.update(e, torch.ones(3), 1, (3,), 0.9)
    assert e.steps == (1,)
    e.clear()
    assert e.history == () and e.norms == () and e.value is None


# --- safety -----------------------------------------------------------------------------------

def blow_up_session(dtype: torch.dtype, values: tuple[float, float], times: tuple[float, float]):
    sigmas = [times[0], times[1], 0.5, 0.0]
    s = CacheSession(StepPlan.build(Schedule(3, (0, 1), force_last=False), sigmas, None), make_reuse("taylor"))
    for i, v in enumerate(values):
        s.begin_evaluation()
        s.store("c", torch.full((4, 8), v, dtype=dtype), s.decide(sigmas[i]), (4, 8))
    s.begin_evaluation()
    return s, s.decide(0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_forecast_that_blows_up_is_replaced_by_plain_reuse_and_counted(dtype):
    s, d = blow_up_session(dtype, (0.0, 1.0), (1.0, 0.999))           # 1 + 499 * 1: 500x the history's norm
    out = s.predict("c", d, (4, 8))
    assert out.dtype == dtype and torch.equal(out, torch.ones(4, 8, dtype=dtype))
    assert s.forecast_fallbacks == 1 and s.summary()["forecast_fallbacks"] == 1
    assert "1 forecasts refused" in s.summary_line()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_non_finite_forecast_is_replaced_and_counted(dtype):
    big = 6e4 if dtype == torch.float16 else 3e38                      # the extrapolation overflows the dtype
    s, d = blow_up_session(dtype, (big / 2, big), (0.6, 0.55))
    out = s.predict("c", d, (4, 8))
    assert torch.isfinite(out).all() and torch.equal(out, torch.full((4, 8), big, dtype=dtype))
    assert s.forecast_fallbacks == 1
    s2, d2 = blow_up_session(dtype, (1.0, float("nan")), (0.6, 0.55))
    s2.predict("c", d2, (4, 8))
    assert s2.forecast_fallbacks == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_small_finite_forecast_is_used(dtype):
    s, d = blow_up_session(dtype, (1.0, 1.25), (1.0, 0.75))           # linear: 1.5 at 0.5
    out = s.predict("c", d, (4, 8))
    assert out.dtype == dtype and torch.equal(out, torch.full((4, 8), 1.5, dtype=dtype))
    assert s.forecast_fallbacks == 0 and "forecasts refused" not in s.summary_line()


# --- batches, device, names ----------------------------------------------------------------------

def test_batched_streams_forecast_as_their_parts_and_a_stale_group_is_not_used():
    s = CacheSession(StepPlan.build(SCHED, SIGMAS, None), make_reuse("taylor"))
    f, g = poly(*coefficients(3)), poly(*coefficients(3)[::-1])
    for i in range(5):
        s.begin_evaluation()
        d = s.decide(SIGMAS[i])
        if d.compute:
            s.store_batch(["c", "u"], torch.cat([f(SIGMAS[i]), g(SIGMAS[i])]), d, (4, 5, 4))
    both = s.predict_batch(["c", "u"], d, (4, 5, 4))
    assert torch.allclose(both, torch.cat([f(SIGMAS[4]), g(SIGMAS[4])]), atol=1e-12)
    assert torch.allclose(s.predict("u", d, SHAPE), g(SIGMAS[4]), atol=1e-12)
    assert all(e.steps == (0, 1, 3) for e in s._streams.values())


def test_a_group_whose_history_differs_from_its_streams_is_not_used():
    """CFG batched at steps 0, 2, 3 and split at step 1: the group's last two steps match its streams', its
    oldest does not, so the streams' own histories forecast."""
    s = CacheSession(StepPlan.build(Schedule(10, (0, 1, 2, 3, 9)), SIGMAS, None), make_reuse("taylor"))
    f, g = poly(*coefficients(3)), poly(*coefficients(3)[::-1])
    for i in range(4):
        s.begin_evaluation()
        d = s.decide(SIGMAS[i])
        if i == 1:
            s.store("c", f(SIGMAS[i]), d, SHAPE)
            s.store("u", g(SIGMAS[i]), d, SHAPE)
        else:
            s.store_batch(["c", "u"], torch.cat([f(SIGMAS[i]), g(SIGMAS[i])]), d, (4, 5, 4))
    group = s.group(["c", "u"])
    assert group.steps == (0, 2, 3) and s.entry("c").steps == (1, 2, 3)
    assert not s._group_fresh(group, ["c", "u"])
    s.begin_evaluation()
    d = s.decide(SIGMAS[4])
    both = s.predict_batch(["c", "u"], d, (4, 5, 4))
    assert torch.equal(both, torch.cat([s.predict("c", d, SHAPE), s.predict("u", d, SHAPE)]))


def test_histories_follow_the_cache_device_and_forecasts_do_not_change():
    f = poly(*coefficients(3, torch.bfloat16))
    plain, expected = run_session(2, f)
    offload, got = run_session(2, f, device="cpu")
    for entry in offload._streams.values():
        assert all(v.device.type == "cpu" for _, _, v in entry.history)
    assert got.keys() == expected.keys() and all(torch.equal(got[i], expected[i]) for i in got)
    assert all(v.device.type == "cpu" for v in got.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: caches offloaded from it")
def test_offloaded_histories_forecast_on_the_compute_device():
    f = poly(*[c.cuda() for c in coefficients(3, torch.float32)])
    _, expected = run_session(2, f)
    s = CacheSession(StepPlan.build(SCHED, SIGMAS, None), make_reuse("taylor"), device="cpu")
    for i in range(4):
        s.begin_evaluation()
        d = s.decide(SIGMAS[i])
        if d.compute:
            s.store("c", f(SIGMAS[i]), d, SHAPE)
    torch.cuda.synchronize()
    assert all(v.device.type == "cpu" for _, _, v in s.entry("c").history)
    out = s.predict("c", d, SHAPE, device=torch.device("cuda"))
    assert out.device.type == "cuda" and torch.allclose(out, expected[2], atol=1e-5)


def test_make_reuse_names_orders_and_spaces():
    assert "taylor" in NAMES
    op = make_reuse("taylor")
    assert isinstance(op, TaylorOperator) and op.order == 2 and op.history == 3
    assert op.describe() == "taylor(order=2, residual)"
    one = make_reuse("taylor", gamma=0.3, order=1)
    assert one.describe() == "taylor(order=1, residual)" and one.history == 2
    out = with_space(one, "output")
    assert isinstance(out, TaylorOperator) and out.order == 1 and out.space == "output"
    assert make_reuse("taylor", space="output", order=2).describe() == "taylor(order=2, output)"
    assert make_reuse("residual", order=2).describe() == "residual"      # the others ignore the order
    for bad in (0, 3, True, 1.5, "2"):
        with pytest.raises(OTCacheError, match="order"):
            make_reuse("taylor", order=bad)
