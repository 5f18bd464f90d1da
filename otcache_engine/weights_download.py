"""Fetch one weights file, once, checksum-verified, into a folder the caller names.

The pack's perceptual metric needs torchvision's AlexNet backbone, and asking a ComfyUI user to download
it by hand is a step nobody expects. This module does the download the safe way, and nothing else:

- the caller chooses the destination folder (inside ComfyUI that is a models folder) and the progress
  callback (ComfyUI's progress bar); the engine never imports ``comfy``;
- the bytes go to a hidden temporary file *inside the destination folder*, which is renamed to the final
  name (an atomic ``os.replace``) only after the SHA-256 matched: a half-written or wrong file never
  appears under the real name, an interrupted download leaves nothing behind, and nothing is written
  anywhere else;
- the checksum is the hex prefix torchvision writes into its file names (``alexnet-owt-7be5be79.pth``:
  the SHA-256 starts with ``7be5be79``), the check ``torch.hub`` makes; a file whose name carries no
  checksum is never downloaded unverified;
- ``OTCACHE_NO_DOWNLOAD=1`` turns every download off (offline boxes, audited installs).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional

NO_DOWNLOAD_ENV = "OTCACHE_NO_DOWNLOAD"
CHUNK = 1 << 20
_NAME_HASH = re.compile(r"-([a-f0-9]{8,64})\.")

#: ``progress(bytes_done, bytes_total_or_None)``; may raise to cancel (ComfyUI's bar raises on interrupt).
ProgressFn = Callable[[int, Optional[int]], None]


class DownloadError(RuntimeError):
    """The file could not be fetched or did not verify; the message is one sentence."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: its URL, the SHA-256 (or hex prefix) it must have, an announced size for messages."""

    url: str
    sha256: str = ""           # empty: the prefix in the file name (torchvision's convention)
    size_mb: float | None = None

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def expected_hash(self) -> str:
        if self.sha256:
            return self.sha256.lower()
        found = _NAME_HASH.search(self.name)
        if not found:
            raise DownloadError(f"{self.name} carries no checksum in its name; refusing to download it unverified")
        return found.group(1)


def downloads_disabled() -> bool:
    """Whether the environment turned downloads off (``OTCACHE_NO_DOWNLOAD`` set to 1 / true / yes / on)."""
    return os.environ.get(NO_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def fetch(remote: RemoteFile, folder: str | os.PathLike, progress: ProgressFn | None = None,
          timeout: float = 30.0) -> Path:
    """``folder/<name>``: the file already there, else downloaded into it and verified (DownloadError if not)."""
    folder = Path(folder)
    dest = folder / remote.name
    if dest.is_file():
        return dest
    if downloads_disabled():
        raise DownloadError(f"downloads are turned off ({NO_DOWNLOAD_ENV}=1)")
    expected = remote.expected_hash
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".part", dir=folder)
    except OSError as e:
        raise DownloadError(f"cannot write into {folder} ({type(e).__name__}: {e})") from None
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _copy(remote.url, out, progress, timeout)
        if not digest.startswith(expected):
            raise DownloadError(f"{remote.url} has the wrong checksum (SHA-256 {digest[:16]}..., expected "
                                f"{expected[:16]}...); the file was not kept")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _copy(url: str, out: BinaryIO, progress: ProgressFn | None, timeout: float) -> str:
    """Stream ``url`` into ``out``; the SHA-256 hex digest of what was written."""
    sha = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            if progress is not None:
                progress(0, total)
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                sha.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"downloading {url} failed ({type(e).__name__}: {reason})") from None
    if total is not None and done != total:
        raise DownloadError(f"downloading {url} stopped after {done} of {total} bytes")
    return sha.hexdigest()
