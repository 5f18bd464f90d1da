"""Telling a dead worker's trial from a live one within minutes, on every storage.

A trial stays RUNNING when its worker dies (SIGKILL, power loss, a machine gone). Until it is failed and
queued again, the study never evaluates that schedule and no worker may claim it.

- RDB storages use Optuna's own heartbeat: ``heartbeat_interval`` and ``grace_period`` on the storage, with
  a stale-trial callback (``RetryStale``, around Optuna's retry callback) that queues the dead trial again.
  ``Study.optimize`` beats and fails stale trials by itself.
- Journal files have no heartbeat in Optuna. The equivalent: while a trial runs, a thread writes the time
  into its ``otcache_heartbeat`` attribute every ``HEARTBEAT_INTERVAL`` seconds; a trial whose worker is
  gone on this host (its pid dead or reused) is stale at once, one on another host once it has been silent
  for ``GRACE_PERIOD`` seconds. ``anchor_search.recover_stale_trials`` fails and queues those.
"""
from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
import time
import uuid
import warnings
from typing import Any

log = logging.getLogger("otcache")

HEARTBEAT_INTERVAL = 60      # seconds between two beats of a running trial
GRACE_PERIOD = 180           # seconds of silence after which a trial's worker counts as dead
MAX_RETRY = 3                # how often one trial is queued again after its worker died
CARRIED = ("warm_start", "target_schedule")
PROCESS_TOKEN = uuid.uuid4().hex
ACTIVE: set[tuple[str, int]] = set()   # (run id, trial number) of the trials this process is running now


# --- who is running a trial ---------------------------------------------------------------------------

def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def owner() -> dict[str, Any]:
    """This worker, as recorded in the trials it runs."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _proc_start(pid), "token": PROCESS_TOKEN}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def active_key(trial: Any) -> tuple[str, int]:
    return (str(trial.user_attrs.get("otcache_run", "")), int(trial.number))


def is_stale(trial: Any, grace_period: float = GRACE_PERIOD) -> bool:
    """A RUNNING trial nobody works on: its process is gone (same host) or it has been silent too long."""
    who = trial.user_attrs.get("otcache_owner")
    if isinstance(who, dict) and who.get("host") == socket.gethostname():
        pid = int(who.get("pid", -1))
        if pid == os.getpid():
            return who.get("token") != PROCESS_TOKEN or active_key(trial) not in ACTIVE
        if not _pid_alive(pid):
            return True
        start = _proc_start(pid)
        return start is not None and who.get("start") is not None and start != who.get("start")
    beat = trial.user_attrs.get("otcache_heartbeat")
    last = beat if isinstance(beat, (int, float)) else (
        trial.datetime_start.timestamp() if trial.datetime_start else None)
    return last is not None and time.time() - last > grace_period


def carried_attrs(trial: Any) -> dict[str, Any]:
    """What a trial queued again keeps of the one it replaces."""
    keep = {k: trial.user_attrs[k] for k in CARRIED if k in trial.user_attrs}
    keep["retry_of"] = trial.number
    return keep


# --- RDB: Optuna's heartbeat ------------------------------------------------------------------------

class RetryStale:
    """Optuna's stale-trial retry, queueing only the attributes a retry should keep (not the dead trial's
    schedule claim, owner or scores)."""

    def __init__(self, max_retry: int = MAX_RETRY):
        import optuna
        cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
            or optuna.storages.RetryFailedTrialCallback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._retry = cls(max_retry=max_retry)

    def __call__(self, study: Any, trial: Any) -> None:
        trial.user_attrs = carried_attrs(trial)
        self._retry(study, trial)
        log.warning("[OTCache] anchor search: trial %d lost its worker (no heartbeat within the grace period); "
                    "queued again", trial.number)


def rdb_heartbeat(interval: float = HEARTBEAT_INTERVAL, grace_period: float = GRACE_PERIOD) -> dict[str, Any]:
    """RDBStorage keyword arguments that turn Optuna's heartbeat on (the callback's name depends on Optuna)."""
    import optuna
    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    name = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    return {"heartbeat_interval": max(1, int(interval)), "grace_period": max(1, int(grace_period)),
            name: RetryStale()}


# --- journal: the equivalent ------------------------------------------------------------------------

class Beat:
    """While entered, writes the time into the trial's ``otcache_heartbeat`` every ``interval`` seconds."""

    def __init__(self, storage: Any, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otcache-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.set_trial_user_attr(self.trial_id, "otcache_heartbeat", time.time())
            except Exception:  # noqa: BLE001 - the trial finished meanwhile, or the file is busy: next beat
                if self._stop.is_set():
                    return

    def __enter__(self) -> "Beat":
        self.storage.set_trial_user_attr(self.trial_id, "otcache_heartbeat", time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
