"""OT budget interpolation between a reference and an anchor (method.md §5.3-5.7, appendix A)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from otcache_engine.schedules import schedule_io
from otcache_engine.errors import InfeasibleBudgetError, ScheduleError
from otcache_engine.schedules.projection import smallest_feasible_budget
from otcache_engine.schedules.schedule import Schedule
from otcache_engine.schedules.transport import (
    OTCacheWarning, budget_to_lambda, interpolate, interpolate_many, inverse_k, linear_k, log_k, path_cost,
    w2_distance,
)
from otcache_engine.schedules.warp import Warp, retarget, w2

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
REF = schedule_io.load(DATA / "lemica_flux1_dev_b26.json")
ANC = schedule_io.load(DATA / "lemica_flux1_dev_b10.json")


def flux_sigmas(n: int, mu: float) -> list[float]:
    s = np.linspace(1.0, 1.0 / n, n)
    return list(np.exp(mu) / (np.exp(mu) + (1.0 / s - 1.0))) + [0.0]


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OTCacheWarning)
        return fn(*args, **kwargs)


@st.composite
def pairs(draw, force_last=None):
    """A reference and an anchor on the same N, the anchor with fewer computed steps."""
    n = draw(st.integers(4, 60))
    fl = draw(st.booleans()) if force_last is None else force_last
    def one(size):
        inner = draw(st.sets(st.integers(1, n - 2), min_size=size, max_size=size))
        return Schedule(n, tuple(sorted({0} | inner | ({n - 1} if fl else set()))), force_last=fl)
    k_anc = draw(st.integers(0, n - 3))
    k_ref = draw(st.integers(k_anc + 1, n - 2))
    return one(k_ref), one(k_anc)


def leading_run(s: Schedule) -> int:
    steps = s.compute_steps
    return next((i + 1 for i, (a, b) in enumerate(zip(steps, steps[1:])) if b - a > 1), len(steps))


# --- lambda rules -------------------------------------------------------------------------

@pytest.mark.parametrize("rule", [linear_k, inverse_k, log_k])
def test_rules_pin_the_endpoints_and_decrease_in_k(rule):
    assert rule(26, 26, 10) == pytest.approx(0.0) and rule(10, 26, 10) == pytest.approx(1.0)
    lams = [rule(k, 26, 10) for k in range(10, 27)]
    assert all(a > b for a, b in zip(lams, lams[1:]))


def test_rule_values():
    assert linear_k(18, 26, 10) == pytest.approx(0.5)
    assert inverse_k(15, 25, 10) == pytest.approx((1 / 15 - 1 / 25) / (1 / 10 - 1 / 25))
    assert log_k(15, 25, 10) == pytest.approx(math.log(25 / 15) / math.log(2.5))
    # (b) moves slower near the reference than (c), which moves slower than (a)
    assert inverse_k(20, 26, 10) < log_k(20, 26, 10) < linear_k(20, 26, 10)
    assert budget_to_lambda("linear_k", 12, 10, 10) == 0.0
    with pytest.raises(ScheduleError, match="unknown interpolation rule"):
        budget_to_lambda("cubic", 12, 26, 10)


# --- appendix A invariants ------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(pairs(), st.sampled_from(["linear_k", "inverse_k", "log_k"]))
def test_endpoints_are_exact(pair, rule):
    ref, anc = pair
    assert interpolate(ref, anc, ref.budget, rule=rule).compute_steps == ref.compute_steps
    assert interpolate(ref, anc, anc.budget, rule=rule).compute_steps == anc.compute_steps


@settings(max_examples=60, deadline=None)
@given(pairs(), st.data())
def test_every_emitted_schedule_is_valid(pair, data):
    ref, anc = pair
    gap = max(ref.largest_gap, anc.largest_gap)
    k = data.draw(st.integers(anc.budget, ref.budget))
    s = interpolate(ref, anc, k, rule=data.draw(st.sampled_from(["linear_k", "inverse_k", "log_k"])))
    again = Schedule(s.num_steps, s.compute_steps, force_last=ref.force_last)
    assert again.budget == k and s.kind == "interpolated"
    assert s.largest_gap <= gap == s.max_gap
    assert 0.0 <= s.provenance["lambda"] <= 1.0


@settings(max_examples=40, deadline=None)
@given(pairs(force_last=True), st.integers(2, 60))
def test_any_budget_gives_a_valid_schedule_or_a_clear_error(pair, k):
    ref, anc = pair
    n = ref.num_steps
    if k > n:
        with pytest.raises(InfeasibleBudgetError, match="out of range"):
            interpolate(ref, anc, k)
        return
    s = quiet(interpolate, ref, anc, k)
    assert s.budget == k and Schedule(n, s.compute_steps).largest_gap <= s.max_gap


def test_lemica_every_budget_between_the_two_files():
    gap = max(REF.largest_gap, ANC.largest_gap)
    previous = None
    for k in range(ANC.budget, REF.budget + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # inside the range: no warning at all
            s = interpolate(REF, ANC, k)
        assert s.budget == k and s.largest_gap <= gap
        assert s.provenance["reference"]["budget"] == 26 and s.provenance["anchor"]["budget"] == 10
        assert s.provenance["lambda"] == pytest.approx((26 - k) / 16)
        if previous is not None:
            assert w2_distance(s, REF) >= w2_distance(previous, REF) - 0.02  # moves away from the reference
        previous = s


# --- edge cases ---------------------------------------------------------------------------------

def test_outside_the_range_lambda_is_clamped_with_a_warning():
    with pytest.warns(OTCacheWarning, match="outside \\[10, 26\\]"):
        s = interpolate(REF, ANC, 30)
    assert s.provenance["lambda"] == 0.0 and s.budget == 30
    with pytest.warns(OTCacheWarning, match="outside"):
        s = interpolate(REF, ANC, 9)
    assert s.provenance["lambda"] == 1.0 and s.budget == 9


def test_auto_gap_is_raised_with_a_warning_when_the_budget_needs_it():
    with pytest.warns(OTCacheWarning) as record:
        s = interpolate(REF, ANC, 5)
    messages = [str(w.message) for w in record]
    assert any("max gap raised to 13" in m for m in messages) and any("outside" in m for m in messages)
    assert s.budget == 5 and s.max_gap == 13 and s.largest_gap <= 13


def test_explicit_max_gap_is_strict():
    with pytest.raises(InfeasibleBudgetError) as e:
        quiet(interpolate, REF, ANC, 7, max_gap=7)
    assert e.value.smallest_feasible == 8 and "smallest feasible budget is 8" in str(e.value)
    s = interpolate(REF, ANC, 15, max_gap=5)
    assert s.largest_gap <= 5 and s.max_gap == 5


def test_full_and_two_step_budgets():
    assert quiet(interpolate, REF, ANC, 50).compute_steps == tuple(range(50))
    assert quiet(interpolate, REF, ANC, 2).compute_steps == (0, 49)
    with pytest.raises(InfeasibleBudgetError, match="smallest feasible budget is 2"):
        quiet(interpolate, REF, ANC, 1)
    with pytest.raises(InfeasibleBudgetError, match="out of range"):
        quiet(interpolate, REF, ANC, 51)
    with pytest.raises(InfeasibleBudgetError, match="positive integer"):
        interpolate(REF, ANC, 0)


def test_mismatched_endpoints():
    other = Schedule(30, (0, 5, 10, 29))
    with pytest.raises(ScheduleError, match="pass num_steps"):
        interpolate(REF, other, 12)
    with pytest.raises(ScheduleError, match="force_last"):
        interpolate(REF, Schedule(50, (0, 7, 14), force_last=False), 12)


def test_num_steps_retargets_both_endpoints():
    s = interpolate(REF, ANC, 10, num_steps=30)
    assert s.num_steps == 30 and s.budget == 10
    ref30, anc30 = retarget(REF, 30), retarget(ANC, 30)
    assert interpolate(REF, ANC, ref30.budget, num_steps=30).compute_steps == ref30.compute_steps
    assert interpolate(REF, ANC, anc30.budget, num_steps=30).compute_steps == anc30.compute_steps
    mixed = interpolate(REF, Schedule(30, (0, 1, 3, 8, 13, 18, 23, 29)), 12, num_steps=30)
    assert mixed.num_steps == 30 and mixed.budget == 12


def test_identical_endpoints_make_lambda_irrelevant():
    s = interpolate(REF, REF, 26)
    assert s.compute_steps == REF.compute_steps
    with pytest.warns(OTCacheWarning):
        assert interpolate(REF, REF, 20).budget == 20


@settings(max_examples=40, deadline=None)
@given(pairs(force_last=False))
def test_endpoints_are_exact_without_force_last(pair):
    ref, anc = pair
    assert interpolate(ref, anc, ref.budget).compute_steps == ref.compute_steps
    assert interpolate(ref, anc, anc.budget).compute_steps == anc.compute_steps
    mid = interpolate(ref, anc, (ref.budget + anc.budget) // 2)
    assert not mid.force_last and mid.largest_gap <= mid.max_gap


def test_sigma_coordinate_endpoints_and_grid():
    sig = flux_sigmas(50, 1.15)
    ref, anc = REF.replace(sigmas=sig), ANC.replace(sigmas=sig)
    assert interpolate(ref, anc, 26, coord="sigma").compute_steps == REF.compute_steps
    assert interpolate(ref, anc, 10, coord="sigma").compute_steps == ANC.compute_steps
    s = interpolate(ref, anc, 15, coord="sigma")
    assert s.coord == "sigma" and s.sigmas == tuple(sig) and s.budget == 15
    with pytest.raises(ScheduleError, match="sigma grid"):
        interpolate(REF, ANC, 15, coord="sigma")


# --- the OT geometry -----------------------------------------------------------------------

def test_displacement_moves_the_dense_head_instead_of_superposing():
    n = 50
    long_head = Schedule(n, (*range(20), 25, 31, 37, 43, 49))   # K=25, head of 20
    short_head = Schedule(n, (*range(4), 10, 17, 24, 31, 38, 44, 49))  # K=11, head of 4
    mid = interpolate(long_head, short_head, 18)
    assert 4 < leading_run(mid) < 20  # a head of intermediate length ...
    tail = np.diff(mid.compute_steps[leading_run(mid):])
    assert np.all(tail >= 2)  # ... followed by sparse steps, not a second dense block


@settings(max_examples=40, deadline=None)
@given(pairs(force_last=True), st.floats(0, 1))
def test_blended_warp_lies_on_the_w2_geodesic(pair, lam):
    ref, anc = pair
    a, b = Warp.from_schedule(ref), Warp.from_schedule(anc)
    mid = a.blend(b, lam)
    total = w2(a, b)
    assert w2(a, mid) == pytest.approx(lam * total, abs=1e-9)
    assert w2(mid, b) == pytest.approx((1 - lam) * total, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(pairs(), pairs())
def test_w2_distance_is_a_metric(p, q):
    a, b = p
    c = q[0]
    assert w2_distance(a, a) == 0.0
    assert w2_distance(a, b) == pytest.approx(w2_distance(b, a))
    assume(a.force_last == c.force_last)
    assert w2_distance(a, c) <= w2_distance(a, b) + w2_distance(b, c) + 1e-12


# --- predicted-error rule ---------------------------------------------------------------------

def front_loaded_weights(n: int) -> np.ndarray:
    """Reusing early is expensive (LeMiCa's observation): w_ij = (j-i-1) * (n-i)^2."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.where(j > i, (j - i - 1) * (n - i) ** 2.0, np.inf)


@pytest.mark.parametrize("objective", ["leximax", "additive"])
def test_predicted_error_picks_the_cheapest_lambda_on_the_grid(objective):
    cost = path_cost(front_loaded_weights(50), objective)
    grid = np.linspace(0, 1, 21)
    best = interpolate(REF, ANC, 15, rule="predicted_error", cost=cost, lambda_grid=grid)
    lam = best.provenance["lambda"]
    assert lam in grid and best.provenance["rule"] == "predicted_error"
    for x in grid:
        s = interpolate(REF, ANC, 15, rule="predicted_error", cost=cost, lambda_grid=[x])
        assert cost(best.compute_steps) <= cost(s.compute_steps)
        if x < lam:
            assert cost(best.compute_steps) < cost(s.compute_steps)  # ties go to the smaller lambda


def test_predicted_error_pins_endpoints_and_needs_a_cost():
    cost = path_cost(front_loaded_weights(50))
    assert interpolate(REF, ANC, 26, rule="predicted_error", cost=cost).compute_steps == REF.compute_steps
    assert interpolate(REF, ANC, 10, rule="predicted_error", cost=cost).compute_steps == ANC.compute_steps
    with pytest.raises(ScheduleError, match="needs a cost"):
        interpolate(REF, ANC, 15, rule="predicted_error")


def test_path_cost():
    w = np.full((5, 5), np.nan)
    w[0, 2], w[2, 4], w[0, 1], w[1, 4] = 3.0, 1.0, 9.0, 2.0
    assert path_cost(w, "leximax")((0, 2, 4)) == (3.0, 1.0)
    assert path_cost(w, "additive")((0, 2, 4)) == 4.0
    assert path_cost(w, "leximax")((0, 1, 4)) == (2.0, 0.0)  # gap-1 edges weigh 0
    assert path_cost(w, "additive")((0, 3, 4)) == math.inf  # missing edge: forbidden
    with pytest.raises(ScheduleError):
        path_cost(w, "median")


# --- several anchors ----------------------------------------------------------------------------

def test_interpolate_many_is_a_piecewise_geodesic():
    mid = Schedule(50, (0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 27, 34, 41, 47, 49), kind="anchor")  # LeMiCa B=15
    schedules = [ANC, REF, mid]  # any order
    for s in schedules:
        assert interpolate_many(schedules, s.budget).compute_steps == s.compute_steps
    upper = interpolate_many(schedules, 20)
    assert upper.provenance["reference"]["budget"] == 26 and upper.provenance["anchor"]["budget"] == 15
    lower = interpolate_many(schedules, 12)
    assert lower.provenance["reference"]["budget"] == 15 and lower.provenance["anchor"]["budget"] == 10
    assert lower.compute_steps == interpolate(mid, ANC, 12).compute_steps
    with pytest.warns(OTCacheWarning):
        assert interpolate_many(schedules, 8).provenance["anchor"]["budget"] == 10


def test_interpolate_many_errors():
    with pytest.raises(ScheduleError, match="at least two"):
        interpolate_many([REF], 20)
    with pytest.raises(ScheduleError, match="share a budget"):
        interpolate_many([REF, ANC, REF.replace(kind="custom")], 20)


def test_provenance_records_the_endpoints():
    s = interpolate(REF, ANC, 18)
    p = s.provenance
    assert p["source"] == "otcache interpolation" and p["budget"] == 18 and p["steps"] == 50
    assert p["model_family"] == "flux" and "preset" not in p
    assert p["reference"]["source"] == "LeMiCa released schedule"
    back = schedule_io.loads(schedule_io.dumps(s))
    assert back == s and back.provenance["lambda"] == pytest.approx(0.5)
