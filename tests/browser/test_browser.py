"""The plot widget and the example workflows in the real ComfyUI frontend (Debian chromium + playwright-core).

Run by scripts/browser_tests.sh on every host (it installs chromium and playwright-core when it can and sets
OTCACHE_BROWSER=1); a plain `pytest tests` skips this file with that reason, so each host runs it once.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _skip_reason() -> str | None:
    if os.environ.get("OTCACHE_BROWSER") != "1":
        return "browser tests run through scripts/browser_tests.sh (set OTCACHE_BROWSER=1 to run them here)"
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed (cd tests/browser && npm ci)"
    from comfy_host import find_comfyui
    loc = find_comfyui()
    if not loc.found:
        return loc.reason
    return None


_REASON = _skip_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import comfy_server  # noqa: E402
import make_workflows  # noqa: E402
from comfy_host import find_comfyui  # noqa: E402

REF, ANC = "preset:wan2.1-t2v-1.3b/reference", "preset:wan2.1-t2v-1.3b/anchor"
SPEEDUPS = (1.6, 3.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = comfy_server.start_server(find_comfyui().path, tmp_path_factory.mktemp("comfy_base"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser_result(server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    info = server.get("/object_info")
    tiny = make_workflows.tiny_test_workflow(info, comfy_server.TINY_MODEL, REF, ANC, steps=8, speedup=3.0)
    tiny_path = tmp / "tiny.json"
    tiny_path.write_text(json.dumps(tiny))
    examples = sorted(str(p) for p in (ROOT / "workflows").glob("*.json"))
    shot = tmp / "plot.png"
    plan = {"url": server.url, "workflows": examples + [str(tiny_path)],
            "plot": {"workflow": str(tiny_path), "values": list(SPEEDUPS)},
            "run": {"workflow": str(tiny_path)}, "screenshot": str(shot),
            "sigma": {"module": f"/extensions/{comfy_server.PACK_DIR_NAME}/otcache_plot.js"}}
    plan_path = tmp / "plan.json"
    plan_path.write_text(json.dumps(plan))
    proc = subprocess.run(["node", str(HERE / "run_browser.mjs"), str(plan_path)], cwd=HERE, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert not result.get("fatal"), result["fatal"] + "\n" + server.log_tail()
    result["_examples"] = examples
    result["_tiny"] = str(tiny_path)
    result["_shot"] = shot
    return result


def test_frontend_loaded_our_extension_without_errors(browser_result):
    assert browser_result["frontend"]
    ours = [e for e in browser_result["pageErrors"] if "otcache" in e.lower()]
    assert not ours, ours
    logged = [e for e in browser_result["consoleErrors"] if "[OTCache]" in e]
    assert not logged, logged


def test_every_example_workflow_loads_with_known_nodes_and_valid_links(browser_result):
    assert len(browser_result["_examples"]) == len(make_workflows.WORKFLOWS)
    for path in browser_result["_examples"] + [browser_result["_tiny"]]:
        r = browser_result["workflows"][path]
        name = Path(path).name
        assert r["error"] is None, (name, r["error"])
        assert r["missing"] == [], (name, r["missing"])
        assert r["brokenLinks"] == [], (name, r["brokenLinks"])
        assert (r["nodes"], r["links"]) == (r["expectedNodes"], r["expectedLinks"]), name
        assert r["widgetMismatch"] == [], (name, r["widgetMismatch"][:3])
        wf = json.loads(Path(path).read_text())
        real = [n for n in wf["nodes"] if n["type"] not in ("Note", "MarkdownNote")]
        assert r["prompt"]["nodes"] == len(real), name  # the frontend turns every node into a prompt entry


def test_moving_the_budget_redraws_the_plot_from_the_server(browser_result, server):
    plot = browser_result["plot"]
    states = plot["states"]
    assert states[0]["status"] == "ready" and states[0]["widget"] in ("speedup", "target_speedup")
    for before, after, speedup in zip(states, states[1:], SPEEDUPS):
        assert after["status"] == "ready"
        assert after["value"] == pytest.approx(speedup)
        assert after["summary"]["budget"] == math.floor(50 / speedup + 0.5)  # 50-step presets
        assert after["steps"] != before["steps"]
        assert after["pixels"] != before["pixels"]  # the canvas changed
        assert [r["label"] for r in after["summary"]["rows"]][:2] == ["reference", "anchor"]
        status, p = server.post("/api/otcache/preview", {"reference": REF, "anchor": ANC, "speedup": speedup})
        assert status == 200 and p["compute_steps"] == after["steps"]  # drawn = what the server computes
    assert plot["emptyState"]["status"] == "empty"


def test_a_schedule_with_its_sigma_grid_gets_the_sigma_curve(browser_result):
    sig = browser_result["sigma"]
    assert sig["hasBand"] and sig["summary"]["status"] == "ready" and sig["summary"]["rows"][0]["computed"] == 8
    assert sig["curvePixels"] > 50  # the curve is drawn in its band


def test_after_a_run_the_plot_shows_the_executed_schedule(browser_result, server):
    run = browser_result["run"]
    hist = server.get("/history")
    assert hist, (server.get("/queue"), server.log_tail())
    entry = list(hist.values())[-1]
    assert entry["status"]["status_str"] == "success", entry["status"]
    executed = entry["outputs"][str(run["nodeId"])]["otcache_schedule"][0]
    assert run["payload"]["compute_steps"] == executed["compute_steps"]
    assert run["summary"]["status"] == "ready" and run["summary"]["budget"] == executed["budget"]
    assert run["saved"] == executed["compute_steps"]  # kept in node.properties for the next load


def test_screenshot_of_the_plot(browser_result):
    shot = browser_result["_shot"]
    assert shot.is_file() and shot.stat().st_size > 10_000
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out_dir = ROOT / "results" / "browser"
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, out_dir / f"plot-frontend-{browser_result['frontend']}.png")
    target = os.environ.get("OTCACHE_SCREENSHOT")
    if target:  # scripts/browser_tests.sh sets it for the first host: the README's picture
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target)
