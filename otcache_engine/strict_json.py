"""JSON from outside (schedule files, request bodies), decoded so that every bad input is one sentence.

Python's ``json`` lets through what later crashes far from the input: ``1e400`` becomes infinity (which
cannot be written back), an integer of 5000 digits raises a bare ``ValueError`` from the int parser, one of
4000 digits parses and then overflows the first ``float()`` that meets it, and 100 000 nested brackets raise
``RecursionError``. Here numbers are bounded while they are parsed and nesting is bounded after, so callers
only ever see :class:`JSONInputError`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .errors import OTCacheError

MAX_INT_DIGITS = 20     # 2^64 - 1 (ComfyUI's largest seed) has 20 digits
MAX_DEPTH = 32          # a schedule's provenance is a few levels deep


class JSONInputError(OTCacheError):
    """Text that is not the bounded JSON OTCache accepts."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONInputError(f"a number has {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS} are accepted)")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONInputError(f"a number is out of range ({brief(text)})")
    return value


def _reject_constant(name: str) -> Any:
    raise JSONInputError(f"NaN or infinity ({name}) is not allowed")


def loads(text: str) -> Any:
    """Decode ``text``; JSONInputError (one sentence) for anything malformed, unbounded or too deep."""
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_float=_finite_float,
                           parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise JSONInputError(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise JSONInputError(f"JSON is nested too deeply (more than {MAX_DEPTH} levels)") from None
    check_tree(value)
    return value


def check_tree(value: Any, limit: int = MAX_DEPTH) -> None:
    """JSONInputError when containers nest deeper than ``limit`` or a number is unbounded; iterative, so
    nothing overflows the stack however deep ``value`` is (it may come from Python, not from ``loads``)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (int, float)) and not is_number(item) and not isinstance(item, bool):
            raise JSONInputError(f"a number is out of range ({brief(item)})")
        if not isinstance(item, (Mapping, list, tuple)):
            continue
        if depth > limit:
            raise JSONInputError(f"JSON is nested too deeply (more than {limit} levels)")
        children = item.values() if isinstance(item, Mapping) else item
        stack.extend((child, depth + 1) for child in children)


def is_number(x: Any) -> bool:
    """A finite int or float of bounded size (never raises, whatever ``x`` is)."""
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return abs(x) < 10 ** MAX_INT_DIGITS
    return isinstance(x, float) and math.isfinite(x)


def brief(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters for a message (a huge int cannot even be printed)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** limit:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
