"""Server route of the pack: ``POST /otcache/preview`` (ComfyUI also serves it as ``/api/otcache/preview``).

The graph widget calls it while the user moves the budget, before anything runs. It answers with the plot
data of ``preview.py`` (the same shape as OTCache Apply's UI output), computed by the engine: the schedule
math exists once, in Python, and the JavaScript only draws.

Request body (JSON object, at most ``MAX_BODY_BYTES``)::

    {"reference": <schedule object> | "<name>" | null,   # name: "preset:flux1-dev/reference" or a file
     "anchor":    <schedule object> | "<name>" | null,   #       in models/otcache
     "budget": K | "speedup": N/K,                       # optional, not both
     "num_steps": N, "sigmas": [N+1 floats], "rule": "linear_k" | "inverse_k" | "log_k"}   # optional

Answers: 200 with the payload; 400 ``{"error": "..."}`` for anything invalid (one sentence that says
what to fix); 413 when the body is too large.

``register_routes()`` is called when the pack is imported. It does nothing without a running ComfyUI
server (tests, scripts) and registers at most once per server, however often it is called.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from ..otcache_engine import Schedule, ScheduleError, schedule_io
from .preview import PreviewError, preview

log = logging.getLogger(__name__)

PREVIEW_PATH = "/otcache/preview"
MAX_BODY_BYTES = 2 * 1024 * 1024  # two schedule files of the largest size schedule_io accepts
_MARK = "_otcache_routes_registered"


def resolve_schedule_name(name: str) -> Schedule:
    """A preset (``preset:...``) or a schedule file in ComfyUI's ``otcache`` model folder."""
    from .presets import is_preset, load_preset

    if is_preset(name):
        return load_preset(name)
    if not isinstance(name, str) or not name or len(name) > 512:
        raise ScheduleError("a schedule name must be a non-empty string")
    try:
        import folder_paths  # ComfyUI's; only present inside a server
    except ImportError:
        raise ScheduleError(f"schedule {name!r}: saved schedules can only be looked up inside ComfyUI") from None
    if "otcache" not in getattr(folder_paths, "folder_names_and_paths", {}):
        raise ScheduleError(f"schedule {name!r}: the otcache model folder is not registered")
    # get_full_path normalises the name and refuses anything outside the registered folders.
    path = folder_paths.get_full_path("otcache", name)
    if path is None:
        raise ScheduleError(f"no schedule named {name!r} in models/otcache (refresh the node list?)")
    return schedule_io.load(path)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _json_error(web, status: int, message: str):
    return web.json_response({"error": message}, status=status)


async def _read_body(request) -> bytes | None:
    """The body, or None when it is larger than MAX_BODY_BYTES (checked while reading)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def preview_handler(request):
    from aiohttp import web

    raw = await _read_body(request)
    if raw is None:
        return _json_error(web, 413, f"request body larger than {MAX_BODY_BYTES // 1024} KiB")
    try:
        body: Any = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        return _json_error(web, 400, "request body is not UTF-8 text")
    except ValueError as e:
        return _json_error(web, 400, f"request body is not valid JSON ({e})")
    try:
        payload = preview(body, resolve_name=resolve_schedule_name)
    except PreviewError as e:
        return _json_error(web, 400, str(e))
    except Exception as e:  # a bug, not the user's input: log it, answer without a traceback
        log.exception("OTCache: preview failed")
        return _json_error(web, 500, f"OTCache preview failed: {type(e).__name__}: {e}")
    return web.json_response(payload)


def register_routes(server: Any = None) -> bool:
    """Add the pack's routes to ComfyUI's server. True when they are (now or already) registered."""
    if server is None:
        try:
            from server import PromptServer  # ComfyUI's module; absent outside ComfyUI
        except Exception:
            return False
        server = getattr(PromptServer, "instance", None)
    routes = getattr(server, "routes", None)
    if server is None or routes is None:
        return False
    if getattr(server, _MARK, False):
        return True
    routes.post(PREVIEW_PATH)(preview_handler)
    setattr(server, _MARK, True)
    return True
