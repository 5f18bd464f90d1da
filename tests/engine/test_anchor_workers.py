"""Several workers with the same settings on one study (issue #12 item 10): different proposals, no schedule
evaluated twice (finished or in flight), warm starts queued once."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from otcache_engine.search import anchor_search as AS
from otcache_engine.search.anchor_sampler import trial_seed
from otcache_engine.search.study_storage import connect

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import anchor_worker as W  # noqa: E402


class Recorder:
    def __init__(self):
        self.schedules = []

    def __call__(self, schedule, pair):
        self.schedules.append(schedule.compute_steps)
        return W.score(schedule.compute_steps, pair)


def test_workers_with_the_same_seed_propose_different_schedules(tmp_path):
    cfg = W.config(20)
    store = connect(str(tmp_path / "two.journal")).optuna
    first = AS.make_study(cfg, store, "s")     # two workers, each its own study object and sampler
    second = AS.make_study(cfg, store, "s")
    a, b = first.ask(), second.ask()            # both in flight at once, as on two machines
    assert {a.number, b.number} == {0, 1}
    assert AS.suggest_steps(a, cfg) != AS.suggest_steps(b, cfg)
    assert trial_seed(0, 0) != trial_seed(0, 1) and trial_seed(0, 5) == trial_seed(0, 5)


def test_one_worker_stays_reproducible(tmp_path):
    runs = []
    for k in range(2):
        ev = Recorder()
        best = AS.search_anchor(ev, W.config(12), str(tmp_path / f"r{k}.journal"), model_key="toy")
        runs.append((ev.schedules, best.compute_steps))
    assert runs[0] == runs[1]


def test_a_schedule_another_worker_is_evaluating_is_not_evaluated_again(tmp_path):
    journal = str(tmp_path / "claim.journal")
    cfg = W.config(4)
    study = AS.make_study(cfg, connect(journal).optuna, AS.study_name("toy", cfg))
    claimed = (0, 4, 8, 12, 19)
    rival = study.ask()                         # another machine's live trial, evaluating `claimed` right now
    rival.set_user_attr("otcache_owner", {"host": "another-machine", "pid": 1, "start": None, "token": "t"})
    rival.set_user_attr("otcache_heartbeat", time.time())
    rival.set_user_attr("schedule", list(claimed))
    study.enqueue_trial(AS.params_for(claimed, cfg), user_attrs={"target_schedule": list(claimed)})
    ev = Recorder()
    AS.search_anchor(ev, cfg, journal, model_key="toy")
    assert claimed not in ev.schedules
    trials = optuna.load_study(study_name=study.study_name, storage=connect(journal).optuna).trials
    (stepped_back,) = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert stepped_back.user_attrs["duplicate_of"] == rival.number and stepped_back.state == TrialState.FAIL
    assert trials[rival.number].state == TrialState.RUNNING                  # the rival is left alone


def test_warm_starts_are_queued_under_the_storage_lock(tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    import os
    journal = str(tmp_path / "warm.journal")
    held = []
    queue = AS.enqueue_warm_starts

    def probing(study, cfg, starts):
        fd = os.open(journal, os.O_RDONLY)
        try:                                   # another worker's attempt to take the lock now
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        queue(study, cfg, starts)

    monkeypatch.setattr(AS, "enqueue_warm_starts", probing)
    AS.search_anchor(Recorder(), W.config(2), journal, model_key="toy")
    assert held == [True]


def test_a_rival_that_finishes_while_the_claim_is_checked_is_not_missed(tmp_path, monkeypatch):
    """The memo (finished trials) and the claims (running ones) come from one read: with two reads, a rival
    finishing between them is in neither, and its schedule is evaluated a second time."""
    journal = str(tmp_path / "race.journal")
    cfg = W.config(3)
    study = AS.make_study(cfg, connect(journal).optuna, AS.study_name("toy", cfg))
    claimed = (0, 4, 8, 12, 19)
    rival = study.ask()
    rival.set_user_attr("otcache_owner", {"host": "another-machine", "pid": 1, "start": None, "token": "t"})
    rival.set_user_attr("otcache_heartbeat", time.time())
    rival.set_user_attr("schedule", list(claimed))
    study.enqueue_trial(AS.params_for(claimed, cfg), user_attrs={"target_schedule": list(claimed)})
    read = optuna.study.Study.get_trials

    def get_trials(self, deepcopy=True, states=None):
        out = read(self, deepcopy=deepcopy, states=states)
        now = read(self, deepcopy=False)
        mine = [t for t in now if t.state == TrialState.RUNNING and t.number != rival.number
                and tuple(t.user_attrs.get("schedule", ())) == claimed]
        if mine and now[rival.number].state == TrialState.RUNNING:   # the rival finishes right after this read
            self._storage.set_trial_state_values(rival._trial_id, TrialState.COMPLETE, [W.score(claimed, 0)])
        return out

    monkeypatch.setattr(optuna.study.Study, "get_trials", get_trials)
    ev = Recorder()
    AS.search_anchor(ev, cfg, journal, model_key="toy")
    assert claimed not in ev.schedules
