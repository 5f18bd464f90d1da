"""Reading and writing files in folders other people can put things into (models/otcache, user/otcache).

Writes go to a temporary file created exclusively (``O_CREAT | O_EXCL``, which never follows a symbolic
link) under a fresh random name in the target's own folder, then renamed over the target: a file or link
someone placed at ``<name>.tmp`` is neither written through nor renamed into place, a link at the target
itself is replaced rather than followed, and a crash leaves the old file or the new one.

Reads open without following a final symbolic link and without blocking (a FIFO named ``x.json`` would
otherwise hang the reader forever), accept regular files only and stop at a size limit.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


class UnreadableFile(OSError):
    """The path is not a regular file that can be read within the limit; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` (fsynced before the rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def read_bounded(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; FileNotFoundError, or UnreadableFile otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError:
        raise UnreadableFile("cannot be opened (a symbolic link, or not readable)") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile("not a regular file")
        if info.st_size > max_bytes:
            raise UnreadableFile(f"{info.st_size} bytes, larger than {max_bytes // 1024} KiB")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnreadableFile(f"larger than {max_bytes // 1024} KiB")
    return data
