"""Study storages (issue #12 items 8, 9, 12, 13): bad URLs and damaged journals are one sentence, a torn
journal line is repaired instead of appended to, dead workers' trials are retried on every backend."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from otcache_engine.search import database_url, heartbeat
from otcache_engine.search.anchor_search import finished_count, open_storage, recover_stale_trials, search_anchor
from otcache_engine.errors import OTCacheError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import anchor_worker as W  # noqa: E402


def one_sentence(message: str) -> None:
    assert "\n" not in message and "sqlalche.me" not in message and len(message) < 400, message


def error_of(storage) -> str:
    with pytest.raises(OTCacheError) as e:
        open_storage(storage)
    one_sentence(str(e.value))
    return str(e.value)


def search(storage, n_trials: int, evaluate=None):
    evaluate = evaluate or (lambda s, p: W.score(s.compute_steps, p))
    return search_anchor(evaluate, W.config(n_trials), storage, model_key="toy")


def load(storage):
    store = open_storage(storage)
    (summary,) = optuna.get_all_study_summaries(store)
    return optuna.load_study(study_name=summary.study_name, storage=store)


# --- URLs (item 9) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url, fragment", [
    ("file:///tmp/x.journal", "'file' is not a database SQLAlchemy knows"),
    ("x://y", "'x' is not a database SQLAlchemy knows"),
    ("://nothing", "is not a database URL"),
    ("postgresql+pg8000://u:pw@localhost/db", "driver 'pg8000' is not installed (`pip install pg8000`)"),
    ("sqlite:////nonexistent/folder/anchor.db", "of the SQLite file does not exist"),
    ("sqlite://", "in-memory SQLite database"),
])
def test_bad_urls_are_one_sentence(url, fragment):
    if fragment.startswith("driver 'pg8000'") and database_url._module_present("pg8000"):
        pytest.skip("pg8000 is installed here")
    assert fragment in error_of(url)


def test_an_unreachable_server_is_one_sentence_without_the_password():
    pytest.importorskip("psycopg2", reason="psycopg2-binary (requirements-dev.txt) is not installed")
    message = error_of("postgresql://user:s3cret@127.0.0.1:1/otcache")
    assert "cannot use the database storage 'postgresql://user:***@127.0.0.1:1/otcache'" in message
    assert "s3cret" not in message and "refused" in message.lower()


def test_postgresql_urls_take_whichever_driver_is_installed(monkeypatch):
    present = {"psycopg": False, "psycopg2": True}
    monkeypatch.setattr(database_url, "_module_present", lambda name: present.get(name, False))
    monkeypatch.setattr(database_url, "_dialect_ready", lambda url, shown: None)
    assert database_url.database_url("postgresql://u@h/db").drivername == "postgresql+psycopg2"
    present["psycopg"] = True
    assert database_url.database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    present.update(psycopg=False, psycopg2=False)
    with pytest.raises(OTCacheError, match="no PostgreSQL driver is installed.*psycopg2-binary") as e:
        database_url.database_url("postgresql://u:secret@h/db")
    assert "secret" not in str(e.value)
    assert database_url.database_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"


def test_with_only_psycopg2_installed_the_readme_url_maps_to_it():
    pytest.importorskip("psycopg2", reason="psycopg2-binary (requirements-dev.txt) is not installed")
    if database_url._module_present("psycopg"):
        pytest.skip("psycopg 3 is installed too")
    assert database_url.database_url("postgresql://u@127.0.0.1/db").drivername == "postgresql+psycopg2"


# --- journals (item 8) ------------------------------------------------------------------------------

def test_a_torn_last_line_is_cut_off_and_the_resumed_journal_stays_readable(tmp_path, caplog):
    journal = tmp_path / "torn.journal"
    search(str(journal), 3)
    with open(journal, "ab") as f:
        f.write(b'{"op_code":8,"worker_id":"dead","trial_id":2,"user_attr":{"x"')    # killed mid-write
    with caplog.at_level(logging.WARNING, logger="otcache"):
        best = search(str(journal), 6)
    assert "incomplete last line" in caplog.text and best.provenance["trials"] == 6
    lines = journal.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") and json.loads(line) for line in lines)     # nothing appended onto it
    fresh = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (summary,) = optuna.get_all_study_summaries(fresh)
    assert finished_count(optuna.load_study(study_name=summary.study_name, storage=fresh)) == 6


@pytest.mark.parametrize("line, fragment", [
    (b"garbage\n", "at line 2 (not a JSON line)"),
    (b'\xff\xfe{"op_code": 1}\n', "at line 2 (not UTF-8 text)"),
    (b'{"op_code": 99, "worker_id": "w"}\n', "at line 2 (unknown operation '99'"),
    (b'[1, 2]\n', "at line 2 (not an Optuna journal entry)"),
])
def test_a_damaged_journal_is_one_sentence_with_the_remedy(tmp_path, line, fragment):
    journal = tmp_path / "bad.journal"
    search(str(journal), 1)
    first, rest = journal.read_bytes().split(b"\n", 1)
    journal.write_bytes(first + b"\n" + line + rest)
    message = error_of(str(journal))
    assert fragment in message and str(journal) in message and "move it away" in message


def test_a_folder_is_not_a_journal(tmp_path):
    assert "not a regular file" in error_of(str(tmp_path))


# --- dead workers (item 13) -------------------------------------------------------------------------

def test_journal_trials_show_a_heartbeat_and_silent_ones_on_other_hosts_are_retried(tmp_path):
    journal = str(tmp_path / "beat.journal")
    seen = []

    def evaluate(schedule, pair):
        running = [t for t in load(journal).trials if t.state == TrialState.RUNNING]
        seen.extend(t.user_attrs.get("otcache_heartbeat") for t in running)
        return W.score(schedule.compute_steps, pair)

    search(journal, 2, evaluate)
    assert seen and all(isinstance(b, float) for b in seen)     # written when the trial starts, then every minute
    study = load(journal)
    other = {"host": "another-machine", "pid": 1, "start": None, "token": "t"}
    silent, alive = study.ask(), study.ask()
    for trial, age in ((silent, heartbeat.GRACE_PERIOD + 60), (alive, 5)):
        trial.set_user_attr("otcache_owner", other)
        trial.set_user_attr("otcache_heartbeat", time.time() - age)
    assert recover_stale_trials(study) == [silent.number]       # within minutes, not 3 hours
    assert study.trials[alive.number].state == TrialState.RUNNING
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == silent.number]
    assert retry.state == TrialState.WAITING


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_database_storages_use_optunas_heartbeat_and_retry_dead_trials(tmp_path):
    import sqlalchemy
    url = f"sqlite:///{tmp_path / 'beat.db'}"
    store = open_storage(url)
    assert store.get_heartbeat_interval() == heartbeat.HEARTBEAT_INTERVAL
    assert isinstance(store.get_heartbeat_stale_trial_callback() if hasattr(store, "get_heartbeat_stale_trial_callback")
                      else store.get_failed_trial_callback(), heartbeat.RetryStale)
    study = optuna.create_study(study_name="s", storage=store)
    dead = study.ask()
    dead.set_user_attr("warm_start", "uniform")
    dead.set_user_attr("schedule", [0, 1])
    store.record_heartbeat(dead._trial_id)
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:   # the worker died long ago: age its last heartbeat instead of waiting
        conn.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00'"))
    engine.dispose()
    recover_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[dead.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert retry.system_attrs.get("failed_trial") == dead.number                # Optuna's retry callback
    assert retry.user_attrs == {"warm_start": "uniform", "retry_of": dead.number}   # not the dead claim
