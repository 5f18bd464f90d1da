"""Server route of the pack: ``POST /otcache/preview`` (ComfyUI also serves it as ``/api/otcache/preview``).

The graph widget calls it while the user moves the budget, before anything runs. It answers with the plot
data of ``preview.py`` (the same shape as OTCache Apply's UI output), computed by the engine: the schedule
math exists once, in Python, and the JavaScript only draws.

Request body (JSON object, at most ``MAX_BODY_BYTES``)::

    {"reference": <schedule object> | "<name>" | null,   # name: "preset:flux1-dev/reference" or a file
     "anchor":    <schedule object> | "<name>" | null,   #       in models/otcache
     "budget": K | "speedup": N/K,                       # optional, not both ("mode" says which counts)
     "num_steps": N, "sigmas": [N+1 floats]}             # optional: the run the plot is shown on

(the keys ``preview.ALLOWED_KEYS``; anything else is refused with one sentence)

Answers: 200 with the payload; 400 ``{"error": "..."}`` for anything invalid (one sentence that says
what to fix, never a server path); 413 when the body is too large; 503 when the preview is busy or took
longer than ``PREVIEW_TIMEOUT``.

The work (decoding, reading named files, the schedule math: 2-5 s at 10 000 steps) runs in one worker
thread of its own, never on ComfyUI's event loop, so the rest of the server keeps answering meanwhile; at
most ``MAX_PENDING`` previews wait or run at once.

``register_routes()`` is called when the pack is imported. It does nothing without a running ComfyUI
server (tests, scripts) and registers at most once per server, however often it is called.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..otcache_engine import Schedule, ScheduleError, strict_json
from .preview import PreviewError, preview
from .schedule_folders import MAX_NAME, load_listed

log = logging.getLogger(__name__)

PREVIEW_PATH = "/otcache/preview"
MAX_BODY_BYTES = 2 * 1024 * 1024  # two schedule files of the largest size schedule_io accepts
PREVIEW_TIMEOUT = 15.0            # seconds; the largest valid request takes a few
MAX_PENDING = 8
_MARK = "_otcache_routes_registered"
_worker: ThreadPoolExecutor | None = None
_pending = 0                      # previews submitted and not finished yet
_pending_lock = threading.Lock()


def resolve_schedule_name(name: str) -> Schedule:
    """A preset (``preset:...``) or a schedule file in ComfyUI's ``otcache`` model folder, resolved exactly as
    OTCache Load Schedule resolves its dropdown (no links out, no hidden or calibration files)."""
    from .runtime.presets import is_preset, load_preset

    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ScheduleError(f"a schedule name must be a non-empty string of at most {MAX_NAME} characters")
    if is_preset(name):
        return load_preset(name)
    return load_listed(name)[0]


def answer(raw: bytes) -> tuple[int, str]:
    """(HTTP status, JSON text) for a request body; runs in the worker thread."""
    try:
        body = strict_json.loads(raw.decode("utf-8"))
        return 200, json.dumps(preview(body, resolve_name=resolve_schedule_name), allow_nan=False)
    except UnicodeDecodeError:
        return 400, _error("request body is not UTF-8 text")
    except strict_json.JSONInputError as e:
        return 400, _error(f"request body: {e}")
    except PreviewError as e:
        return 400, _error(str(e))
    except RecursionError:
        return 400, _error("request body is nested too deeply")
    except Exception:  # a bug, not the user's input: logged with its traceback, answered without one
        log.exception("OTCache: preview failed")
        return 500, _error("OTCache preview failed on an internal error (the server log has the details)")


def _error(message: str) -> str:
    return json.dumps({"error": message})


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


def _executor() -> ThreadPoolExecutor:
    global _worker
    if _worker is None:
        _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otcache-preview")
    return _worker


def _finished(_future: Any) -> None:
    global _pending
    with _pending_lock:
        _pending -= 1


async def in_worker(raw: bytes) -> tuple[int, str]:
    """``answer(raw)`` computed off the event loop; a request waits at most PREVIEW_TIMEOUT for it."""
    global _pending
    with _pending_lock:
        if _pending >= MAX_PENDING:
            return 503, _error(f"the preview is busy with {_pending} other requests; try again in a moment")
        _pending += 1
    job = _executor().submit(answer, raw)
    job.add_done_callback(_finished)      # in the worker thread: counted down even if the loop is gone
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job)), PREVIEW_TIMEOUT)
    except asyncio.TimeoutError:
        return 503, _error(f"the preview took longer than {PREVIEW_TIMEOUT:.0f} s; ask for fewer steps")


async def preview_handler(request):
    from aiohttp import web

    raw = await _read_body(request)
    if raw is None:
        status, text = 413, _error(f"request body larger than {MAX_BODY_BYTES // 1024} KiB")
    else:
        status, text = await in_worker(raw)
    return web.Response(text=text, status=status, content_type="application/json")


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
