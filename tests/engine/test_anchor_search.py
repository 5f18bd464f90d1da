"""The Optuna anchor search on analytic objectives: no model, known optimum, real journal files."""
from __future__ import annotations

import math
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import FixedTrial, TrialState

from otcache_engine import Schedule
from otcache_engine.search.anchor_search import finished_count, open_storage, recover_stale_trials, search_anchor
from otcache_engine.search.anchor_space import (AnchorConfig, default_anchor_gap, params_for, resampled_shape,
                                         suggest_steps, uniform_steps, warm_starts)
from otcache_engine.search.study_storage import describe_storage
from otcache_engine.errors import InfeasibleBudgetError, OTCacheError
from otcache_engine.schedules.projection import is_feasible

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import anchor_worker as W  # noqa: E402


def load(journal: Path, cfg: AnchorConfig | None = None):
    storage = open_storage(str(journal))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


class Counter:
    """evaluate() with the analytic score, counting model 'runs' and seen schedules."""

    def __init__(self, fail_on=None):
        self.calls = 0
        self.schedules = []
        self.fail_on = fail_on

    def __call__(self, schedule: Schedule, pair: int) -> float:
        self.calls += 1
        self.schedules.append(schedule.compute_steps)
        if self.fail_on is not None and self.fail_on(schedule):
            raise RuntimeError("out of memory (simulated)")
        return W.score(schedule.compute_steps, pair)


# --- parametrisations ------------------------------------------------------------

@pytest.mark.parametrize("steps", [(0, 2, 5, 9, 19), (0, 1, 2, 3, 19), (0, 10, 15, 18, 19)])
def test_gap_parameters_reproduce_a_schedule(steps):
    cfg = AnchorConfig(num_steps=20, budget=5, max_gap=19)
    assert suggest_steps(FixedTrial(params_for(steps, cfg)), cfg) == steps


def test_warp_parameters_give_feasible_schedules_close_to_the_source():
    cfg = AnchorConfig(num_steps=40, budget=16)
    assert cfg.kind == "warp"
    source = uniform_steps(40, 16, cfg.gap)
    got = suggest_steps(FixedTrial(params_for(source, cfg)), cfg)
    assert len(got) == 16 and is_feasible(got, 40, cfg.gap)
    assert np.abs(np.subtract(got, source)).max() <= 1
    rng = np.random.default_rng(0)
    for _ in range(20):
        params = {f"z{m}": float(v) for m, v in enumerate(rng.uniform(-2.5, 2.5, 6), start=1)}
        s = suggest_steps(FixedTrial(params), cfg)
        assert len(s) == 16 and is_feasible(s, 40, cfg.gap)


def test_without_forced_last_step_the_last_gap_goes_to_the_sink():
    cfg = AnchorConfig(num_steps=20, budget=5, force_last=False)
    rng = np.random.default_rng(1)
    for _ in range(20):
        params = {f"r{k}": float(v) for k, v in enumerate(rng.uniform(0.05, 1, 5), start=1)}
        s = suggest_steps(FixedTrial(params), cfg)
        assert len(s) == 5 and is_feasible(s, 20, cfg.gap, force_last=False)


def test_config_rejects_bad_budgets_with_a_message():
    assert default_anchor_gap(50, 10) == 12
    with pytest.raises(OTCacheError, match="between 2 and steps-1"):
        AnchorConfig(num_steps=20, budget=20)
    with pytest.raises(InfeasibleBudgetError, match="smallest feasible budget"):
        AnchorConfig(num_steps=50, budget=4, max_gap=7)


def test_identical_warm_starts_become_one_trial_with_both_names():
    cfg = AnchorConfig(num_steps=20, budget=5)
    uniform = uniform_steps(20, 5, cfg.gap)
    assert warm_starts(cfg, graph=uniform) == [("uniform+graph", uniform)]


def test_warm_starts_uniform_graph_and_reference_shape():
    cfg = AnchorConfig(num_steps=50, budget=10)
    ref = Schedule(50, tuple(range(0, 20)) + (26, 33, 36, 42, 49), kind="reference")
    starts = dict(warm_starts(cfg, reference=ref, graph=(0, 1, 3, 7, 14, 21, 28, 35, 42, 49)))
    assert starts["uniform"] == (0, 5, 11, 16, 22, 27, 33, 38, 44, 49)
    assert starts["graph"] == (0, 1, 3, 7, 14, 21, 28, 35, 42, 49)
    # the reference warp at u = j/9 sits at index 24j/9: 0, 2.67, 5.33, 8, 10.67, 13.33, 16, 18.67, then
    # between 33 and 36 (34) and 49; 18.67 -> 34 -> 49 breaks the cap L_a = 12, so the exact projection
    # moves the last two interior points to 25 and 37 (cost 6.33 + 3, the least).
    assert cfg.gap == 12
    assert starts["reference-shape"] == (0, 3, 5, 8, 11, 13, 16, 25, 37, 49)


# --- the search ---------------------------------------------------------------------

def test_search_finds_the_optimum_region(tmp_path):
    ev = Counter()
    cfg = W.config(n_trials=40)
    best = search_anchor(ev, cfg, str(tmp_path / "a.journal"), model_key="toy")
    uniform = uniform_steps(20, 5, cfg.gap)
    assert best.kind == "anchor" and best.budget == 5 and best.num_steps == 20
    assert np.abs(np.subtract(best.compute_steps, W.TARGET)).sum() <= 3
    assert best.provenance["score"] < (W.score(uniform, 0) + W.score(uniform, 1)) / 2
    assert best.provenance["trials"] == 40 and best.provenance["metric"] == "analytic"
    assert best.provenance["study"].startswith("anchor-toy-N20-K5-")


def test_memo_skips_repeated_schedules_and_is_stored_in_the_study(tmp_path):
    ev = Counter()
    cfg = AnchorConfig(num_steps=6, budget=5, n_pairs=1, n_trials=12, metric="analytic")  # only 4 schedules exist
    search_anchor(ev, cfg, str(tmp_path / "m.journal"))
    assert len(set(ev.schedules)) == ev.calls <= 4
    study = load(tmp_path / "m.journal")
    hits = [t for t in study.trials if "memo_of" in t.user_attrs]
    assert len(hits) >= 12 - 4
    for t in hits:
        src = study.trials[t.user_attrs["memo_of"]]
        assert src.user_attrs["schedule"] == t.user_attrs["schedule"] and src.value == t.value


def test_warm_starts_are_enqueued_once_and_run_exactly(tmp_path):
    ev = Counter()
    cfg = W.config(n_trials=5)
    graph = (0, 1, 4, 10, 19)
    ref = Schedule(20, (0, 1, 2, 3, 4, 5, 8, 12, 16, 19), kind="reference")
    journal = str(tmp_path / "w.journal")
    search_anchor(ev, cfg, journal, reference=ref, graph=graph)
    study = load(tmp_path / "w.journal")
    first = {t.user_attrs["warm_start"]: tuple(t.user_attrs["schedule"]) for t in study.trials[:3]}
    assert first == {"uniform": uniform_steps(20, 5, cfg.gap), "graph": graph,
                     "reference-shape": resampled_shape(ref, 20, 5, cfg.gap)}
    search_anchor(ev, W.config(n_trials=8), journal, reference=ref, graph=graph)
    assert sum("warm_start" in t.user_attrs for t in load(tmp_path / "w.journal").trials) == 3


def test_resume_counts_trials_across_calls(tmp_path):
    journal = str(tmp_path / "r.journal")
    first = Counter()
    search_anchor(first, W.config(n_trials=6), journal)
    second = Counter()
    best = search_anchor(second, W.config(n_trials=10), journal)
    assert finished_count(load(tmp_path / "r.journal")) == 10
    assert best.provenance["trials"] == 10
    assert second.calls <= 4 * 2  # only the 4 missing trials ran (2 pairs each, memo may save some)
    third = Counter()
    again = search_anchor(third, W.config(n_trials=10), journal)
    assert third.calls == 0 and again.compute_steps == best.compute_steps


def test_progress_reports_done_total_best(tmp_path):
    seen = []
    search_anchor(Counter(), W.config(n_trials=4), str(tmp_path / "p.journal"),
                  progress=lambda done, total, best: seen.append((done, total, best)))
    assert [d for d, _, _ in seen] == [0, 1, 2, 3, 4]
    assert all(t == 4 for _, t, _ in seen) and seen[0][2] is None
    bests = [b for _, _, b in seen[1:]]
    assert all(a >= b for a, b in zip(bests, bests[1:]))


def test_failed_runs_score_inf_and_the_study_goes_on(tmp_path):
    ev = Counter(fail_on=lambda s: s.compute_steps[1] == 5)  # the uniform warm start fails
    best = search_anchor(ev, W.config(n_trials=8), str(tmp_path / "f.journal"))
    study = load(tmp_path / "f.journal")
    failed = [t for t in study.trials if "failed" in t.user_attrs]
    assert failed and all(t.state == TrialState.COMPLETE and math.isinf(t.value) for t in failed)
    assert "out of memory" in failed[0].user_attrs["failed"]
    assert math.isfinite(best.provenance["score"]) and best.compute_steps[1] != 5


def test_all_runs_failing_is_a_clear_error(tmp_path):
    with pytest.raises(OTCacheError, match="no trial with a finite score.*out of memory"):
        search_anchor(Counter(fail_on=lambda s: True), W.config(n_trials=3), str(tmp_path / "x.journal"))


class Interrupt(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException (an Exception subclass)."""


def test_interrupt_propagates_and_the_trial_is_redone_on_resume(tmp_path):
    journal = str(tmp_path / "i.journal")
    state = {"n": 0}

    def evaluate(schedule, pair):
        state["n"] += 1
        if state["n"] == 4:
            raise Interrupt("stopped by the user")
        return W.score(schedule.compute_steps, pair)

    with pytest.raises(Interrupt):
        search_anchor(evaluate, W.config(n_trials=6), journal, propagate=(Interrupt,))
    study = load(tmp_path / "i.journal")
    (stopped,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert stopped.user_attrs["interrupted"] is True and finished_count(study) == 1
    search_anchor(evaluate, W.config(n_trials=6), journal, propagate=(Interrupt,))
    study = load(tmp_path / "i.journal")
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == stopped.number]
    assert retry.params == stopped.params and retry.state == TrialState.COMPLETE
    assert finished_count(study) == 6


def test_keyboard_interrupt_is_not_swallowed(tmp_path):
    def evaluate(schedule, pair):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search_anchor(evaluate, W.config(n_trials=3), str(tmp_path / "k.journal"))


def test_median_pruning_across_pairs(tmp_path):
    cfg = AnchorConfig(num_steps=20, budget=5, n_pairs=3, n_trials=30, metric="analytic", seed=3)
    ev = Counter()
    search_anchor(ev, cfg, str(tmp_path / "pr.journal"))
    study = load(tmp_path / "pr.journal")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and "memo_of" not in t.user_attrs]
    assert pruned, "no trial was pruned"
    assert all(len(t.user_attrs["pair_scores"]) < 3 for t in pruned)
    assert finished_count(study) == 30


def test_sqlite_url_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'anchor.db'}"
    best = search_anchor(Counter(), W.config(n_trials=4), url)
    assert best.provenance["storage"] == url and best.provenance["trials"] == 4
    assert describe_storage("postgresql://user:secret@db:5432/optuna") == "postgresql://user:***@db:5432/optuna"


def test_a_live_workers_running_trial_is_not_stale(tmp_path):
    from otcache_engine.search import heartbeat as AS
    journal = str(tmp_path / "s.journal")
    search_anchor(Counter(), W.config(n_trials=1), journal)
    study = load(tmp_path / "s.journal")
    mine = study.ask()                      # running in this process right now
    mine.set_user_attr("otcache_run", "r1")
    mine.set_user_attr("otcache_owner", AS.owner())
    AS.ACTIVE.add(("r1", mine.number))
    other = study.ask()                     # another live process on this host
    other.set_user_attr("otcache_owner", {**AS.owner(), "pid": os.getppid(), "start": None, "token": "x"})
    try:
        assert recover_stale_trials(study) == []
    finally:
        AS.ACTIVE.discard(("r1", mine.number))
    assert recover_stale_trials(study) == [mine.number]   # left over by an earlier call of this process
    gone = study.ask()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone.set_user_attr("otcache_owner", {**AS.owner(), "pid": int(dead.stdout), "token": "y"})
    assert recover_stale_trials(study) == [gone.number]
    assert study.trials[other.number].state == TrialState.RUNNING


class BaseInterrupt(BaseException):
    """ComfyUI >= 0.33's InterruptProcessingException derives from BaseException, which Optuna does not catch."""


def test_a_base_exception_interrupt_leaves_no_running_trial_and_one_retry(tmp_path):
    journal = str(tmp_path / "b.journal")
    state = {"n": 0}

    def evaluate(schedule, pair):
        state["n"] += 1
        if state["n"] == 3:
            raise BaseInterrupt()
        return W.score(schedule.compute_steps, pair)

    with pytest.raises(BaseInterrupt):
        search_anchor(evaluate, W.config(n_trials=5), journal, propagate=(BaseInterrupt,))
    study = load(tmp_path / "b.journal")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    (stopped,) = [t for t in study.trials if t.state == TrialState.FAIL]
    search_anchor(evaluate, W.config(n_trials=5), journal)
    study = load(tmp_path / "b.journal")
    assert len([t for t in study.trials if t.user_attrs.get("retry_of") == stopped.number]) == 1
    assert finished_count(study) == 5


# --- crashes and several processes ---------------------------------------------------------------

def test_sigkill_mid_trial_loses_no_completed_trial(tmp_path):
    journal = tmp_path / "kill.journal"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    proc = subprocess.run([sys.executable, str(HERE / "anchor_worker.py"), str(journal), "12", "5"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    before = load(journal)
    running = [t for t in before.trials if t.state == TrialState.RUNNING]
    completed = {t.number: t.value for t in before.trials if t.state == TrialState.COMPLETE}
    assert len(running) == 1 and running[0].intermediate_values  # killed after pair 0 was reported
    assert len(completed) >= 5

    best = W.run(str(journal), 12)
    after = load(journal)
    for number, value in completed.items():
        assert after.trials[number].state == TrialState.COMPLETE and after.trials[number].value == value
    killed = after.trials[running[0].number]
    assert killed.state == TrialState.FAIL and killed.user_attrs.get("stale") is True
    (retry,) = [t for t in after.trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.params == killed.params and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert finished_count(after) == 12 and best.provenance["trials"] == 12


@pytest.mark.timeout(300)
def test_two_processes_share_one_journal(tmp_path):
    journal = str(tmp_path / "shared.journal")
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=W.run, args=(journal, 10), kwargs={"barrier": barrier, "queue": queue, "seed": s})
             for s in (0, 1)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    study = load(Path(journal))
    owners = {t.user_attrs["otcache_owner"]["pid"] for t in study.trials if "otcache_owner" in t.user_attrs}
    assert owners == {p.pid for p in procs}  # both workers ran trials of the one study
    assert 10 <= finished_count(study) <= 11   # each stops at the shared total (one may overshoot by one)
    assert all(r["trials"] >= 10 for r in results)
    assert sum(r["calls"] for r in results) < 2 * 10 * 2  # fewer runs than two separate 10-trial searches
