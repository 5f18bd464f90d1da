"""Optuna RDB storages from a URL, checked before any model runs: one sentence for every way a URL can fail.

Checked in order, each with its own message: the URL parses, SQLAlchemy knows the database, its driver is
installed (``postgresql://`` picks psycopg 3 or psycopg2, whichever is there: SQLAlchemy 2 would insist on
psycopg 3), a SQLite file's folder exists, and the server answers. Only then is the Optuna storage made.

Several workers starting together on an empty database race on Optuna's table creation (``CREATE TYPE
studydirection`` -> UniqueViolation, Optuna issue #1092). On PostgreSQL the creation runs under an advisory
lock, so workers create the schema one after the other; on other databases it is retried.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import OTCacheError

log = logging.getLogger("otcache")

# (module, SQLAlchemy driver name, what to pip install), in the order they are preferred
POSTGRES_DRIVERS = (("psycopg", "psycopg", "psycopg[binary]"), ("psycopg2", "psycopg2", "psycopg2-binary"))
PIP_NAMES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pymysql": "pymysql",
             "MySQLdb": "mysqlclient", "mysql": "mysql-connector-python", "pg8000": "pg8000",
             "asyncpg": "asyncpg", "oracledb": "oracledb", "pyodbc": "pyodbc"}
LOCK_CLASS = 0x07CA          # first key of OTCache's PostgreSQL advisory locks
SCHEMA_LOCK = 0              # second key: Optuna's schema creation
CREATE_RETRIES = 5
_LOCK_SQL = "SELECT pg_advisory_{}(CAST(:a AS integer), CAST(:b AS integer))"
EXAMPLES = "e.g. postgresql://user:password@host/db, mysql+pymysql://user:password@host/db or sqlite:///anchor.db"


class StorageURLError(OTCacheError):
    """A storage URL that cannot be used, with the reason and what to do."""


def masked(text: str) -> str:
    """The URL with any password replaced by ***."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", text)


def _module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _postgres_driver(shown: str) -> str:
    for module, driver, _ in POSTGRES_DRIVERS:
        if _module_present(module):
            return driver
    raise StorageURLError(f"storage {shown}: no PostgreSQL driver is installed; install one with "
                          f"`pip install psycopg2-binary` or `pip install \"psycopg[binary]\"`")


def database_url(text: str) -> Any:
    """The SQLAlchemy URL of ``text`` with a driver that is installed; StorageURLError otherwise."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = repr(masked(text))[:200]
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise StorageURLError(f"storage {shown} is not a database URL ({EXAMPLES})") from None
    if url.drivername == "postgresql":
        url = url.set(drivername=f"postgresql+{_postgres_driver(shown)}")
    _dialect_ready(url, shown)
    if url.get_backend_name() == "sqlite":
        _check_sqlite_file(url.database, shown)
    return url


def _dialect_ready(url: Any, shown: str) -> None:
    """SQLAlchemy knows the database and its driver module imports."""
    from sqlalchemy.exc import NoSuchModuleError

    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise StorageURLError(f"storage {shown}: {url.drivername!r} is not a database SQLAlchemy knows; a journal "
                              f"file is a plain name without '://', a database is a URL ({EXAMPLES})") from None
    importer = getattr(dialect, "import_dbapi", None) or getattr(dialect, "dbapi")
    try:
        importer()
    except ImportError as e:
        module = (getattr(e, "name", None) or "").split(".")[0]
        hint = f" (`pip install {PIP_NAMES[module]}`)" if module in PIP_NAMES else ""
        raise StorageURLError(f"storage {shown}: the {url.get_backend_name()} driver {module or url.drivername!r} "
                              f"is not installed{hint}") from None


def _check_sqlite_file(database: str | None, shown: str) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        raise StorageURLError(f"storage {shown}: an in-memory SQLite database is lost when ComfyUI stops; name a "
                              "file (sqlite:///anchor.db)")
    folder = Path(database).expanduser().parent
    if not folder.is_dir():
        raise StorageURLError(f"storage {shown}: the folder {str(folder)!r} of the SQLite file does not exist")


def _reason(e: BaseException) -> str:
    """The first line of the driver's own message (SQLAlchemy adds several lines and a link)."""
    inner = getattr(e, "orig", None) or e
    text = str(inner).strip().splitlines()
    return (text[0].strip() if text else type(inner).__name__)[:200]


def _engine(url: Any) -> Any:
    import sqlalchemy
    from sqlalchemy.pool import NullPool
    return sqlalchemy.create_engine(url, poolclass=NullPool)


@contextlib.contextmanager
def advisory_lock(url: Any, key: int) -> Iterator[None]:
    """An exclusive PostgreSQL advisory lock (held by its own connection, freed if the holder dies);
    a no-op on other databases."""
    if url.get_backend_name() != "postgresql":
        yield
        return
    import sqlalchemy
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            keys = {"a": LOCK_CLASS, "b": key}
            conn.execute(sqlalchemy.text(_LOCK_SQL.format("lock")), keys)
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(_LOCK_SQL.format("unlock")), keys)
    finally:
        engine.dispose()


def study_key(name: str) -> int:
    """The advisory-lock key of one study (never SCHEMA_LOCK)."""
    return (zlib.crc32(name.encode()) & 0x7FFFFFFF) or 1


def _creation_race(e: BaseException) -> bool:
    text = str(getattr(e, "orig", e)).lower()
    return any(s in text for s in ("already exists", "duplicate", "unique", "database is locked"))


def connect_rdb(text: str, storage_kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """(Optuna RDBStorage, its SQLAlchemy URL) for a checked URL; StorageURLError when it cannot be used."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    url = database_url(text)
    shown = repr(masked(text))[:200]
    try:
        with advisory_lock(url, SCHEMA_LOCK):
            return _create(optuna.storages.RDBStorage, url, storage_kwargs), url
    except (SQLAlchemyError, OSError, RuntimeError) as e:   # RuntimeError: Optuna, a schema of another version
        raise StorageURLError(f"cannot use the database storage {shown}: {_reason(e)}") from None


def _create(factory: Callable[..., Any], url: Any, storage_kwargs: dict[str, Any]) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    rendered = url.render_as_string(hide_password=False)
    for attempt in range(CREATE_RETRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # heartbeat arguments are "experimental" in Optuna
                return factory(rendered, **storage_kwargs)
        except SQLAlchemyError as e:
            if attempt == CREATE_RETRIES - 1 or not _creation_race(e):
                raise
            log.info("[OTCache] another worker is creating the study tables; retrying (%s)", _reason(e))
    raise AssertionError("unreachable")
