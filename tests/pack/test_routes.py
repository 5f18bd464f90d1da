"""POST /otcache/preview as an aiohttp handler (no ComfyUI needed; aiohttp comes with ComfyUI's requirements)."""
from __future__ import annotations

import asyncio
import json

import pytest

web = pytest.importorskip("aiohttp.web", reason="aiohttp (a ComfyUI requirement) is not installed")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from otcache_pure.nodes import presets, routes  # noqa: E402


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
