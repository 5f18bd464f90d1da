"""Where an anchor study lives: a journal file or a database, opened and checked before any model runs.

``connect`` turns what the user gave (a path, a URL, an Optuna storage) into a :class:`StudyStorage`: the
Optuna storage, a description without password, a lock that one worker at a time holds across processes
(warm starts are queued under it, so N workers starting together queue them once), and how trials show they
are alive. Every problem is one sentence (``journal_file``, ``database_url``).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from . import database_url, journal_file
from ..errors import OTCacheError
from .heartbeat import GRACE_PERIOD, HEARTBEAT_INTERVAL, rdb_heartbeat


@dataclass(frozen=True)
class StudyStorage:
    """An opened study storage. ``beat_interval`` is how often OTCache writes a running trial's heartbeat
    itself (None when Optuna does it, or nobody can); ``grace_period`` how long a silent trial is alive."""

    optuna: Any
    where: str
    exclusive: Callable[[str], ContextManager[None]]
    beat_interval: float | None = None
    grace_period: float = GRACE_PERIOD


@contextlib.contextmanager
def _no_lock(_name: str) -> Iterator[None]:
    yield


def _rdb_lock(url: Any, name: str) -> ContextManager[None]:
    return database_url.advisory_lock(url, database_url.study_key(name))


def _journal_lock(path: str, _name: str) -> ContextManager[None]:
    return journal_file.exclusive(path)


def connect(storage: Any, *, heartbeat_interval: float = HEARTBEAT_INTERVAL,
            grace_period: float = GRACE_PERIOD) -> StudyStorage:
    """A path -> a checked journal file (crash-safe, several processes); a URL (``sqlite:///``,
    ``postgresql://``...) -> a checked database with Optuna's heartbeat; an Optuna storage -> used as is."""
    if isinstance(storage, StudyStorage):
        return storage
    if storage is None or (isinstance(storage, str) and not storage.strip()):
        raise OTCacheError("an Optuna storage is needed: a journal file path or a database URL")
    if not isinstance(storage, (str, os.PathLike)):
        return StudyStorage(storage, type(storage).__name__, _no_lock, None, grace_period)
    text = os.fspath(storage).strip()
    if "://" in text:
        rdb, url = database_url.connect_rdb(text, rdb_heartbeat(heartbeat_interval, grace_period))
        return StudyStorage(rdb, database_url.masked(text), partial(_rdb_lock, url), None, grace_period)
    path = str(Path(text).expanduser())
    journal = journal_file.open_journal(path)
    return StudyStorage(journal, text, partial(_journal_lock, path), heartbeat_interval, grace_period)


def describe_storage(storage: Any) -> str:
    """Where the study lives, with any password removed (goes into provenance and the UI)."""
    if isinstance(storage, StudyStorage):
        return storage.where
    if isinstance(storage, (str, os.PathLike)):
        return database_url.masked(os.fspath(storage).strip())
    return type(storage).__name__
