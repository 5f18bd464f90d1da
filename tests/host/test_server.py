"""The pack in a real ComfyUI server: node definitions, the preview route, a queued workflow.

The server runs on loopback with a temporary base directory (see comfy_server.py), the pack as it would be
cloned into custom_nodes, a test-only conditioning node pack and a tiny Wan 2.1 model file.
"""
from __future__ import annotations

import json

import pytest

from comfy_host import find_comfyui

_LOC = find_comfyui()
if not _LOC.found:
    pytest.skip(_LOC.reason, allow_module_level=True)

import comfy_server  # noqa: E402
from comfy_server import TINY_MODEL, combo_options, defaults_for  # noqa: E402

OTCACHE_NODES = {"OTCacheApply", "OTCacheCalibrate", "OTCacheAnchorSearch", "OTCacheSaveSchedule",
                 "OTCacheLoadSchedule"}
REF, ANC = "preset:wan2.1-t2v-1.3b/reference", "preset:wan2.1-t2v-1.3b/anchor"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = comfy_server.start_server(_LOC.path, tmp_path_factory.mktemp("comfy_base"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def info(server):
    return server.get("/object_info")


def _inputs(spec: dict) -> dict:
    return {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}


def test_object_info_lists_every_otcache_node_and_its_inputs(info):
    missing = OTCACHE_NODES - set(info)
    assert not missing, f"not registered: {sorted(missing)}"
    for name in OTCACHE_NODES:
        spec = info[name]
        assert spec["category"].startswith("OTCache"), (name, spec["category"])
        assert spec["display_name"].startswith("OTCache"), name
        assert spec["description"], name
    apply = _inputs(info["OTCacheApply"])
    assert apply["model"][0] == "MODEL"
    assert apply["reference"][0] == apply["anchor"][0] == "OTCACHE_SCHEDULE"
    assert info["OTCacheApply"]["output"][0] == "MODEL"
    assert "OTCACHE_SCHEDULE" in info["OTCacheCalibrate"]["output"]
    assert "OTCACHE_SCHEDULE" in info["OTCacheAnchorSearch"]["output"]
    assert "OTCACHE_SCHEDULE" in info["OTCacheLoadSchedule"]["output"]
    options = combo_options(info, "OTCacheLoadSchedule", "schedule_name")
    assert REF in options and ANC in options and "preset:flux1-dev/reference" in options


def test_pack_loaded_cleanly_with_its_web_extension(server):
    log = server.log_text()
    failed = [ln for ln in log.splitlines() if "IMPORT FAILED" in ln and comfy_server.PACK_DIR_NAME in ln]
    assert not failed, server.log_tail(80)
    extensions = server.get("/extensions")
    ours = [e for e in extensions if e.startswith(f"/extensions/{comfy_server.PACK_DIR_NAME}/")]
    assert f"/extensions/{comfy_server.PACK_DIR_NAME}/otcache.js" in ours, extensions
    status, text = server.request("GET", f"/extensions/{comfy_server.PACK_DIR_NAME}/otcache.js")
    assert status == 200 and "registerExtension" in text


def test_preview_route_answers_on_both_paths(server):
    body = {"reference": REF, "anchor": ANC, "speedup": 2.5}
    for path in ("/otcache/preview", "/api/otcache/preview"):
        status, p = server.post(path, body)
        assert status == 200, p
        assert p["num_steps"] == 50 and p["budget"] == 20
        assert [r["budget"] for r in p["rows"]] == [25, 14, 20]
    status, err = server.post("/api/otcache/preview", {"reference": REF, "budget": "many"})
    assert status == 400 and "budget" in err["error"]
    status, err = server.request("POST", "/api/otcache/preview", raw=b"{")
    assert status == 400 and "JSON" in err["error"]
    status, err = server.post("/api/otcache/preview", {"reference": "../../secrets.json"})
    assert status == 400 and "secrets.json" in err["error"]


def test_preview_refuses_hostile_names_and_bodies_without_showing_server_paths(server, tmp_path):
    """Issue #12 items 1, 4, 5 against the real server: links out of models/otcache, huge numbers, deep nesting."""
    from otcache_pack.otcache_engine import Schedule, schedule_io
    folder = server.base_dir / "models" / "otcache"
    folder.mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "secret.json"
    secret.write_text(schedule_io.dumps(Schedule(4, (0, 3), provenance={"note": "SECRET"})))
    (folder / "evil.json").symlink_to(secret)
    (folder / "broken.json").write_text("{")
    hostile = [{"reference": "evil.json"}, {"reference": "broken.json"}, {"reference": ".evil.json"},
               {"reference": REF, "speedup": 10 ** 400},
               {"reference": {"num_steps": 10 ** 8, "compute_steps": [0, 10 ** 8 - 1]}}]
    answers = [server.post("/api/otcache/preview", body) for body in hostile]
    answers.append(server.request("POST", "/api/otcache/preview", raw=b"[" * 100_000 + b"]" * 100_000))
    for status, err in answers:
        assert status == 400 and isinstance(err, dict) and set(err) == {"error"}, (status, err)
        assert str(server.base_dir) not in err["error"] and "SECRET" not in err["error"], err
    status, _ = server.post("/api/otcache/preview", {"reference": REF, "anchor": ANC, "num_steps": 10000})
    assert status == 200
    assert server.get("/system_stats")["system"]   # the server is still well


def _api_prompt(info: dict, speedup: float, steps: int) -> dict:
    def node(class_type, **inputs):
        return {"class_type": class_type, "inputs": {**defaults_for(info, class_type), **inputs}}

    apply_inputs = {"model": ["1", 0], "reference": ["4", 0], "anchor": ["5", 0]}
    if "speedup" in _inputs(info["OTCacheApply"]):
        apply_inputs["speedup"] = speedup
    return {
        "1": node("UNETLoader", unet_name=TINY_MODEL, weight_dtype="default"),
        "2": node("OTCacheTestConditioning", family="wan", seed=1, tokens=8),
        "3": node("OTCacheTestConditioning", family="wan", seed=2, tokens=8),
        "4": node("OTCacheLoadSchedule", schedule_name=REF),
        "5": node("OTCacheLoadSchedule", schedule_name=ANC),
        "6": node("OTCacheApply", **apply_inputs),
        "7": node("EmptyHunyuanLatentVideo", width=64, height=64, length=5, batch_size=1),
        "8": node("KSampler", model=["6", 0], positive=["2", 0], negative=["3", 0], latent_image=["7", 0],
                  seed=7, steps=steps, cfg=3.0, sampler_name="euler", scheduler="simple", denoise=1.0),
        "9": node("SaveLatent", samples=["8", 0], filename_prefix="otcache_server_test"),
    }


def test_workflow_through_prompt_succeeds_and_ui_carries_the_schedule(server, info):
    entry = server.run_prompt(_api_prompt(info, speedup=2.5, steps=10))
    status = entry["status"]
    assert status["status_str"] == "success" and status["completed"], json.dumps(status)[:3000]
    ui = entry["outputs"]["6"]["otcache_schedule"]
    assert isinstance(ui, list) and len(ui) == 1
    payload = ui[0]
    assert payload["version"] == 1
    assert payload["budget"] == len(payload["compute_steps"]) == len(payload["schedule"]["compute_steps"])
    assert payload["speedup"] == pytest.approx(payload["num_steps"] / payload["budget"], abs=1e-3)
    labels = [r["label"] for r in payload["rows"]]
    assert labels[:2] == ["reference", "anchor"], labels
    # the schedule sent to the page is a valid schedule file
    from otcache_pack.otcache_engine.schedules import schedule_io
    sched = schedule_io.from_dict(payload["schedule"])
    assert sched.compute_steps[0] == 0
    # the same budget through the preview route gives the same schedule (one implementation)
    st, prev = server.post("/api/otcache/preview", {"reference": REF, "anchor": ANC, "speedup": 2.5})
    assert st == 200 and prev["compute_steps"] == payload["compute_steps"]
    # the sampler ran to the end and wrote its latent
    saved = list((server.base_dir / "output").glob("otcache_server_test*.latent"))
    assert saved, "SaveLatent wrote nothing"


def test_committed_workflows_are_what_the_generator_makes_from_this_server(info):
    """workflows/ and example_workflows/ match the node definitions of the running ComfyUI exactly."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "scripts"))
    try:
        import make_workflows
    finally:
        sys.path.remove(str(root / "scripts"))
    def essence(wf: dict) -> dict:
        """What must agree: nodes, widget values, linked sockets, links. A newer ComfyUI may add outputs
        nobody links to (v0.33's SaveImage passes its images on); the frontend takes those from the node."""
        nodes = [{**{k: v for k, v in n.items() if k != "outputs"},
                  "outputs": [o for o in n.get("outputs", []) if o.get("links")]} for n in wf["nodes"]]
        return {**wf, "nodes": nodes}

    built = make_workflows.build_all(info)
    for folder in ("workflows", "example_workflows"):
        on_disk = {p.name: json.loads(p.read_text()) for p in (root / folder).glob("*.json")}
        assert sorted(on_disk) == sorted(built), folder
        for name, wf in built.items():
            assert essence(on_disk[name]) == essence(json.loads(make_workflows.dumps(wf))), (
                f"{folder}/{name} is out of date: run python scripts/make_workflows.py --comfy <ComfyUI>")
