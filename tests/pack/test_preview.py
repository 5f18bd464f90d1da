"""The plot data behind the graph widget and the /otcache/preview route (pure: no ComfyUI)."""
from __future__ import annotations

import json
import math

import pytest

from otcache_pure.nodes.runtime import presets
from otcache_pure.otcache_engine.schedules.schedule import budget_for_speedup
from otcache_pure.nodes.preview import (UI_KEY, PreviewError, plot_payload, preview,
                                        ui_output)
from otcache_pure.otcache_engine import Schedule
from otcache_pure.otcache_engine.schedules.transport import interpolate

REF, ANC = presets.preset_pair("flux1-dev")


def body(**kw):
    out = {"reference": REF.to_dict(), "anchor": ANC.to_dict()}
    out.update(kw)
    return out


def test_interpolated_row_is_the_engine_result():
    p = preview(body(budget=17))
    expected = interpolate(REF, ANC, 17, num_steps=50)
    assert p["compute_steps"] == list(expected.compute_steps)
    assert [r["label"] for r in p["rows"]] == ["reference", "anchor", "interpolated"]
    assert [r["budget"] for r in p["rows"]] == [26, 10, 17]
    assert p["num_steps"] == 50 and p["budget"] == 17 and p["speedup"] == pytest.approx(50 / 17, abs=1e-4)
    assert p["schedule"]["compute_steps"] == p["compute_steps"]
    assert p["inputs"]["reference"]["compute_steps"] == list(REF.compute_steps)
    json.dumps(p, allow_nan=False)  # plain JSON


def test_endpoints_are_reproduced_exactly():
    assert preview(body(budget=26))["compute_steps"] == list(REF.compute_steps)
    assert preview(body(budget=10))["compute_steps"] == list(ANC.compute_steps)


def test_speedup_picks_the_nearest_budget():
    p = preview(body(speedup=2.5))
    assert p["budget"] == budget_for_speedup(50, 2.5) == 20
    assert budget_for_speedup(50, 1.0) == 50 and budget_for_speedup(50, 50.0) == 1


def test_moving_the_budget_changes_the_mask():
    masks = {k: tuple(preview(body(budget=k))["compute_steps"]) for k in (12, 15, 18, 21, 24)}
    assert len(set(masks.values())) == 5
    assert all(len(v) == k for k, v in masks.items())


def test_other_step_count_retargets_every_row():
    p = preview(body(speedup=2.5, num_steps=20))
    assert all(r["num_steps"] == 20 for r in p["rows"])
    assert p["rows"][0]["original"] == "K=26 of N=50"
    assert p["budget"] == 8 and max(p["compute_steps"]) == 19  # the speed-up is kept: 20 of 50 -> 8 of 20
    assert "run's 20 steps" in p["note"]


def test_names_are_resolved_by_the_caller():
    p = preview({"reference": "preset:qwen-image/reference", "anchor": "preset:qwen-image/anchor", "budget": 17},
                resolve_name=presets.load_preset)
    assert p["rows"][0]["budget"] == 25 and p["rows"][1]["budget"] == 10 and p["budget"] == 17
    with pytest.raises(PreviewError, match="schedule object"):
        preview({"reference": "preset:qwen-image/reference"})
    with pytest.raises(PreviewError, match="unknown preset"):
        preview({"reference": "preset:nope/reference"}, resolve_name=presets.load_preset)


def test_sigmas_are_checked_and_passed_to_the_plot():
    sig = [1.0 - i / 50 for i in range(51)]
    p = preview(body(budget=17, sigmas=sig))
    assert p["sigmas"] == pytest.approx(sig) and p["num_steps"] == 50
    p = preview(body(budget=6, sigmas=[1.0 - i / 10 for i in range(11)]))
    assert p["num_steps"] == 10  # num_steps follows the sigma grid when not given


def test_a_single_schedule_is_used_the_way_apply_uses_it():
    from otcache_pure.nodes.runtime.resolver import BudgetRequest, resolve
    p = preview({"reference": REF.to_dict(), "speedup": 3.0})
    assert [r["label"] for r in p["rows"]] == ["reference", "in use"]
    expected = resolve(BudgetRequest(reference=REF, mode="speedup", speedup=3.0)).schedule
    assert p["compute_steps"] == list(expected.compute_steps)
    assert "only a reference" in p["note"]
    p = preview({"anchor": ANC.to_dict()})
    assert [r["label"] for r in p["rows"]] == ["anchor", "in use"]


def test_outside_the_bracket_warns():
    p = preview(body(budget=5))
    assert p["budget"] == 5 and p["warnings"] and "outside" in p["warnings"][0]


@pytest.mark.parametrize("bad, message", [
    ([], "JSON object"),
    ({"reference": None}, "no schedule"),
    (body(extra=1), "unknown field"),
    (body(budget=17, speedup=3.0), "not both"),
    (body(budget=17, compute_steps=17), "mean the same"),
    (body(mode="fast"), "'mode'"),
    (body(budget=0), "'budget'"),
    (body(budget=51), "at most"),
    (body(budget=17.5), "'budget'"),
    (body(budget=True), "'budget'"),
    (body(speedup=0.5), "'speedup'"),
    (body(speedup=math.inf), "'speedup'"),
    (body(speedup="3"), "'speedup'"),
    (body(num_steps=0), "'num_steps'"),
    (body(num_steps=10**6), "'num_steps'"),
    (body(sigmas=[1, 2, 3]), "'sigmas'"),
    (body(sigmas="1,0"), "'sigmas'"),
    (body(sigmas=[1.0, 0.5, 0.0], num_steps=5), "num_steps=5 needs 6"),
    (body(rule="linear_k"), "unknown field"),
    ({"reference": {"num_steps": 3, "compute_steps": [1, 2]}}, "step 0"),
    ({"reference": [0, 1]}, "schedule object"),
])
def test_invalid_requests_get_one_clear_message(bad, message):
    with pytest.raises(PreviewError, match=message):
        preview(bad)


def test_payload_for_a_single_schedule_and_ui_wrapping():
    s = Schedule(10, (0, 3, 6, 9), kind="reference", sigmas=tuple(1 - i / 10 for i in range(11)))
    p = plot_payload(s, label="reference")
    assert [r["label"] for r in p["rows"]] == ["reference"] and p["budget"] == 4
    assert p["sigmas"][0] == 1.0 and p["schedule"]["num_steps"] == 10
    ui = ui_output(p)
    assert list(ui) == [UI_KEY] and ui[UI_KEY][0]["budget"] == 4


@pytest.mark.parametrize("bad, message", [
    (body(speedup=10 ** 400), "'speedup'"),
    (body(budget=10 ** 4000), "'budget'"),
    (body(num_steps=10 ** 4000), "'num_steps'"),
    (body(sigmas=[10 ** 400, 0]), "'sigmas'"),
    ({"reference": {"num_steps": 10 ** 4000, "compute_steps": [0]}}, "step limit"),
    ({"reference": {"num_steps": 10 ** 8, "compute_steps": [0, 10 ** 8 - 1]}}, "step limit"),
    ({"reference": {**REF.to_dict(), "provenance": {"lambda": 10 ** 4000}}}, "out of range"),
])
def test_huge_numbers_are_one_short_message(bad, message):
    """Issue #12 item 4: no OverflowError, no 4000-digit echo, no 10^8-step allocation."""
    with pytest.raises(PreviewError, match=message) as e:
        preview(bad)
    assert len(str(e.value)) < 300
