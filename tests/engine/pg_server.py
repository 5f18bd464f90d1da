"""A throw-away PostgreSQL server for the multi-worker tests: Debian's binaries, a temporary data folder, a
random loopback port, password authentication; stopped and deleted afterwards.

When the binaries are missing and the tests run as root on Debian, ``apt-get install -y postgresql`` is run
non-interactively (CI has no terminal). Whatever cannot be had (no binaries, no driver, a server that does
not start) is a reason to skip, returned as a sentence, never an error.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "otcache", "otcache-test-pw"
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _apt(*args: str) -> bool:
    try:
        done = subprocess.run(["apt-get", *args], env=APT_ENV, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=1200)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def binaries() -> tuple[Path | None, str]:
    """(folder of initdb/pg_ctl, reason when there is none), installing Debian's package when we may."""
    found = _bin_dir()
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "PostgreSQL is not installed (apt-get install postgresql, as root) and this user cannot install it"
    if not _apt("install", "-y", "-q", "postgresql") and not (_apt("update", "-q") and
                                                              _apt("install", "-y", "-q", "postgresql")):
        return None, "apt-get could not install postgresql (no package mirror reachable?)"
    found = _bin_dir()
    return (found, "") if found else (None, "postgresql was installed but initdb is not in /usr/lib/postgresql")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    bin_dir: Path
    root: Path
    port: int

    def url(self, database: str) -> str:
        """The README's kind of URL (no driver named): OTCache picks psycopg 3 or psycopg2."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(prefix + list(cmd), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=self.root)

    def start(self) -> str:
        """'' when the server runs, else why not."""
        data, pwfile = self.root / "data", self.root / "pw"
        pwfile.write_text(PASSWORD)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        init = self._run(str(self.bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
                         "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
        if init.returncode != 0:
            return f"initdb failed: {(init.stderr or init.stdout).strip()[-300:]}"
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {data} -c fsync=off -c max_connections=60"
        started = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"),
                            "-o", options, "-w", "-t", "60", "start")
        if started.returncode != 0:
            return f"pg_ctl start failed: {(started.stderr or started.stdout).strip()[-300:]}"
        return ""

    def create_database(self, name: str) -> str:
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def execute(self, database: str, sql: str, *args) -> list[tuple]:
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname=database)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall() if cur.description else []
        conn.close()
        return rows

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> tuple[Server | None, str]:
    """(a running server, '') or (None, why not)."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return None, "psycopg2 is not installed (pip install -r requirements-dev.txt)"
    bin_dir, reason = binaries()
    if bin_dir is None:
        return None, reason
    root = Path(tempfile.mkdtemp(prefix="otcache-pg-"))   # under /tmp, so the postgres user can enter it
    server = Server(bin_dir, root, _free_port())
    reason = server.start()
    if reason:
        server.stop()
        return None, reason
    return server, ""
