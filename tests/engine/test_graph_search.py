"""Reference schedules: DP vs brute force, invariants, bad inputs."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from otcache_engine.calibration.edge_errors import allowed_edges, e1_weights
from otcache_engine.errors import CalibrationError, InfeasibleBudgetError, ScheduleError
from otcache_engine.schedules.graph_search import (_quantised_ranks, path_edges, prepare_weights, reference_schedule,
                                         reference_schedules, schedule_cost, smallest_feasible_budget)
from otcache_engine.schedules.schedule_io import dumps, loads
from calib_fixtures import make_run


def random_weights(rng, n, L, force_last, levels=(0.25, 0.5, 0.75, 1.0, 1.5), nan_frac=0.0):
    """Tied weights on dyadic levels (exact float sums), 0 on gap-1 edges, +inf off the band."""
    ok = allowed_edges(n, L, force_last)
    w = np.where(ok, rng.choice(levels, size=ok.shape), np.inf)
    idx = np.arange(n)
    w[idx, idx + 1] = np.where(ok[idx, idx + 1], 0.0, np.inf)
    if nan_frac:
        holes = ok & (rng.random(ok.shape) < nan_frac)
        w[holes] = np.nan
    return w


def all_paths(n, K, L, force_last):
    """Every compute set with K nodes (brute force), as tuples."""
    last = n - 1
    for mid in itertools.combinations(range(1, n), K - 1):
        steps = (0,) + mid
        if force_last and steps[-1] != last:
            continue
        gaps = [b - a for a, b in zip(steps, steps[1:])]
        if not force_last:
            gaps.append(n - steps[-1])
        if all(g <= L for g in gaps):
            yield steps


def brute_leximax(w, K, L, force_last, tolerance=None):
    ranks, _ = _quantised_ranks(np.where(np.isnan(w), np.inf, w), tolerance)
    best, best_path = None, None
    n = w.shape[0]
    for steps in all_paths(n, K, L, force_last):
        edges = path_edges(steps, n, force_last)
        if any(not np.isfinite(w[i, j]) for i, j in edges):
            continue
        vec = tuple(sorted((int(ranks[i, j]) for i, j in edges), reverse=True))
        s = 0.0
        for i, j in edges:
            s += float(w[i, j])
        key = (vec, s, tuple(reversed(steps if force_last else steps)))
        # DP tie-break: smaller predecessor of the end first, then of that node, ...
        if best is None or key < best:
            best, best_path = key, steps
    return best_path, best


def brute_numeric(w, K, L, force_last, objective):
    best, paths = math.inf, []
    n = w.shape[0]
    for steps in all_paths(n, K, L, force_last):
        vals = [w[i, j] for i, j in path_edges(steps, n, force_last)]
        if any(not np.isfinite(v) for v in vals):
            continue
        c = max(vals, default=0.0) if objective == "bottleneck" else sum(vals)
        if c < best - 1e-12:
            best, paths = c, [steps]
        elif abs(c - best) <= 1e-12:
            paths.append(steps)
    return best, paths


def check_schedule(s, n, K, L, force_last):
    steps = s.compute_steps
    assert list(steps) == sorted(set(steps))
    assert steps[0] == 0 and len(steps) == min(K, n)
    if force_last:
        assert steps[-1] == n - 1
    gaps = [b - a for a, b in zip(steps, steps[1:])] + ([] if force_last else [n - steps[-1]])
    assert all(1 <= g <= L for g in gaps) or K >= n


small = st.tuples(st.integers(2, 9), st.integers(1, 5), st.booleans(), st.integers(0, 10 ** 6))


@settings(max_examples=60, deadline=None)
@given(small)
def test_leximax_equals_brute_force_with_ties(params):
    n, L, force_last, seed = params
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, L, force_last, nan_frac=0.1 if seed % 3 == 0 else 0.0)
    sched = reference_schedules(w, k_max=n, max_gap=L, objective="leximax", force_last=force_last)
    for K in range(1, n):
        path, key = brute_leximax(w, K, L, force_last)
        if path is None:
            assert K not in sched
            continue
        assert sched[K].compute_steps == path, (K, key)


@settings(max_examples=60, deadline=None)
@given(small)
def test_additive_with_rank_powers_gives_the_leximax_optimum(params):
    """Appendix A: additive DP on weights M**rank reaches the leximax optimum (same path when ranks are distinct)."""
    n, L, force_last, seed = params
    rng = np.random.default_rng(seed)
    distinct = seed % 2 == 0
    if distinct:
        w = random_weights(rng, n, L, force_last, levels=(1.0,))
        fin = np.isfinite(w) & (w > 0)
        w[fin] = rng.permutation(np.arange(1, fin.sum() + 1)) / 4.0      # all caching edges distinct
    else:
        w = random_weights(rng, n, L, force_last)
    ranks, _ = _quantised_ranks(w, None)
    M = n + 1
    enc = np.where(np.isfinite(w), np.power(float(M), np.maximum(ranks, 0)), np.inf)
    lex = reference_schedules(w, k_max=n, max_gap=L, force_last=force_last)
    add = reference_schedules(enc, k_max=n, max_gap=L, objective="additive", force_last=force_last)
    assert set(lex) == set(add)
    for K in lex:
        def vec(s):
            return sorted((int(ranks[i, j]) for i, j in path_edges(s.compute_steps, n, force_last)), reverse=True)
        assert vec(lex[K]) == vec(add[K])
        if distinct:
            assert lex[K].compute_steps == add[K].compute_steps


@settings(max_examples=60, deadline=None)
@given(small, st.sampled_from(["additive", "bottleneck"]))
def test_numeric_objectives_equal_brute_force(params, objective):
    n, L, force_last, seed = params
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, L, force_last, nan_frac=0.1)
    sched = reference_schedules(w, k_max=n, max_gap=L, objective=objective, force_last=force_last)
    for K in range(1, n):
        best, paths = brute_numeric(w, K, L, force_last, objective)
        if not paths:
            assert K not in sched
            continue
        assert sched[K].compute_steps in paths
        assert schedule_cost(w, sched[K], objective) == pytest.approx(best)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.integers(1, 12), st.booleans(), st.sampled_from(["leximax", "additive", "bottleneck"]),
       st.integers(0, 10 ** 6))
def test_every_emitted_schedule_is_valid(n, L, force_last, objective, seed):
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, L, force_last, levels=tuple(rng.random(4)))
    out = reference_schedules(w, max_gap=L, objective=objective, force_last=force_last)
    kmin = smallest_feasible_budget(n, min(L, n), force_last)
    assert min(out) == min(kmin, n) and max(out) == n
    for K, s in out.items():
        check_schedule(s, n, K, L, force_last)
        assert s.kind == "reference" and s.max_gap == L and s.force_last == force_last
        assert loads(dumps(s)) == s                          # provenance is JSON-clean (no inf/NaN)


def test_leximax_prefers_smaller_peak_then_smaller_second():
    # N = 5, K = 3: candidate paths 0-1-4, 0-2-4, 0-3-4
    w = np.full((5, 6), np.inf)
    for i in range(4):
        w[i, i + 1] = 0.0
    w[0, 2], w[2, 4] = 1.0, 1.0               # 0-2-4: (1, 1)
    w[1, 4] = 1.0                             # 0-1-4: (1, 0)
    w[0, 3] = 0.9                             # 0-3-4: (0.9, 0)  <- leximax winner
    assert reference_schedule(w, 3).compute_steps == (0, 3, 4)
    w[0, 3] = 1.0                             # now 0-1-4 (1,0) and 0-3-4 (1,0) tie on ranks and sum
    assert reference_schedule(w, 3).compute_steps == (0, 1, 4)    # smaller predecessor of the end wins
    w[1, 4] = 1.0 + 1e-6                      # within the tolerance: same rank, sum breaks the tie
    assert reference_schedule(w, 3).compute_steps == (0, 3, 4)
    assert reference_schedule(w, 3, tolerance=0.0).compute_steps == (0, 3, 4)
    w[1, 4] = 0.5
    assert reference_schedule(w, 3, objective="bottleneck").compute_steps == (0, 1, 4)
    assert reference_schedule(w, 3, objective="additive").compute_steps == (0, 1, 4)


def test_infeasible_budget_names_smallest_k():
    w = e1_weights(make_run(50, shape=(2, 4)), 7)
    with pytest.raises(InfeasibleBudgetError, match=r"smallest feasible budget is K=8") as info:
        reference_schedule(w, 7, max_gap=7)
    assert info.value.smallest_feasible == 8 == 1 + math.ceil(49 / 7)
    assert "max_gap to 9" in str(info.value)
    with pytest.raises(InfeasibleBudgetError) as info:
        reference_schedules(w, [10, 3, 20])
    assert info.value.smallest_feasible == 8
    assert reference_schedule(w, 8).budget == 8
    out = reference_schedules(w, k_max=12)
    assert sorted(out) == list(range(8, 13))
    with pytest.raises(InfeasibleBudgetError, match="K=8"):
        reference_schedules(w, k_max=5)


def test_infeasible_without_forced_last_uses_sink_bound():
    run = make_run(49, shape=(2, 4))
    w = e1_weights(run, 7, force_last=False)
    with pytest.raises(InfeasibleBudgetError) as info:
        reference_schedule(w, 6, force_last=False)
    assert info.value.smallest_feasible == 7 == math.ceil(49 / 7)
    s = reference_schedule(w, 7, force_last=False)
    assert s.budget == 7 and s.force_last is False and 49 - s.compute_steps[-1] <= 7


def test_budget_at_least_n_is_every_step():
    w = e1_weights(make_run(10), 3)
    for K in (10, 11, 50):
        s = reference_schedule(w, K)
        assert s.compute_steps == tuple(range(10))
    assert reference_schedules(w, [4, 10, 12])[12].budget == 10


def test_nan_weights_are_forbidden_edges():
    w = np.full((6, 7), 1.0)
    w = np.where(allowed_edges(6, 5), w, np.inf)
    for i in range(5):
        w[i, i + 1] = 0.0
    w[0, 5] = 0.0                              # the best K=2 path ... until it is NaN
    assert reference_schedule(w, 2).compute_steps == (0, 5)
    w[0, 5] = np.nan
    with pytest.raises(InfeasibleBudgetError, match="forbidden") as info:
        reference_schedule(w, 2, max_gap=5)
    assert info.value.smallest_feasible == 3
    assert reference_schedule(w, 3).compute_steps in {(0, k, 5) for k in range(1, 5)}
    assert prepare_weights(w)[1] == 4                     # the NaN edge does not count for the inferred L
    w2 = w.copy()
    w2[1:, :] = np.nan                          # nothing leaves step 1+ : only K = N (all steps) is left
    with pytest.raises(InfeasibleBudgetError) as info:
        reference_schedule(w2, 3, max_gap=5)
    assert info.value.smallest_feasible == 6
    assert reference_schedule(w2, 6).budget == 6


def test_bad_inputs():
    w = e1_weights(make_run(8), 3)
    with pytest.raises(CalibrationError, match=r"\(N, N\+1\)"):
        reference_schedule(np.zeros((8, 5)), 4)
    with pytest.raises(CalibrationError, match=r"\(N, N\+1\)"):
        reference_schedule(np.zeros(8), 4)
    with pytest.raises(CalibrationError, match="numeric"):
        reference_schedule([["a"]], 1)
    with pytest.raises(CalibrationError, match=">= 0"):
        reference_schedule(-np.abs(np.nan_to_num(w, posinf=1.0)) - 1, 4)
    with pytest.raises(CalibrationError, match="sink column"):
        reference_schedule(w[:, :8], 4, force_last=False)
    assert reference_schedule(w[:, :8], 4).compute_steps == reference_schedule(w, 4).compute_steps
    with pytest.raises(ScheduleError, match="objective"):
        reference_schedule(w, 4, objective="minimax")
    with pytest.raises(ScheduleError, match="budget"):
        reference_schedule(w, 4.0)
    with pytest.raises(ScheduleError, match="budgets"):
        reference_schedules(w, [0])
    with pytest.raises(ScheduleError, match="k_max"):
        reference_schedules(w, k_max=-1)
    with pytest.raises(ScheduleError, match="max_gap"):
        reference_schedule(w, 4, max_gap=0)
    with pytest.raises(ScheduleError, match="power"):
        reference_schedule(w, 4, objective="additive", power=0)
    with pytest.raises(ScheduleError, match="tolerance"):
        reference_schedule(w, 4, tolerance=-1.0)


def test_max_gap_inferred_and_capped():
    w = e1_weights(make_run(20), 6)
    _, L = prepare_weights(w)
    assert L == 6
    s = reference_schedule(w, 6, max_gap=4)
    assert max(s.gaps) <= 4 and s.max_gap == 4


def test_provenance_and_kind():
    w = e1_weights(make_run(12), 4)
    s = reference_schedule(w, 5, kind="graph", provenance={"model_family": "toy"}, sigmas=make_run(12).sigmas.tolist())
    assert s.kind == "graph" and s.provenance["objective"] == "leximax" and s.provenance["budget"] == 5
    assert s.provenance["model_family"] == "toy" and s.sigmas is not None
    assert s.provenance["max_edge"] == pytest.approx(max(schedule_cost(w, s, "leximax")))
    assert schedule_cost(w, s, "bottleneck") == pytest.approx(s.provenance["max_edge"])
    with pytest.raises(ScheduleError):
        schedule_cost(w, s, "nope")


def test_realistic_leximax_shape():
    """On E1 weights of a curved run the reference keeps the largest edge below uniform's."""
    run = make_run(50, shape=(4, 16), seed=2)
    w = e1_weights(run, 7)
    out = reference_schedules(w, [10, 15, 25])
    from otcache_engine.schedules.baselines import uniform_k
    for K, s in out.items():
        check_schedule(s, 50, K, 7, True)
        u = uniform_k(50, K)
        if max(u.gaps) <= 7:
            assert max(schedule_cost(w, s, "leximax")) <= max(schedule_cost(w, u, "leximax")) + 1e-12
