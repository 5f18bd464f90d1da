"""Warps, coordinates and retargeting (method.md §1.4, §5.2, §5.6, appendix A)."""
from __future__ import annotations

import math

import numpy as np
import ot
import pytest
from hypothesis import given, settings, strategies as st

from otcache_engine.errors import InfeasibleBudgetError, ScheduleError
from otcache_engine.schedules.schedule import Schedule
from otcache_engine.schedules.warp import (
    Warp, atomic_w2, index_coordinate, make_coordinate, retarget, sigma_coordinate,
    sigma_positions, tau, w2, xi,
)


def flux_sigmas(n: int, mu: float) -> list[float]:
    s = np.linspace(1.0, 1.0 / n, n)
    return list(np.exp(mu) / (np.exp(mu) + (1.0 / s - 1.0))) + [0.0]


@st.composite
def schedules(draw, min_n=2, max_n=60, force_last=None):
    n = draw(st.integers(min_n, max_n))
    fl = draw(st.booleans()) if force_last is None else force_last
    inner = draw(st.sets(st.integers(1, n - 1), max_size=n))
    steps = {0} | inner | ({n - 1} if fl else set())
    return Schedule(n, tuple(sorted(steps)), force_last=fl)


def assert_valid(s: Schedule, budget: int | None = None) -> None:
    again = Schedule(s.num_steps, s.compute_steps, force_last=s.force_last)  # re-validates
    assert again.compute_steps == s.compute_steps
    if budget is not None:
        assert s.budget == budget
    if s.max_gap is not None:
        assert s.largest_gap <= s.max_gap


# --- coordinates ----------------------------------------------------------------------

def test_index_coordinate():
    chi = index_coordinate(11)
    assert chi(np.array([0, 5, 10, 2.5])) == pytest.approx([0, 0.5, 1, 0.25])
    assert chi.inverse(0.25) == pytest.approx(2.5)
    assert tau(5, 11) == pytest.approx(0.5)
    sink = index_coordinate(10, force_last=False)
    assert sink.span == 10 and sink(10) == 1.0


def test_sigma_coordinate_is_noise_progress():
    sig = flux_sigmas(20, 1.15)
    chi = sigma_coordinate(sig)
    n = np.arange(20)
    expected = (sig[0] - np.asarray(sig[:20])) / (sig[0] - sig[19])
    assert chi(n) == pytest.approx(expected)
    assert xi(n, sig) == pytest.approx(expected)
    assert chi.inverse(chi(n)) == pytest.approx(n)
    assert chi(7.5) == pytest.approx(0.5 * (expected[7] + expected[8]))  # linear between steps
    assert sigma_coordinate(sig, force_last=False)(20) == 1.0  # the sink is sigma_N


def test_bad_sigma_grids():
    with pytest.raises(ScheduleError, match="non-increasing"):
        sigma_coordinate([1.0, 0.5, 0.7, 0.0])
    with pytest.raises(ScheduleError, match="NaN"):
        sigma_coordinate([1.0, float("nan"), 0.0])
    with pytest.raises(ScheduleError, match="needs a sigma grid"):
        make_coordinate("sigma", 10)
    with pytest.raises(ScheduleError, match="expected num_steps"):
        make_coordinate("sigma", 10, sigmas=[1.0, 0.0])
    with pytest.raises(ScheduleError, match="unknown coordinate"):
        make_coordinate("time", 10)


# --- warps ---------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(schedules())
def test_warp_is_monotone_pinned_and_lossless(s):
    phi = Warp.from_schedule(s)
    u = np.linspace(0, 1, 401)
    assert np.all(np.diff(phi(u)) > 0)
    assert phi(0.0) == 0.0 and phi(1.0) == pytest.approx(1.0)
    y = phi.positions(s.budget, index_coordinate(s.num_steps, s.force_last))
    assert y == pytest.approx(s.compute_steps, abs=1e-9)


def test_warp_of_force_last_false_uses_the_sink():
    s = Schedule(10, (0, 2, 4), force_last=False)
    phi = Warp.from_schedule(s)
    assert phi.values == pytest.approx([0, 0.2, 0.4, 1.0])
    assert phi.sample(3) == pytest.approx([0, 0.2, 0.4])


def test_warp_validation():
    with pytest.raises(ScheduleError):
        Warp(np.array([0.0, 0.5]), np.array([0.0, 1.0]))
    with pytest.raises(ScheduleError):
        Warp(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    with pytest.raises(ScheduleError, match="force_last"):
        Warp.from_values([0, 1]).blend(Warp.from_values([0, 1], force_last=False), 0.5)


@settings(max_examples=60, deadline=None)
@given(schedules(force_last=True), schedules(force_last=True), st.floats(0, 1))
def test_blend_is_the_pointwise_mix_and_stays_monotone(a, b, lam):
    pa, pb = Warp.from_schedule(a), Warp.from_schedule(b)
    mix = pa.blend(pb, lam)
    u = np.linspace(0, 1, 257)
    assert mix(u) == pytest.approx((1 - lam) * pa(u) + lam * pb(u), abs=1e-12)
    assert np.all(np.diff(mix(u)) >= -1e-15)


# --- distances -----------------------------------------------------------------------

def test_w2_of_shifted_lines_is_known():
    a = Warp(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    b = Warp(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.25, 1.0]))
    # d(u) = u - phi_b(u) is a tent of height 1/4 at u=1/2: integral of d^2 = 2 * (1/2) * (1/16) / 3
    assert w2(a, b) == pytest.approx(math.sqrt(1 / 48))
    assert w2(a, a) == 0.0


def test_pot_returns_wp_to_the_power_p():
    # Documented check (method.md §5.1): POT 0.9.x returns W_p^p, not W_p.
    assert ot.wasserstein_1d(np.array([0.0]), np.array([2.0]), p=2) == pytest.approx(4.0)


@settings(max_examples=40, deadline=None)
@given(schedules(force_last=True), schedules(force_last=True))
def test_w2_matches_pot_on_continuous_and_atomic_measures(a, b):
    pa, pb = Warp.from_schedule(a), Warp.from_schedule(b)
    m = 4000  # the continuous measure as m equal atoms at quantile mid-points
    u = (np.arange(m) + 0.5) / m
    pot = math.sqrt(ot.wasserstein_1d(pa(u), pb(u), p=2))
    assert w2(pa, pb) == pytest.approx(pot, abs=2e-3)
    ta = np.asarray(a.compute_steps, float) / (a.num_steps - 1)
    tb = np.asarray(b.compute_steps, float) / (b.num_steps - 1)
    assert atomic_w2(ta, tb) == pytest.approx(math.sqrt(ot.wasserstein_1d(ta, tb, p=2)), abs=1e-9)


# --- retargeting -----------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(schedules(), st.sampled_from(["speedup", "budget"]))
def test_retarget_to_the_same_grid_is_the_identity(s, keep):
    assert retarget(s, s.num_steps, keep=keep) is s
    sig = flux_sigmas(s.num_steps, 1.0)
    with_grid = s.replace(sigmas=sig)
    assert retarget(with_grid, s.num_steps, sigmas=sig, keep=keep) is with_grid
    # also through the warp itself (no short cut): sampling at K and projecting gives S back
    assert retarget(with_grid, s.num_steps, sigmas=np.asarray(sig) * (1 + 1e-6)).compute_steps == s.compute_steps


@settings(max_examples=80, deadline=None)
@given(schedules(), st.integers(2, 120), st.sampled_from(["speedup", "budget"]))
def test_retarget_always_gives_a_valid_schedule(s, n, keep):
    r = retarget(s, n, keep=keep)
    assert_valid(r)
    assert r.num_steps == n and r.force_last == s.force_last and r.kind == s.kind
    if keep == "budget":
        assert r.budget == max(min(s.budget, n), 2 if s.force_last else 1)
    else:
        assert r.budget == max(2 if s.force_last else 1, min(n, math.floor(s.budget * n / s.num_steps + 0.5)))
    if r is not s:
        assert r.provenance["retargeted_from"]["num_steps"] == s.num_steps


def test_retarget_keeps_the_shape_and_the_speedup():
    ref = Schedule(50, (*range(11), 12, 15, 18, 20, 25, 30, 35, 39, 42, *range(44, 50)), kind="reference",
                   provenance={"steps": 50, "budget": 26, "source": "x"})
    r = retarget(ref, 100)
    assert r.budget == 52 and r.num_steps == 100
    assert r.provenance["steps"] == 100 and r.provenance["budget"] == 52 and r.provenance["source"] == "x"
    assert r.provenance["retargeted_from"] == {"num_steps": 50, "budget": 26, "coord": "index", "keep": "speedup"}
    head = next(i for i, (a, b) in enumerate(zip(r.compute_steps, r.compute_steps[1:])) if b - a > 1)
    assert 19 <= head <= 23  # the dense head (11 of 50 steps) scales to about 22 of 100
    back = retarget(r, 50)
    assert back.budget == 26 and sum(abs(a - b) for a, b in zip(back.compute_steps, ref.compute_steps)) <= 8


def test_retarget_keeps_the_gap_cap_relative_to_the_uniform_gap():
    # A front-loaded 50-step schedule at 3.85x (cap 8, twice its uniform gap) carried to 30 steps at 3.75x:
    # K falls faster than N, so a cap scaled by the span (5, 1.2x the uniform gap of 8 on 30) flattened it
    # into 0, 1, 4, 9, ..., 29 -- uniform with a wasted start, 3 dB below the free default in the benchmark.
    graph = Schedule(50, (0, 1, 2, 4, 6, 8, 13, 19, 26, 33, 40, 46, 49), max_gap=8)
    r = retarget(graph, 30, budget=8)
    assert r.max_gap == math.ceil(8 * (29 / 7) / (49 / 12))
    assert r.compute_steps == retarget(graph, 30, budget=8, max_gap=29).compute_steps   # the cap does not bind
    gaps = np.diff(r.compute_steps)
    assert list(gaps) == sorted(gaps[:-1]) + [gaps[-1]] and gaps[0] == 1 and gaps.max() > 5
    same_k = retarget(graph, 100, keep="budget")                  # K kept: the same as scaling by the span
    assert same_k.max_gap == math.ceil(8 * 99 / 49)


def test_retarget_in_sigma_follows_noise_levels():
    sig_hi, sig_lo = flux_sigmas(50, 1.15), flux_sigmas(50, 0.5)
    s = Schedule(50, (*range(11), 14, 18, 22, 26, 30, 34, 38, 42, 46, 49), sigmas=sig_hi)
    r = retarget(s, 50, sigmas=sig_lo)
    assert r.sigmas == tuple(sig_lo) and r.budget == s.budget and r.provenance["retargeted_from"]["coord"] == "sigma"
    chi_hi, chi_lo = sigma_coordinate(sig_hi), sigma_coordinate(sig_lo)
    # each computed step lands near the same noise progress as in the source, up to integer projection
    moved = np.abs(chi_lo(np.asarray(r.compute_steps)) - chi_hi(np.asarray(s.compute_steps)))
    index_moved = np.abs(chi_lo(np.asarray(s.compute_steps)) - chi_hi(np.asarray(s.compute_steps)))
    assert moved.mean() < index_moved.mean()
    assert retarget(s, 50, sigmas=sig_lo, coord="index").compute_steps == s.compute_steps


def test_retarget_in_sigma_to_another_step_count():
    """A run with another step count brings a grid of another length; it must not crash the comparison."""
    s = Schedule(50, (*range(11), 14, 18, 22, 26, 30, 34, 38, 42, 46, 49), sigmas=flux_sigmas(50, 1.15))
    r = retarget(s, 30, sigmas=flux_sigmas(30, 1.15))
    assert r.num_steps == 30 and len(r.sigmas) == 31 and r.budget == round(s.budget * 30 / 50)
    assert r.provenance["retargeted_from"]["coord"] == "sigma"
    # the shape survives: the head stays dense (gap 1), the tail is sparse
    steps = r.compute_steps
    assert steps[:4] == (0, 1, 2, 3) and steps[-1] - steps[-2] >= 2


def test_retarget_errors():
    s = Schedule(50, tuple(range(0, 50, 7)))
    with pytest.raises(InfeasibleBudgetError) as e:
        retarget(s, 50, keep="budget", max_gap=3)
    assert e.value.smallest_feasible == 18
    with pytest.raises(ScheduleError, match="keep"):
        retarget(s, 30, keep="both")
    with pytest.raises(ScheduleError, match="target sigma grid has"):
        retarget(s, 30, sigmas=[1.0, 0.0])
    with pytest.raises(ScheduleError, match="num_steps"):
        retarget(s, 0)
    with pytest.raises(ScheduleError, match="needs the target sigma grid"):
        retarget(s.replace(sigmas=flux_sigmas(50, 1.0)), 30, coord="sigma")
    with pytest.raises(ScheduleError, match="carries no sigma grid"):
        retarget(s, 50, sigmas=flux_sigmas(50, 1.0), coord="sigma")  # the schedule has no grid of its own


def test_retarget_from_one_step():
    r = retarget(Schedule(1, (0,)), 10)
    assert r.compute_steps == tuple(range(10))


# --- runs on part of a schedule's grid ------------------------------------------------------

def test_sigma_positions_of_a_slice_are_integers():
    sig = flux_sigmas(50, 1.15)
    pos = sigma_positions(sig, sig[20:36])
    assert pos == pytest.approx(np.arange(20, 36))
    mid = sigma_positions(sig, [0.5 * (sig[3] + sig[4])])
    assert mid == pytest.approx([3.5])
    assert sigma_positions(sig, [2.0, -1.0]) == pytest.approx([0, 50])  # clamped
