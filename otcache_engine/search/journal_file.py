"""Optuna journal files, checked before use: a torn last line is cut off, any other damage is one sentence.

Optuna appends one JSON line per operation. A worker killed while writing leaves a last line without its
newline; Optuna's reader skips it, but the next append lands on the same line and turns both into garbage,
after which the whole journal is unreadable (``JSONDecodeError``). Other damage (a hand edit, a disk error,
an operation code this Optuna does not know) surfaces as a raw ``JSONDecodeError``,
``UnicodeDecodeError`` or ``AssertionError: Should not reach.``.

So before a journal is opened it is read once: a torn last line is removed while holding the journal's own
lock (the one every writer holds while appending, so no append is in flight), and any other damage stops
the search with the file, the line and the remedy.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Iterator

from ..errors import OTCacheError

log = logging.getLogger("otcache")

try:
    from optuna.storages.journal._storage import JournalOperation
    KNOWN_OPS = frozenset(int(op) for op in JournalOperation)
except ImportError:  # pragma: no cover - a future Optuna moving its private enum
    KNOWN_OPS = frozenset(range(11))


class DamagedJournal(OTCacheError):
    """A journal file that cannot be replayed."""


def journal_lock(path: str) -> Any:
    """The lock object Optuna's file backend takes around every append (one per path)."""
    from optuna.storages.journal import JournalFileOpenLock, JournalFileSymlinkLock
    return JournalFileOpenLock(path) if os.name == "nt" else JournalFileSymlinkLock(path)


def _line_problem(line: bytes) -> str | None:
    """Why one complete journal line cannot be replayed, or None."""
    try:
        entry = json.loads(line.decode("utf-8"))   # Optuna writes Infinity for +inf scores: plain json
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except ValueError:
        return "not a JSON line"
    if not isinstance(entry, dict) or not isinstance(entry.get("worker_id"), str):
        return "not an Optuna journal entry"
    op = entry.get("op_code")
    if isinstance(op, bool) or not isinstance(op, int) or op not in KNOWN_OPS:
        return f"unknown operation {str(op)[:20]!r} (written by another Optuna version?)"
    return None


def scan(path: str) -> tuple[int | None, str | None, bool]:
    """(first damaged line number, why, whether the file ends in a torn line)."""
    with open(path, "rb") as f:
        number = 0
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return None, None, True
            problem = _line_problem(line)
            if problem is not None:
                return number, problem, False
    return None, None, False


def _cut_torn_tail(path: str, lock: Any) -> None:
    """Remove an unterminated last line, holding the writers' lock (an append in flight ends first)."""
    lock.acquire()
    try:
        with open(path, "r+b") as f:
            data_end = f.seek(0, os.SEEK_END)
            if data_end == 0:
                return
            f.seek(max(0, data_end - (1 << 20)))
            tail = f.read()
            if tail.endswith(b"\n"):
                return                      # it was an append in flight, finished by now
            cut = tail.rfind(b"\n")
            if cut < 0 and data_end > len(tail):
                raise DamagedJournal(f"the journal {path} ends in a line of more than 1 MiB without a newline: "
                                     "move it away to start a new study")
            f.truncate(data_end - len(tail) + cut + 1)
            f.flush()
            os.fsync(f.fileno())
    finally:
        lock.release()
    log.warning("[OTCache] %s: removed an incomplete last line (a worker stopped while writing it)", path)


def check_journal(path: str, lock: Any) -> None:
    """Make ``path`` safe to open and append to; DamagedJournal (one sentence) when it is not."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise DamagedJournal(f"the study storage {path} is not a regular file; give a journal file name")
    number, problem, torn = scan(path)
    if problem is not None:
        raise DamagedJournal(f"the journal {path} is damaged at line {number} ({problem}): move it away to start "
                             "a new study, or delete that line to keep the trials before and after it")
    if torn:
        _cut_torn_tail(path, lock)


def open_journal(path: str | os.PathLike) -> Any:
    """A checked (and if need be repaired) journal file as an Optuna ``JournalStorage``."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    path = str(Path(path).expanduser())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lock = journal_lock(path)
    check_journal(path, lock)
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=lock))
    except Exception as e:  # noqa: BLE001 - a replay error on lines that each looked well-formed
        raise DamagedJournal(f"the journal {path} cannot be replayed ({type(e).__name__}): move it away to "
                             "start a new study") from None


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
    """One worker at a time across processes on this journal (an advisory ``flock`` on the file itself,
    released by the kernel if the holder dies). Where ``fcntl`` is missing, no exclusion."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
