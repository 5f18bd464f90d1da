"""OmniCache: curvature scores, exact reuse DP vs brute force, gamma fit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from calib_fixtures import flux_sigmas, make_run
from otcache_engine.calibration.calibration_run import CalibrationRun, derived_signals
from otcache_engine.errors import InfeasibleBudgetError, ScheduleError
from otcache_engine.schedules.omnicache import (brute_force_reuse, curvature_scores, fit_gammas, omnicache_schedule,
                                      reusable_steps, reuse_cost, satisfies_constraints, select_reuse)
from otcache_engine.schedules.schedule import Schedule
from otcache_engine.schedules.schedule_io import dumps, loads

RUNS = [make_run(16, seed=s) for s in range(2)]


def test_curvature_scores():
    for kind, name in [("cos", "curvature_cos"), ("magnitude", "curvature_mag"), ("step", "curvature_step")]:
        k = curvature_scores(RUNS, kind)
        assert k.shape == (16,) and k[0] == math.inf
        expected = np.mean([derived_signals(r)[name] for r in RUNS], axis=0)
        np.testing.assert_allclose(k[1:], expected[1:])
    # recorded signals win over derived ones
    rec = RUNS[0].with_signals(curvature_cos=np.full(16, 0.5))
    assert curvature_scores(rec)[3] == 0.5
    with pytest.raises(ScheduleError, match="curvature kind"):
        curvature_scores(RUNS, "torsion")


def test_constraint_checker():
    assert satisfies_constraints([2, 3, 6], 10, r_max=2, c_min=2)
    assert not satisfies_constraints([2, 3, 4], 10, r_max=2, c_min=1)    # run of 3
    assert not satisfies_constraints([2, 4], 10, r_max=2, c_min=2)       # one compute between runs
    assert satisfies_constraints([1, 3], 10, r_max=1, c_min=1)
    assert not satisfies_constraints([0], 10, 1, 1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 11), r_max=st.integers(1, 3), c_min=st.integers(1, 3), force_last=st.booleans(),
       seed=st.integers(0, 10 ** 6), data=st.data())
def test_dp_equals_brute_force(n, r_max, c_min, force_last, seed, data):
    rng = np.random.default_rng(seed)
    kappa = rng.random(n).round(2)                 # ties on purpose
    kappa[0] = math.inf
    if seed % 4 == 0 and n > 3:
        kappa[rng.integers(1, n)] = np.nan         # a step that cannot be reused
    protected = data.draw(st.lists(st.integers(0, n - 1), max_size=2))
    warmup = data.draw(st.integers(0, 2))
    K = data.draw(st.integers(1, n))
    ok = reusable_steps(n, force_last, protected, warmup)
    ok &= ~np.isnan(kappa)
    best, best_set = brute_force_reuse(np.nan_to_num(kappa, nan=np.inf), K, r_max, c_min, ok)
    if K >= n:
        assert select_reuse(kappa, K, r_max, c_min, protected, warmup, force_last=force_last) == []
        return
    if best_set is None:
        with pytest.raises(InfeasibleBudgetError) as info:
            select_reuse(kappa, K, r_max, c_min, protected, warmup, force_last=force_last)
        # the named budget is feasible and the one below it is not
        kmin = info.value.smallest_feasible
        assert kmin > K
        assert brute_force_reuse(np.nan_to_num(kappa, nan=np.inf), kmin, r_max, c_min, ok)[1] is not None
        if kmin - 1 > K:
            assert brute_force_reuse(np.nan_to_num(kappa, nan=np.inf), kmin - 1, r_max, c_min, ok)[1] is None
        return
    got = select_reuse(kappa, K, r_max, c_min, protected, warmup, force_last=force_last)
    assert len(got) == n - K and got == sorted(set(got))
    assert satisfies_constraints(got, n, r_max, c_min, ok)
    assert reuse_cost(kappa, got) == pytest.approx(best, abs=1e-9)


def test_window_restricts_reuse():
    kappa = np.linspace(1, 0, 20)
    kappa[0] = np.inf
    got = select_reuse(kappa, 15, r_max=2, c_min=1, window=(3, 9))
    assert all(3 <= r <= 9 for r in got) and len(got) == 5
    with pytest.raises(ScheduleError, match="empty"):
        select_reuse(kappa, 15, window=(9, 3))
    with pytest.raises(ScheduleError, match="out of range"):
        select_reuse(kappa, 15, protected=[25])


def test_infeasible_budget_names_smallest():
    kappa = np.ones(10)
    # strict alternation, step 0 and 9 computed: at most 4 reuses -> K >= 6
    with pytest.raises(InfeasibleBudgetError, match="smallest feasible budget is K=6") as info:
        select_reuse(kappa, 5, r_max=1, c_min=1)
    assert info.value.smallest_feasible == 6
    assert len(select_reuse(kappa, 6, r_max=1, c_min=1)) == 4


def test_bad_inputs():
    with pytest.raises(ScheduleError, match="r_max"):
        select_reuse(np.ones(5), 3, r_max=0)
    with pytest.raises(ScheduleError, match="c_min"):
        select_reuse(np.ones(5), 3, c_min=0)
    with pytest.raises(ScheduleError, match="budget"):
        select_reuse(np.ones(5), 0)
    with pytest.raises(ScheduleError, match="1-D"):
        select_reuse(np.ones((2, 2)), 1)
    with pytest.raises(ScheduleError, match=">= 0"):
        select_reuse(-np.ones(5), 3)


def _linear_run(n=10, quad=0.0):
    """v_n = a + n b (+ quad n^2 c): first-order extrapolation in the index is exact when quad = 0."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(6, generator=g, dtype=torch.float64) for _ in range(3))
    v = torch.stack([a + k * b + quad * k * k * c for k in range(n)])
    sig = flux_sigmas(n)
    x = [torch.zeros(6, dtype=torch.float64)]
    for k in range(n):
        x.append(x[-1] + (sig[k + 1] - sig[k]) * v[k])
    return CalibrationRun(sig, torch.stack(x), v)


def test_gamma_is_one_for_linear_outputs():
    run = _linear_run()
    s = Schedule(10, (0, 2, 4, 6, 7, 9))
    g = fit_gammas(run, s)
    assert len(g) == 10
    for n in range(10):
        if s.is_computed(n):
            assert g[n] == 0.0
    # steps 1 (no c' before c = 0) stays 0; 3, 5, 8 have c' and are exactly extrapolated
    assert g[1] == 0.0
    for n in (3, 5, 8):
        assert g[n] == pytest.approx(1.0, abs=1e-6)
    gs = fit_gammas(run, s, per_step=False)
    assert gs[3] == pytest.approx(1.0, abs=1e-6) and gs[1] == 0.0


def test_gamma_clipped_and_zero_for_constant_outputs():
    run = _linear_run(quad=5.0)
    s = Schedule(10, (0, 1, 2, 6, 9))
    g = fit_gammas(run, s)
    assert all(0.0 <= x <= 1.5 for x in g)
    assert max(g) == 1.5                               # strong curvature: clipped
    const = CalibrationRun(flux_sigmas(6), torch.zeros(7, 3), torch.ones(6, 3))
    assert fit_gammas(const, Schedule(6, (0, 1, 3, 5))) == [0.0] * 6
    with pytest.raises(ScheduleError, match="coord"):
        fit_gammas(run, s, coord="time")
    with pytest.raises(ScheduleError, match="has 5 steps"):
        fit_gammas(run, Schedule(5, (0, 4)))


def test_gamma_sigma_coordinate():
    run = _linear_run()
    s = Schedule(10, (0, 2, 4, 9))
    g_idx = fit_gammas(run, s, coord="index")
    g_sig = fit_gammas(run, s, coord="sigma")
    assert g_idx[3] == pytest.approx(1.0, abs=1e-6)
    assert g_sig[3] > 0 and g_sig[3] != pytest.approx(1.0, abs=1e-3)   # sigma steps are not uniform


def test_gamma_reduces_reuse_error_on_real_runs():
    s, g = omnicache_schedule(RUNS, 8, r_max=2, c_min=1)
    for run in RUNS:
        err0 = err1 = 0.0
        for n in range(16):
            if s.is_computed(n):
                continue
            c = s.last_compute(n)
            prior = [k for k in s.compute_steps if k < c]
            if not prior:
                continue
            cp = prior[-1]
            v = run.v.double()
            base = v[c]
            corr = base + g[n] * (n - c) / (c - cp) * (v[c] - v[cp])
            err0 += float(((base - v[n]) ** 2).sum())
            err1 += float(((corr - v[n]) ** 2).sum())
        assert err1 <= err0 + 1e-12


def test_omnicache_schedule():
    s, g = omnicache_schedule(RUNS, 9, r_max=2, c_min=2, warmup=2)
    assert s.kind == "omnicache" and s.budget == 9 and s.num_steps == 16
    assert s.compute_steps[:2] == (0, 1) and s.compute_steps[-1] == 15
    reused = [n for n in range(16) if not s.is_computed(n)]
    assert satisfies_constraints(reused, 16, 2, 2)
    assert len(g) == 16 and all(g[n] == 0.0 for n in s.compute_steps)
    assert list(s.provenance["gammas"]) == pytest.approx(g)
    assert s.sigmas is not None and len(s.sigmas) == 17
    assert loads(dumps(s)) == s
    s2, g2 = omnicache_schedule(RUNS[0], 9, fit_gamma=False, force_last=False)
    assert g2 == [0.0] * 16 and s2.force_last is False
    full, _ = omnicache_schedule(RUNS, 16)
    assert full.budget == 16
