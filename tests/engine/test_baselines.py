"""Baselines: uniform, MagCache replay (appendix A), TeaCache, FBCache, EasyCache, threshold bisection."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from calib_fixtures import make_run
from otcache_engine.calibration import edge_errors as ee
from otcache_engine.calibration import replay as rp
from otcache_engine.schedules.baselines import (TEACACHE_FLUX_COEFFICIENTS, every_k, magcache_ratios, magcache_schedule,
                                      nearest_interp, uniform_k)
from otcache_engine.schedules.dynamic_baselines import (bisect_threshold, easycache_replay, easycache_schedule,
                                              fbcache_distances, fbcache_schedule, teacache_schedule)
from otcache_engine.calibration.calibration_run import CalibrationRun
from otcache_engine.errors import CalibrationError, InfeasibleBudgetError, ScheduleError
from otcache_engine.schedules.schedule import Schedule

DATA = Path(__file__).resolve().parents[1] / "data"
FLUX_RATIOS = np.loadtxt(DATA / "magcache_flux_ratios.txt", comments="#")


# --- uniform ------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.data())
def test_uniform_k_distinct_and_exact(n, data):
    K = data.draw(st.integers(1, n))
    force_last = data.draw(st.booleans())
    if force_last and K == 1 and n > 1:
        with pytest.raises(InfeasibleBudgetError):
            uniform_k(n, K)
        return
    s = uniform_k(n, K, force_last=force_last)
    assert s.budget == K and s.compute_steps[0] == 0 and s.kind == "uniform"
    if force_last:
        assert s.compute_steps[-1] == n - 1
        if K > 1:
            for k, step in enumerate(s.compute_steps):
                assert step == int(np.floor(k * (n - 1) / (K - 1) + 0.5)) or abs(k * (n - 1) / (K - 1) - step) <= 0.5
    gaps = list(s.gaps) + ([] if force_last else [n - s.compute_steps[-1]])
    assert max(gaps, default=1) - min(gaps, default=1) <= 1          # as even as integers allow
    w = data.draw(st.integers(0, max(0, K - 1)))
    if w:
        sw = uniform_k(n, K, force_last=force_last, warmup=w)
        assert sw.budget == K and sw.compute_steps[:w] == tuple(range(w))


def test_uniform_known_values():
    assert uniform_k(50, 10).compute_steps == (0, 5, 11, 16, 22, 27, 33, 38, 44, 49)
    assert uniform_k(5, 3).compute_steps == (0, 2, 4)
    assert uniform_k(10, 20).compute_steps == tuple(range(10))
    assert uniform_k(50, 10, warmup=4).compute_steps[:4] == (0, 1, 2, 3)
    with pytest.raises(ScheduleError, match="warmup"):
        uniform_k(50, 4, warmup=4)
    with pytest.raises(ScheduleError, match="budget"):
        uniform_k(50, 0)


def test_every_k():
    assert every_k(10, 3).compute_steps == (0, 3, 6, 9)
    assert every_k(11, 3).compute_steps == (0, 3, 6, 9, 10)
    assert every_k(11, 3, force_last=False).compute_steps == (0, 3, 6, 9)
    assert every_k(5, 1).budget == 5


# --- MagCache ---------------------------------------------------------------------------

def test_magcache_flux_defaults_appendix_a():
    assert FLUX_RATIOS.shape == (28,) and FLUX_RATIOS[0] == 1.0
    s = magcache_schedule(FLUX_RATIOS, threshold=0.24, k_max=5, retention=0.1, quirk=True)
    assert s.compute_steps == (0, 1, 2, 5, 9, 11, 17, 23, 26)
    assert s.kind == "magcache" and s.force_last is False and s.budget == 9
    off = magcache_schedule(FLUX_RATIOS, threshold=0.24, k_max=5, retention=0.1, quirk=False)
    assert 11 not in off.compute_steps and off.compute_steps[:5] == (0, 1, 2, 5, 9)


def official_magcache(ratios, num_steps, thresh, K, retention, quirk):
    """Literal transcription of the per-call state machine of MagCache4FLUX/magcache_flux.py (oracle)."""
    if len(ratios) != num_steps:
        ratios = nearest_interp(ratios, num_steps)
    acc_ratio, acc_err, acc_steps = 1.0, 0.0, 0
    computed = []
    for cnt in range(num_steps):
        skip = False
        if cnt >= int(retention * num_steps + 0.5):
            acc_ratio = acc_ratio * ratios[cnt]
            acc_steps += 1
            acc_err += np.abs(1 - acc_ratio)
            q = (not quirk) or np.round(cnt * ((28 - 1) / (num_steps - 1))).astype(int) != 11
            if acc_err <= thresh and acc_steps <= K and q and cnt > 0:
                skip = True
            else:
                acc_ratio, acc_steps, acc_err = 1.0, 0, 0
        if not skip:
            computed.append(cnt)
    return tuple(computed)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 60), st.floats(0.0, 1.0), st.integers(0, 8), st.floats(0.0, 0.5), st.booleans())
def test_magcache_replay_matches_official_logic(n, thresh, K, retention, quirk):
    s = magcache_schedule(FLUX_RATIOS, n, thresh, K, retention, quirk)
    assert s.compute_steps == official_magcache(FLUX_RATIOS, n, thresh, K, retention, quirk)
    gaps = list(s.gaps) + [n - s.compute_steps[-1]]
    assert max(gaps) <= K + 1
    keep = int(retention * n + 0.5)
    assert set(range(min(keep, n))) <= set(s.compute_steps)


def test_nearest_interp_matches_source_indexing():
    out = nearest_interp(FLUX_RATIOS, 50)
    idx = np.round(np.arange(50) * (27 / 49)).astype(int)
    np.testing.assert_array_equal(out, FLUX_RATIOS[idx])
    assert nearest_interp(FLUX_RATIOS, 1).tolist() == [FLUX_RATIOS[-1]]


def test_magcache_from_run():
    run = make_run(10)
    norms = np.abs(np.random.default_rng(0).normal(1.0, 0.1, size=(10, 7)))
    run = CalibrationRun(run.sigmas, run.latents, run.outputs, residual_norms={"img": norms})
    ratios = magcache_ratios(run)
    assert ratios[0] == 1.0 and ratios[3] == pytest.approx(np.mean(norms[3] / norms[2]))
    s = magcache_schedule(run, threshold=0.1, k_max=3, retention=0.2)
    assert s.num_steps == 10 and s.sigmas is not None
    with pytest.raises(CalibrationError, match="neither"):
        magcache_ratios(make_run(5))
    with pytest.raises(CalibrationError, match="stream"):
        magcache_ratios(run, "txt")
    with pytest.raises(CalibrationError, match="finite"):
        magcache_schedule([1.0, np.nan, 1.0])
    with pytest.raises(ScheduleError, match="threshold"):
        magcache_schedule(FLUX_RATIOS, threshold=float("nan"))


# --- TeaCache -----------------------------------------------------------------------------

def test_teacache_rule_by_hand():
    rel = np.array([0.0, 0.1, 0.1, 0.3, 0.05, 0.05, 0.05, 0.05])
    s = teacache_schedule(rel, 0.25, coefficients=(1.0, 0.0))      # poly(x) = x
    # A: 0.1, 0.2, 0.5 -> compute@3; 0.05, 0.1, 0.15, 0.2 ; step 7 forced (official rule)
    assert s.compute_steps == (0, 3, 7) and s.kind == "teacache"
    s2 = teacache_schedule(rel, 0.25, coefficients=(1.0, 0.0), force_last=False)
    assert s2.compute_steps == (0, 3) and s2.force_last is False
    s3 = teacache_schedule(-rel, 0.25, coefficients=(1.0, 0.0), absolute=True)
    assert s3.compute_steps == s.compute_steps
    s4 = teacache_schedule(rel, 0.25, coefficients=(1.0, 0.0), window=(0.2, 0.6))
    assert {0, 1, 5, 6, 7} <= set(s4.compute_steps)


def test_teacache_flux_polynomial_and_monotone_budget():
    run = make_run(28).with_signals(teacache_rel_l1=np.r_[0.0, np.linspace(0.08, 0.2, 27)])
    poly = np.poly1d(TEACACHE_FLUX_COEFFICIENTS)
    assert poly(0.1) == pytest.approx(0.264230861 - 0.382021401 + 0.558554382 - 0.283781631 + 0.0498651651)
    budgets = [teacache_schedule(run, t).budget for t in (0.1, 0.25, 0.4, 0.6, 0.8)]
    assert budgets == sorted(budgets, reverse=True) and budgets[0] > budgets[-1]
    with pytest.raises(CalibrationError, match="teacache_rel_l1"):
        teacache_schedule(make_run(5), 0.3)
    with pytest.raises(CalibrationError, match="NaN"):
        teacache_schedule([0.0, np.nan], 0.3)
    with pytest.raises(CalibrationError, match="1-D"):
        teacache_schedule(np.zeros((2, 2)), 0.3)


# --- FBCache -------------------------------------------------------------------------------

def test_fbcache_matrix_and_consecutive():
    feats = torch.cumsum(torch.ones(8, 4) * 0.05, dim=0) + 1.0
    mat = fbcache_distances(feats)
    assert mat.shape == (8, 8) and np.allclose(np.diag(mat), 0)
    s = fbcache_schedule(mat, threshold=0.12)
    assert s.kind == "fbcache" and s.compute_steps[0] == 0 and s.force_last is False
    # the consecutive approximation with the exact consecutive changes gives an upper bound -> >= K
    consec = np.r_[0.0, [mat[n, n - 1] for n in range(1, 8)]]
    approx = fbcache_schedule(consec, threshold=0.12)
    assert approx.budget >= s.budget
    limited = fbcache_schedule(mat, threshold=10.0, max_hits=2)
    assert limited.compute_steps == (0, 3, 6)
    windowed = fbcache_schedule(mat, threshold=10.0, start=0.5)
    assert windowed.compute_steps == (0, 1, 2, 3)
    forced = fbcache_schedule(mat, threshold=10.0, force_last=True)
    assert forced.compute_steps == (0, 7)
    run = make_run(8).with_signals(fbcache_rel_l1=consec)
    assert fbcache_schedule(run, 0.12).compute_steps == approx.compute_steps
    with pytest.raises(CalibrationError, match=r"\(N, N\)"):
        fbcache_schedule(np.zeros((3, 4)))
    with pytest.raises(CalibrationError, match="NaN"):
        fbcache_schedule(np.array([0.0, np.inf]))


# --- EasyCache ------------------------------------------------------------------------------

def test_easycache_extremes():
    run = make_run(16)
    s, x = easycache_replay(run, threshold=0.0)
    assert s.compute_steps == tuple(range(16))
    torch.testing.assert_close(x, run.latents[-1].double(), rtol=1e-5, atol=1e-5)
    s, _ = easycache_replay(run, threshold=1e9, warmup=3)
    assert s.compute_steps == (0, 1, 2, 15)             # warm-up, then reuse until the forced last step
    assert s.kind == "easycache" and s.sigmas is not None
    with pytest.raises(ScheduleError, match="reuse"):
        easycache_replay(run, reuse="residual")


@pytest.mark.parametrize("reuse, replay_rule", [("transform", "transform"), ("output", "output")])
def test_easycache_closed_loop_agrees_with_replay(reuse, replay_rule):
    run = make_run(20, seed=1)
    sched, x = easycache_replay(run, threshold=0.08, warmup=3, reuse=reuse)
    assert 4 < sched.budget < 20
    torch.testing.assert_close(x, rp.replay(run, sched, replay_rule), rtol=1e-5, atol=1e-5)
    budgets = [easycache_schedule(run, t, warmup=3).budget for t in (0.01, 0.05, 0.1, 0.3)]
    assert budgets[0] >= budgets[-1]


# --- budget matching ---------------------------------------------------------------------------

def test_bisect_threshold_magcache():
    for target in (9, 12, 15, 20):
        m = bisect_threshold(lambda t: magcache_schedule(FLUX_RATIOS, threshold=t, k_max=5, retention=0.1), target,
                             0.0, 0.5)
        assert abs(m.mean_budget - target) <= 1 and m.schedules[0].budget == m.mean_budget
        assert any(t == m.threshold for t, _ in m.evaluations)
    exact = bisect_threshold(lambda t: magcache_schedule(FLUX_RATIOS, threshold=t), 12, 0.0, 0.5)
    assert exact.exact


def test_bisect_threshold_over_several_runs_and_expansion():
    runs = [make_run(20, seed=s) for s in range(3)]

    def rule(t):
        return [easycache_schedule(r, t, warmup=2) for r in runs]

    m = bisect_threshold(rule, 10, 0.0, 0.01)            # hi far too small: expanded
    assert abs(m.mean_budget - 10) <= 1.0 and len(m.schedules) == 3
    assert m.mean_budget == pytest.approx(np.mean([s.budget for s in m.schedules]))
    m2 = bisect_threshold(lambda t: 30 - 10 * t, 25, 0.0, 1.0)     # plain numbers are accepted
    assert m2.threshold == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ScheduleError, match="lo < hi"):
        bisect_threshold(rule, 10, 1.0, 0.5)
    with pytest.raises(ScheduleError, match="Schedule"):
        bisect_threshold(lambda t: "x", 10)
