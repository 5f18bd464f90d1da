"""Edge weights (E1, E2, global, look-ahead, hybrid) and the zero-call replay."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import otcache_engine.calibration.edge_errors as ee
import otcache_engine.calibration.hybrid as hy
import otcache_engine.calibration.replay as rp
from calib_fixtures import MixtureModel, flux_sigmas, make_run, sample
from otcache_engine.calibration.calibration_run import CalibrationRun
from otcache_engine.errors import CalibrationError, ScheduleError
from otcache_engine.schedules.schedule import Schedule

RUN = make_run(12, seed=0)
RUNS = [make_run(12, seed=s) for s in range(3)]


def naive_e1(run, i, j, relative=True):
    x, v, s = run.x.double(), run.v.double(), run.sigmas
    xh = x[i].clone()
    for n in range(i, j):
        xh = xh + float(s[n + 1] - s[n]) * v[i]
    err = float((xh - x[j]).abs().mean())
    return err / float(x[j].abs().mean()) if relative else err


def naive_e2(run, i, j):
    v = run.v.double()
    return sum(float((v[n] - v[i]).abs().mean()) / float(v[i].abs().mean()) for n in range(i + 1, j))


# --- structure ---------------------------------------------------------------

@pytest.mark.parametrize("force_last", [True, False])
def test_matrix_structure(force_last):
    n, L = 12, 4
    for w in (ee.e1_weights(RUN, L, force_last), ee.e2_weights(RUN, L, force_last)):
        assert w.shape == (n, n + 1)
        assert not np.isnan(w).any()
        for i in range(n):
            for j in range(n + 1):
                allowed = 0 < j - i <= L and (j < n or not force_last)
                assert np.isfinite(w[i, j]) == allowed, (i, j)
                if allowed and j - i == 1:
                    assert w[i, j] == 0.0
                if allowed and j - i >= 2:
                    assert w[i, j] > 0
    assert ee.allowed_edges(n, 100).sum() == sum(range(n))          # L clipped to N


def test_bad_arguments():
    with pytest.raises(ScheduleError, match="max_gap"):
        ee.e1_weights(RUN, 0)
    with pytest.raises(ScheduleError, match="max_gap"):
        ee.allowed_edges(5, 2.5)
    with pytest.raises(CalibrationError, match="E1' or 'E2"):
        ee.local_weights(RUN, 3, kind="E9")
    with pytest.raises(CalibrationError, match="no calibration runs"):
        ee.local_weights([], 3)


# --- E1 / E2 values -------------------------------------------------------------

@pytest.mark.parametrize("relative", [True, False])
def test_e1_matches_naive(relative):
    w = ee.e1_weights(RUN, 5, force_last=False, relative=relative)
    for i in range(12):
        for j in range(i + 2, min(12, i + 5) + 1):
            # the naive form re-integrates the float32-stored x: agreement up to that round-off
            assert w[i, j] == pytest.approx(naive_e1(RUN, i, j, relative), rel=1e-4, abs=1e-7)


def test_e1_chunking_is_exact(monkeypatch):
    run = make_run(10, shape=(40, 64), seed=3)
    whole = ee.e1_weights(run, 6, force_last=False)
    monkeypatch.setattr(ee, "_CHUNK_BYTES", 8 * 11 * 1024)              # forces 3 chunks of 1024 elements
    chunked = ee.e1_weights(run, 6, force_last=False)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)
    e2_chunked = ee.e2_weights(run, 6, force_last=False)
    monkeypatch.undo()
    np.testing.assert_allclose(e2_chunked, ee.e2_weights(run, 6, force_last=False), rtol=1e-12)


def test_e2_matches_naive():
    w = ee.e2_weights(RUN, 5, force_last=False)
    for i in range(12):
        for j in range(i + 2, min(12, i + 5) + 1):
            assert w[i, j] == pytest.approx(naive_e2(RUN, i, j), rel=1e-9)


def test_weights_never_nan_on_degenerate_runs():
    run = CalibrationRun(flux_sigmas(6), torch.zeros(7, 5), torch.zeros(6, 5))
    for w in (ee.e1_weights(run, 3, False), ee.e1_weights(run, 3, True, relative=False),
              ee.e2_weights(run, 3, False)):
        assert not np.isnan(w).any()
        assert (w[np.isfinite(w)] == 0).all()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 14), data=st.data(), seed=st.integers(0, 5))
def test_e1_equals_replay_error(n, data, seed):
    """Appendix A: E1 of an edge == exact final-latent error of a replay caching only that segment."""
    run = make_run(n, shape=(2, 5), seed=seed)
    i = data.draw(st.integers(0, n - 2))
    j = data.draw(st.integers(i + 2, n)) if i + 2 <= n else n
    if j - i < 2:
        return
    L = j - i
    w_plain = ee.e1_weights(run, L, force_last=False, relative=False)
    w_rel = ee.e1_weights(run, L, force_last=False, relative=True)
    mask = rp.segment_mask(n, i, j)
    err = rp.final_error(run, mask)
    assert w_plain[i, j] == pytest.approx(err, rel=1e-9, abs=1e-14)
    xj = float(run.x[j].double().abs().mean())
    assert w_rel[i, j] == pytest.approx(err / xj, rel=1e-9, abs=1e-14)
    if j == n:
        assert w_rel[i, j] == pytest.approx(rp.final_error(run, mask, relative=True), rel=1e-9, abs=1e-14)


def test_local_weights_combination():
    mats = [ee.e1_weights(r, 4) for r in RUNS]
    mean = ee.local_weights(RUNS, 4)
    np.testing.assert_allclose(mean[np.isfinite(mean)], np.mean(mats, axis=0)[np.isfinite(mean)])
    assert np.array_equal(np.isfinite(mean), np.isfinite(mats[0]))
    med = ee.local_weights(RUNS, 4, normalize="median")
    fin = np.isfinite(med) & (med > 0)
    scaled = [m / np.median(m[np.isfinite(m) & (m > 0)]) for m in mats]
    np.testing.assert_allclose(med[fin], np.mean(scaled, axis=0)[fin])
    q = ee.local_weights(RUNS, 4, reduce=0.9)
    mx = ee.local_weights(RUNS, 4, reduce="max")
    assert (q[fin] <= mx[fin] + 1e-15).all() and (q[fin] >= mean[fin] - 1e-3).any()
    assert np.isfinite(ee.local_weights(RUNS, 4, kind="E2", reduce="median")).sum() == np.isfinite(mean).sum()


def test_combine_weights_errors_and_forbidden():
    a = np.array([[np.inf, 0.0, 1.0], [np.inf, np.inf, 0.0]])
    b = a.copy()
    b[0, 2] = np.nan
    out = ee.combine_weights([a, b])
    assert out[0, 2] == np.inf and out[0, 1] == 0.0
    with pytest.raises(CalibrationError, match="same 2-D shape"):
        ee.combine_weights([a, np.zeros((3, 4))])
    with pytest.raises(CalibrationError, match="reduce"):
        ee.combine_weights([a], reduce="sum")
    with pytest.raises(CalibrationError, match="normalize"):
        ee.combine_weights([a], normalize="max")
    with pytest.raises(CalibrationError, match="no weight"):
        ee.combine_weights([])


# --- replay ---------------------------------------------------------------------------

@pytest.mark.parametrize("reuse", ["output", "transform"])
def test_replay_full_schedule_is_exact(reuse):
    out = rp.replay(RUN, Schedule.full(12), reuse)
    assert torch.equal(out, RUN.latents[-1].double())


def test_replay_transform_matches_direct_simulation():
    mask = [1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1]
    x, v, s = RUN.x.double(), RUN.v.double(), RUN.sigmas
    xh = x[0].clone()
    c = 0
    base = None
    for n in range(12):
        if mask[n]:
            c, out = n, v[n]
            base = v[n] - xh
        else:
            out = xh + base
        xh = xh + float(s[n + 1] - s[n]) * out
    # the replay is anchored on the stored (float32) trajectory, the direct loop re-integrates it
    got = rp.replay(RUN, mask, "transform").reshape(-1)
    torch.testing.assert_close(got, xh, rtol=1e-5, atol=1e-5)
    traj = rp.replay(RUN, mask, "transform", return_trajectory=True)
    assert traj.shape == (13, 3, 8)
    torch.testing.assert_close(traj[-1].reshape(-1), got, rtol=0, atol=0)


@pytest.mark.parametrize("reuse", ["output", "transform"])
def test_landing_latent_matches_replay(reuse):
    for i, j in [(0, 2), (3, 7), (8, 12), (5, 6)]:
        traj = rp.replay(RUN, rp.segment_mask(12, i, j), reuse, return_trajectory=True)
        torch.testing.assert_close(rp.landing_latent(RUN, i, j, reuse), traj[j].float(), rtol=1e-6, atol=1e-6)


def test_replay_bad_inputs():
    with pytest.raises(ScheduleError, match="reuse rule"):
        rp.replay(RUN, Schedule.full(12), "residual")
    with pytest.raises(ScheduleError, match="has 5 steps"):
        rp.replay(RUN, Schedule.full(5))
    with pytest.raises(ScheduleError, match="mask of length 12"):
        rp.replay(RUN, [1, 0, 1])
    with pytest.raises(ScheduleError, match="step 0"):
        rp.replay(RUN, [0] + [1] * 11)
    with pytest.raises(ScheduleError, match="out of range"):
        rp.segment_mask(12, 5, 13)
    with pytest.raises(ScheduleError, match="out of range"):
        rp.landing_latent(RUN, 5, 5)


# --- global / look-ahead / hybrid --------------------------------------------------------

@pytest.mark.parametrize("L, edges, calls", [(5, 186, 4420), (7, 273, 6356), (8, 315, 7259), (10, 396, 8940),
                                             (49, 1176, 19600)])
def test_global_job_counts_match_spec_table(L, edges, calls):
    jobs = ee.global_jobs(50, L)
    assert len(jobs) == edges and ee.total_model_calls(jobs) == calls
    assert ee.total_model_calls(ee.lookahead_jobs(50, L)) == edges
    assert all(j.gap >= 2 and j.model_calls == 50 - j.j and j.resume_step == j.i + 1 for j in jobs)
    groups = ee.jobs_by_landing(jobs)
    assert list(groups) == sorted(groups) and all(len(g) <= L - 1 for g in groups.values())


def test_hybrid_job_count():
    every = hy.hybrid_jobs(50, probes=None)
    assert len(every) == 48 and ee.total_model_calls(every) == 1176
    assert all(j.gap == 2 for j in every)
    assert len(hy.hybrid_jobs(50, force_last=False, probes=None)) == 48   # the free sink edge is not a job
    assert hy.hybrid_jobs(2) == []
    probed = hy.hybrid_jobs(50)                                  # the default: 8 probes spread over 2..49
    assert [j.j for j in probed] == list(hy.probe_steps(50)) and len(probed) == hy.HYBRID_PROBES
    assert probed[0].j == 2 and probed[-1].j == 49 and all(j.gap == 2 for j in probed)
    assert ee.total_model_calls(probed) == sum(50 - j.j for j in probed) < 1176 / 3
    assert hy.probe_steps(9) == tuple(range(2, 9))              # few steps: every landing step is probed
    with pytest.raises(CalibrationError, match="at least 2 probes"):
        hy.probe_steps(50, 1)


def _host_tail(run, model, job, reuse="output"):
    """What a host does for one global job: restore x_hat_j, run the model for j..N-1."""
    j, xj = job.start_state(run, reuse)
    xs, _ = sample(model, None, run.sigmas.tolist(), start=j, x_start=xj.double())
    return xs[-1]


def test_global_weights_with_state_independent_model_equal_plain_e1():
    """If the model ignores x, a tail re-run reproduces the stored outputs: global == plain E1."""
    n, L = 10, 4
    sig = flux_sigmas(n)
    table = [torch.randn(2, 3, generator=torch.Generator().manual_seed(k), dtype=torch.float64) for k in range(n)]
    index = {float(s): k for k, s in enumerate(sig[:-1])}

    def model(x, sigma):
        return table[index[float(sigma)]]

    xs, vs = sample(model, torch.randn(2, 3, dtype=torch.float64), sig)
    run = CalibrationRun(sig, torch.stack(xs).float(), torch.stack(vs).float())
    for force_last in (True, False):
        jobs = ee.global_jobs(n, L, force_last)
        results = {job.edge: _host_tail(run, model, job) for job in jobs}
        g = ee.global_weights(run, results, L, force_last)
        e1 = ee.e1_weights(run, L, force_last, relative=False)
        np.testing.assert_allclose(g, e1, rtol=1e-5, atol=1e-7)


def test_global_weights_with_real_model():
    model = MixtureModel((3, 8), seed=0)
    run = make_run(12, model=model)
    L = 4
    jobs = ee.global_jobs(12, L, force_last=False)
    results = {job.edge: _host_tail(run, model, job) for job in jobs}
    g = ee.global_weights(run, results, L, force_last=False)
    for (i, j), xf in list(results.items())[:6]:
        assert g[i, j] == pytest.approx(float((xf - run.latents[-1].double()).abs().mean()), rel=1e-6)
    assert g[10, 12] == pytest.approx(rp.final_error(run, rp.segment_mask(12, 10, 12)), rel=1e-9)
    assert g[11, 12] == 0.0 and np.isinf(g[0, 12])
    rel = ee.global_weights(run, results, L, force_last=False, relative=True)
    np.testing.assert_allclose(rel[np.isfinite(g)], g[np.isfinite(g)] / float(run.latents[-1].abs().mean()),
                               rtol=1e-6)
    # numbers are accepted as precomputed errors
    scalar = {e: float((xf - run.latents[-1].double()).abs().mean()) for e, xf in results.items()}
    np.testing.assert_allclose(ee.global_weights(run, scalar, L, force_last=False), g, rtol=1e-6)


def test_global_weights_bad_results():
    jobs = ee.global_jobs(12, 3)
    full = {job.edge: 0.1 for job in jobs}
    partial = dict(list(full.items())[:-2])
    with pytest.raises(CalibrationError, match="2 global edge result"):
        ee.global_weights(RUN, partial, 3)
    w = ee.global_weights(RUN, partial, 3, allow_missing=True)
    assert np.isinf(w[jobs[-1].i, jobs[-1].j]) and not np.isnan(w).any()
    bad = dict(full)
    bad[jobs[0].edge] = torch.zeros(5)
    with pytest.raises(CalibrationError, match="elements"):
        ee.global_weights(RUN, bad, 3)
    bad[jobs[0].edge] = float("nan")
    with pytest.raises(CalibrationError, match="finite"):
        ee.global_weights(RUN, bad, 3)
    bad[jobs[0].edge] = torch.full((3, 8), float("nan"))
    with pytest.raises(CalibrationError, match="NaN"):
        ee.global_weights(RUN, bad, 3)
    with pytest.raises(CalibrationError, match="dict"):
        ee.global_weights(RUN, [1, 2], 3)
    with pytest.raises(CalibrationError, match="edges"):
        ee.global_weights(RUN, {"ab": 1.0}, 3)


def test_lookahead_weights():
    model = MixtureModel((3, 8), seed=0)
    run = make_run(12, model=model)
    jobs = ee.lookahead_jobs(12, 3, force_last=False)
    assert all(j.model_calls == 1 for j in jobs)
    results = {}
    for job in jobs:
        step, xj = job.start_state(run)
        results[job.edge] = model(xj.double(), float(run.sigmas[step]))
    w = ee.lookahead_weights(run, results, 3, force_last=False)
    i, j = jobs[5].edge
    vj = run.outputs[j].double()
    assert w[i, j] == pytest.approx(float((results[(i, j)] - vj).abs().mean() / vj.abs().mean()), rel=1e-6)
    assert w[10, 12] == pytest.approx(ee.e1_weights(run, 3, False)[10, 12], rel=1e-9)
    assert not np.isnan(w).any() and (w[np.isfinite(w)] >= 0).all()
    with pytest.raises(CalibrationError, match="look-ahead result"):
        ee.lookahead_weights(run, {}, 3)


def test_moving_median():
    a = [1.0, 100.0, 2.0, 3.0, np.nan, 4.0, 5.0]
    out = hy.moving_median(a, 5)
    assert out[2] == 2.5 and out[0] == 2.0 and not np.isnan(out).any()
    assert np.isnan(hy.moving_median([np.nan, np.nan], 1)).all()
    with pytest.raises(CalibrationError):
        hy.moving_median(a, 0)


def test_hybrid_weights():
    local = ee.e1_weights(RUN, 4)
    glob = local * 3.0                                     # a constant amplification ...
    hyb = hy.hybrid_weights(local, glob)
    fin = np.isfinite(local)
    np.testing.assert_allclose(hyb[fin], 3.0 * local[fin])
    assert np.array_equal(np.isfinite(hyb), fin) and not np.isnan(hyb).any()
    # a mapping j -> w_glob(j-2, j) with an outlier is smoothed by the width-5 median
    mapping = {j: 2.0 * local[j - 2, j] for j in range(2, 12)}
    mapping[6] = 1e6 * local[4, 6]
    alpha = hy.hybrid_alpha(local, mapping)
    assert alpha[6] == pytest.approx(2.0) and alpha[11] == pytest.approx(2.0)
    assert hy.hybrid_alpha(local, {})[5] == 1.0                # no data: alpha = 1
    # sparse probes: log-linear between them, constant beyond the ends
    sparse = hy.hybrid_alpha(local, {3: 2.0 * local[1, 3], 7: 8.0 * local[5, 7]})
    assert sparse[3] == pytest.approx(2.0) and sparse[7] == pytest.approx(8.0)
    assert sparse[5] == pytest.approx(4.0) and sparse[2] == pytest.approx(2.0) and sparse[11] == pytest.approx(8.0)
    with pytest.raises(CalibrationError, match="shape"):
        hy.hybrid_weights(local, np.zeros((3, 4)))
    with pytest.raises(CalibrationError, match=r"\(N, N\+1\)"):
        hy.hybrid_weights(np.zeros((3, 3)), {})


def test_hybrid_from_host_gap2_reruns():
    model = MixtureModel((3, 8), seed=1)
    run = make_run(12, model=model)
    jobs = hy.hybrid_jobs(12)
    results = {job.edge: _host_tail(run, model, job) for job in jobs}
    g2 = ee.global_weights(run, results, 2, allow_missing=True)
    local = ee.e1_weights(run, 5)
    g2_full = np.full_like(local, np.inf)
    g2_full[:, :] = np.inf
    for i, j in results:
        g2_full[i, j] = g2[i, j]
    hyb = hy.hybrid_weights(local, g2_full)
    assert np.array_equal(np.isfinite(hyb), np.isfinite(local))
    assert (hyb[np.isfinite(hyb)] >= 0).all()
