"""POST /otcache/preview as an aiohttp handler (no ComfyUI needed; aiohttp comes with ComfyUI's requirements)."""
from __future__ import annotations

import asyncio
import json
import threading

import pytest

web = pytest.importorskip("aiohttp.web", reason="aiohttp (a ComfyUI requirement) is not installed")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from otcache_pure.nodes import routes
from otcache_pure.nodes.runtime import presets  # noqa: E402


class FakePromptServer:
    def __init__(self):
        self.routes = web.RouteTableDef()


def _call(method_calls):
    server = FakePromptServer()
    assert routes.register_routes(server) is True
    assert routes.register_routes(server) is True  # idempotent
    assert len(list(server.routes)) == 1
    app = web.Application()
    app.add_routes(server.routes)

    async def run():
        async with TestClient(TestServer(app)) as client:
            out = []
            for data in method_calls:
                r = await client.post(routes.PREVIEW_PATH, data=data, headers={"Content-Type": "application/json"})
                out.append((r.status, await r.json()))
            return out
    return asyncio.run(run())


def test_preview_answers_and_rejects_clearly():
    ref, anc = presets.preset_pair("wan2.1-t2v-1.3b")
    ok = json.dumps({"reference": ref.to_dict(), "anchor": anc.to_dict(), "speedup": 2.5})
    by_name = json.dumps({"reference": "preset:wan2.1-t2v-1.3b/reference",
                          "anchor": "preset:wan2.1-t2v-1.3b/anchor", "budget": 17})
    results = _call([
        ok, by_name,
        b"{not json", b"\xff\xfe", b'{"reference": NaN}', json.dumps({"budget": 3}),
        json.dumps({"reference": "some_file.json"}),
        b"[" + b"0," * (routes.MAX_BODY_BYTES // 2) + b"0]",
    ])
    (s1, p1), (s2, p2), (s3, e3), (s4, e4), (s5, e5), (s6, e6), (s7, e7), (s8, e8) = results
    assert s1 == 200 and p1["budget"] == 20 and len(p1["rows"]) == 3 and p1["version"] == 1
    assert s2 == 200 and len(p2["compute_steps"]) == 17
    assert p2["budget"] == 17 and p2["rows"][0]["budget"] == 25 and p2["rows"][1]["budget"] == 14
    assert s3 == 400 and "not valid JSON" in e3["error"]
    assert s4 == 400 and "UTF-8" in e4["error"]
    assert s5 == 400 and "NaN" in e5["error"]
    assert s6 == 400 and "no schedule" in e6["error"]
    assert s7 == 400 and "some_file.json" in e7["error"]  # a file name needs ComfyUI's otcache folder
    assert s8 == 413 and "larger than" in e8["error"]


def test_without_a_server_nothing_is_registered():
    assert routes.register_routes(object()) is False


# --- hostile bodies and the event loop (issue #12, items 5 and 6) -----------------------------------------

def _app():
    server = FakePromptServer()
    routes.register_routes(server)
    app = web.Application()
    app.add_routes(server.routes)
    return app


def test_hostile_bodies_get_one_sentence_and_a_400():
    ref = presets.preset_pair("wan2.1-t2v-1.3b")[0].to_dict()
    bodies = [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"reference": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"reference": {"num_steps": ' + b"9" * 5000 + b', "compute_steps": [0]}}',
        json.dumps({"reference": ref, "speedup": 10 ** 400}).encode(),
        json.dumps({"reference": ref, "budget": 10 ** 19}).encode(),
        b'{"reference": {"num_steps": 100000000, "compute_steps": [0, 99999999]}}',
        json.dumps({"reference": ref, "sigmas": [10 ** 300] * 51}).encode(),
        b'{"reference": "preset:' + b"x" * 100_000 + b'"}',
    ]
    for (status, err), raw in zip(_call(bodies), bodies):
        assert status == 400, (raw[:80], err)
        assert set(err) == {"error"} and "\n" not in err["error"] and len(err["error"]) < 300, err


def test_an_internal_error_is_a_500_without_the_exception_text(monkeypatch):
    def broken(body, resolve_name=None):
        raise RuntimeError("/srv/secret/path/model.json exploded")

    monkeypatch.setattr(routes, "preview", broken)
    ((status, err),) = _call([json.dumps({"reference": None})])
    assert status == 500 and "secret" not in err["error"] and "internal error" in err["error"]


class Blocked:
    """Stands in for a heavy preview: runs until the test releases it, and says when it started."""

    def __init__(self, order):
        self.started, self.release, self.order = threading.Event(), threading.Event(), order

    def __call__(self, body, resolve_name=None):
        self.started.set()
        self.release.wait(timeout=5)
        self.order.append("preview done")
        return {"ok": True}


def test_other_routes_answer_while_a_heavy_preview_runs(monkeypatch):
    order = []
    heavy = Blocked(order)
    monkeypatch.setattr(routes, "preview", heavy)
    app = _app()

    async def system_stats(request):
        order.append("system_stats answered")
        return web.json_response({"system": {}})

    app.router.add_get("/system_stats", system_stats)

    async def run():
        loop = asyncio.get_running_loop()
        async with TestClient(TestServer(app)) as client:
            pending = asyncio.ensure_future(client.post(routes.PREVIEW_PATH, data=b'{"reference": null}'))
            assert await loop.run_in_executor(None, heavy.started.wait, 5)   # the preview is running now
            stats = await client.get("/system_stats")
            assert stats.status == 200
            heavy.release.set()
            response = await pending
            return response.status, await response.json()

    status, body = asyncio.run(run())
    assert order == ["system_stats answered", "preview done"]   # the loop was free while the preview ran
    assert status == 200 and body == {"ok": True}


def test_a_preview_that_takes_too_long_or_too_many_at_once_get_a_503(monkeypatch):
    heavy = Blocked([])
    monkeypatch.setattr(routes, "preview", heavy)
    monkeypatch.setattr(routes, "MAX_PENDING", 1)
    monkeypatch.setattr(routes, "PREVIEW_TIMEOUT", 0.05)

    async def run():
        async with TestClient(TestServer(_app())) as client:
            first = await client.post(routes.PREVIEW_PATH, data=b"{}")     # still running when answered
            second = await client.post(routes.PREVIEW_PATH, data=b"{}")    # the first still holds the worker
            heavy.release.set()
            return [(r.status, (await r.json())["error"]) for r in (first, second)]

    (s1, e1), (s2, e2) = asyncio.run(run())
    assert s1 == 503 and "took longer than" in e1
    assert s2 == 503 and "busy" in e2
