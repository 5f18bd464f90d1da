"""The multi-worker anchor search on a real PostgreSQL server (issue #12 items 10-14).

The server is Debian's ``postgresql``, started by the test in a temporary folder on a random loopback port
(``pg_server.py``; installed with apt-get when missing and possible, else every test here skips with the
reason). Workers are separate processes with the README's settings: the same URL (``postgresql://``, no
driver named) and the same ``search_seed``. Nothing here sleeps or times anything it asserts.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import anchor_worker as W  # noqa: E402
import pg_server  # noqa: E402

from otcache_engine.search.anchor_search import finished_count, open_storage  # noqa: E402

TARGET = 40
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def pg():
    server, reason = pg_server.start_server()
    if server is None:
        pytest.skip(f"no PostgreSQL server for the multi-worker tests: {reason}")
    try:
        yield server
    finally:
        server.stop()


ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def spawn(target, *args, **kwargs):
    """A worker process (one BLAS thread: on a shared machine more threads only wait for each other)."""
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args, kwargs=kwargs)
    saved = {name: os.environ.get(name) for name in ONE_THREAD}
    os.environ.update(ONE_THREAD)
    try:
        proc.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return proc


def test_the_readme_url_works_with_the_driver_that_is_installed(pg):
    url = pg.create_database("driver")
    storage = open_storage(url)                     # postgresql://, no driver named (item 12)
    assert storage.url.split("://")[0] in ("postgresql+psycopg", "postgresql+psycopg2")
    assert storage.get_heartbeat_interval() is not None   # Optuna's heartbeat is on (item 13)


def test_workers_starting_together_on_an_empty_database_all_get_the_schema(pg):
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(2):
        url = pg.create_database(f"race{round_}")
        barrier, queue = ctx.Barrier(6), ctx.Queue()
        procs = [spawn(W.open_together, url, barrier, queue) for _ in range(6)]
        results = [queue.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(timeout=120)
        assert results == ["ok"] * 6, results


def test_three_workers_one_killed_and_restarted(pg, tmp_path, record_property):
    ctx = multiprocessing.get_context("spawn")
    url = pg.create_database("three")
    dying, gate = ctx.Event(), ctx.Event()
    logs = [tmp_path / f"worker{k}.log" for k in range(4)]
    start = time.perf_counter()
    killed = spawn(W.database_worker, url, TARGET, str(logs[0]), kill_at=3, dying=dying, gate=gate)
    live = [spawn(W.database_worker, url, TARGET, str(log), dying=dying, gate=gate) for log in logs[1:3]]
    killed.join(timeout=300)
    assert killed.exitcode == -signal.SIGKILL

    study = W.load(url)          # the others wait at the gate: the study is as the kill left it
    before = {t.number: t.value for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    (dead,) = [t for t in study.trials if t.state == TrialState.RUNNING
               and t.user_attrs.get("otcache_owner", {}).get("pid") == killed.pid]
    assert dead.intermediate_values                 # killed mid-trial: pair 0 reported, pair 1 never ran
    # As if its grace period had passed (instead of waiting it out): the dead trial's last Optuna heartbeat.
    pg.execute("three", "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (%s, '2000-01-01') "
               "ON CONFLICT (trial_id) DO UPDATE SET heartbeat = EXCLUDED.heartbeat", dead._trial_id)
    restarted = spawn(W.database_worker, url, TARGET, str(logs[3]), dying=dying, gate=gate)
    gate.set()
    for p in live + [restarted]:
        p.join(timeout=300)
        assert p.exitcode == 0
    wall = time.perf_counter() - start

    study = W.load(url)
    trials = study.trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert TARGET <= finished_count(study) <= TARGET + 3          # each worker stops at the shared total
    assert all(trials[n].state.is_finished() and trials[n].value == v for n, v in before.items())   # none lost
    assert trials[dead.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]   # Optuna's heartbeat
    killed_schedule = tuple(dead.user_attrs["schedule"])
    assert retry.params == dead.params
    if retry.state == TrialState.FAIL:    # it stepped back for a trial that was proposing the same schedule
        done_by = trials[retry.user_attrs["duplicate_of"]]
        assert done_by.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert tuple(done_by.user_attrs["schedule"]) == killed_schedule
    else:
        assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    seen = W.evaluations(logs)
    twice = {key: n for key, n in seen.items() if n > 1 and key != (killed_schedule, 0)}
    assert not twice, twice                                        # no schedule evaluated twice, in flight or not
    assert seen[(killed_schedule, 0)] <= 2 and seen[(killed_schedule, 1)] <= 1
    warm = [t for t in trials if "warm_start" in t.user_attrs and "retry_of" not in t.user_attrs]
    assert len(warm) == 1                                          # queued once, not once per worker

    one_url = pg.create_database("one")
    one_log = tmp_path / "alone.log"
    start = time.perf_counter()
    alone = spawn(W.database_worker, one_url, TARGET, str(one_log))
    alone.join(timeout=300)
    assert alone.exitcode == 0
    wall_one = time.perf_counter() - start
    figures = {"trials": len(finished), "distinct_schedules": len({tuple(t.user_attrs["schedule"]) for t in finished}),
               "evaluated_schedules": len({k for k, _ in seen}), "evaluated_twice": len(twice),
               "memo_hits": sum("memo_of" in t.user_attrs for t in finished),
               "stepped_back": sum("duplicate_of" in t.user_attrs for t in trials),
               "lost_finished": sum(not trials[n].state.is_finished() for n in before),
               "wall_s_3_workers": round(wall, 1), "wall_s_1_worker": round(wall_one, 1),
               "one_worker_distinct": len({tuple(t.user_attrs["schedule"]) for t in W.load(one_url).trials
                                           if "schedule" in t.user_attrs})}
    record_property("figures", figures)
    print("multi-worker figures:", figures)
