"""Schedule files: versioned JSON, validated strictly, never pickled.

The format is published as a JSON Schema in ``otcache_engine/schedule.schema.json``.
Loading fails with one clear sentence that names the file and the problem, so
that a user can fix a hand-edited or shared file without reading code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from .. import strict_json
from ..safe_files import UnreadableFile, read_bounded, write_atomic
from ..errors import ScheduleError
from .schedule import COORDS, FORMAT, KINDS, VERSION, Schedule
from ..strict_json import brief, is_number

MAX_FILE_BYTES = 1 << 20  # 1 MiB: a 10 000-step schedule with its sigma grid fits easily
SCHEMA_PATH = Path(__file__).with_name("schedule.schema.json")

_REQUIRED = ("num_steps", "compute_steps")
_OPTIONAL = ("format", "version", "kind", "force_last", "coord", "sigmas", "max_gap", "provenance")


def dumps(s: Schedule, indent: int | None = 2) -> str:
    return json.dumps(s.to_dict(), indent=indent, allow_nan=False)


def save(s: Schedule, path: str | os.PathLike) -> Path:
    """Write atomically: a crash never leaves a half-written schedule behind."""
    return write_atomic(path, (dumps(s) + "\n").encode("utf-8"))


def loads(text: str, source: str = "schedule") -> Schedule:
    if len(text.encode("utf-8", "ignore")) > MAX_FILE_BYTES:
        raise ScheduleError(f"{source}: file is larger than {MAX_FILE_BYTES // 1024} KiB; not a schedule")
    try:
        data = strict_json.loads(text)
    except strict_json.JSONInputError as e:
        raise ScheduleError(f"{source}: {e}") from None
    return from_dict(data, source)


def load(path: str | os.PathLike, source: str | None = None) -> Schedule:
    """A schedule file, named ``source`` in messages (default: its path). A symbolic link, a FIFO or a file
    over the size limit is refused without being read."""
    source = source or str(path)
    try:
        data = read_bounded(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise ScheduleError(f"{source}: no such schedule file") from None
    except UnreadableFile as e:
        raise ScheduleError(f"{source}: {e.reason}; not a schedule file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ScheduleError(f"{source}: not a UTF-8 text file; not a schedule") from None
    return loads(text, source)


def from_dict(data: Any, source: str = "schedule") -> Schedule:
    try:
        return Schedule(**_checked_fields(data))
    except ScheduleError as e:
        raise ScheduleError(f"{source}: {e}") from None
    except strict_json.JSONInputError as e:
        raise ScheduleError(f"{source}: {e}") from None


def _checked_fields(data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ScheduleError("top level must be a JSON object with 'num_steps' and 'compute_steps'")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ScheduleError(f"unknown field(s) {unknown}; allowed: {list(_REQUIRED + _OPTIONAL)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ScheduleError(f"missing required field(s) {missing}")
    if data.get("format", FORMAT) != FORMAT:
        raise ScheduleError(f"'format' must be {FORMAT!r}, got {data.get('format')!r}")
    version = data.get("version", VERSION)
    if version != VERSION or isinstance(version, bool):
        raise ScheduleError(f"unsupported schedule version {version!r}; this OTCache reads version {VERSION}")
    fields: dict[str, Any] = {"num_steps": _int(data["num_steps"], "num_steps")}
    steps = data["compute_steps"]
    if not isinstance(steps, list):
        raise ScheduleError("'compute_steps' must be a list of step indices")
    fields["compute_steps"] = tuple(_int(x, "compute_steps entry") for x in steps)
    if "kind" in data:
        if data["kind"] not in KINDS:
            raise ScheduleError(f"unknown schedule kind {data['kind']!r}; expected one of {sorted(KINDS)}")
        fields["kind"] = data["kind"]
    if "force_last" in data:
        if not isinstance(data["force_last"], bool):
            raise ScheduleError("'force_last' must be true or false")
        fields["force_last"] = data["force_last"]
    if "coord" in data:
        if data["coord"] not in COORDS:
            raise ScheduleError(f"'coord' must be one of {sorted(COORDS)}, got {data['coord']!r}")
        fields["coord"] = data["coord"]
    if data.get("sigmas") is not None:
        sig = data["sigmas"]
        if not isinstance(sig, list) or not all(is_number(x) for x in sig):
            raise ScheduleError("'sigmas' must be a list of numbers or null")
        fields["sigmas"] = tuple(float(x) for x in sig)
    if data.get("max_gap") is not None:
        fields["max_gap"] = _int(data["max_gap"], "max_gap")
    prov = data.get("provenance") or {}
    if not isinstance(prov, Mapping):
        raise ScheduleError("'provenance' must be a JSON object")
    strict_json.check_tree(prov)   # bounded numbers, bounded depth: nothing downstream can overflow
    fields["provenance"] = prov
    return fields


def _int(x: Any, what: str) -> int:
    if isinstance(x, int) and not isinstance(x, bool):
        return x   # its range is the Schedule's to check (and to say)
    if not is_number(x) or x != int(x):
        raise ScheduleError(f"{what} must be an integer, got {brief(x)}")
    return int(x)
