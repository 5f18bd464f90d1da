"""The OTCache Apply node itself: schema on this ComfyUI, outputs, UI payload, defaults and errors."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

from apply_helpers import bundle, probed_run, run  # noqa: E402
from otcache_pack.nodes.runtime import patcher as P  # noqa: E402
from otcache_pack.nodes.apply_node import OTCacheApply  # noqa: E402
from otcache_pack.nodes.runtime.presets import preset_pair  # noqa: E402
from otcache_pack.nodes.preview import preview  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N = 10


def execute(model, **kw):
    out = OTCacheApply.execute(model=model, **kw)
    return out.result[0], out.ui


def test_schema_loads_on_this_comfyui():
    schema = OTCacheApply.GET_SCHEMA()
    assert schema.node_id == "OTCacheApply" and schema.category == "OTCache"
    names = [i.id for i in schema.inputs]
    assert names[:3] == ["model", "reference", "anchor"]
    assert {"budget_mode", "speedup", "compute_steps", "reuse", "gamma", "cache_device"} <= set(names)
    assert [o.io_type for o in schema.outputs] == ["MODEL"]


def test_no_schedule_uses_an_announced_default_at_the_asked_speedup(batched_cfg, caplog):
    b = bundle("wan21")
    with caplog.at_level(logging.INFO, logger="otcache"):
        model, ui = execute(b.patcher, speedup=2.0)
    assert any("uniform schedule" in r.getMessage() for r in caplog.records)
    cfg = P.patched_config(model)
    assert cfg.reuse.describe() == "omnicache(gamma=0.5, output)"   # reuse 'auto' with nothing measured
    assert model is not b.patcher and P.patched_config(b.patcher) is None
    payload = ui["otcache_schedule"][0]
    assert all(isinstance(v, list) for v in ui.values())
    json.dumps(ui)
    assert payload["speedup"] == pytest.approx(2.0, abs=0.05) and payload["kind"]
    assert payload["budget"] == len(payload["compute_steps"]) and payload["rows"]
    _, probe = probed_run(model, b, N)
    assert probe.block_runs == 5                                   # 2x on the run's own 10 steps


def test_compute_steps_mode_without_schedule_counts_the_runs_steps(batched_cfg):
    b = bundle("flux")
    model, _ = execute(b.patcher, budget_mode="compute steps", compute_steps=4)
    for steps in (6, 12):
        _, probe = probed_run(model, b, steps)
        assert probe.block_runs == 4


def test_compute_steps_above_the_preview_steps_without_schedule_fit_each_run(batched_cfg):
    """Nothing connected: K belongs to the run, so 25 computed steps suit a 30-step run, and a run with fewer
    steps than K computes every step instead of failing mid-sampling."""
    b = bundle("flux")
    model, ui = execute(b.patcher, budget_mode="compute steps", compute_steps=25)
    assert ui["otcache_schedule"][0]["budget"] == 25
    for steps, computed in ((30, 25), (12, 12)):
        _, probe = probed_run(model, b, steps)
        assert probe.block_runs == computed


def test_a_run_on_other_steps_keeps_the_asked_speedup(batched_cfg):
    """6x asked on a 50-step pair: 8 of 50 steps (6.25x); a 40-step run computes round(40 / 6) = 7 steps,
    not the 6 that rounding 6.25x again would give."""
    ref, anc = preset_pair("flux1-dev")
    b = bundle("flux")
    model, ui = execute(b.patcher, reference=ref, anchor=anc, speedup=6.0)
    assert ui["otcache_schedule"][0]["budget"] == 8
    for steps, computed in ((40, 7), (25, 4), (50, 8)):
        _, probe = probed_run(model, b, steps)
        assert probe.block_runs == computed


def test_reference_and_anchor_are_interpolated_like_the_preview(batched_cfg):
    ref, anc = preset_pair("flux1-dev")
    b = bundle("flux")
    model, ui = execute(b.patcher, reference=ref, anchor=anc, speedup=2.5)
    payload = ui["otcache_schedule"][0]
    same = preview({"reference": ref.to_dict(), "anchor": anc.to_dict(), "speedup": 2.5})
    assert payload["compute_steps"] == same["compute_steps"] and payload["budget"] == 20
    assert [r["label"] for r in payload["rows"]][:2] == ["reference", "anchor"]
    cfg = P.patched_config(model)
    assert cfg.schedule.compute_steps == tuple(same["compute_steps"])
    out = run(model, b, 25)                                         # the 50-step schedule on a 25-step run
    assert torch.isfinite(out).all()


def test_one_schedule_is_used_as_is(batched_cfg):
    b = bundle("flux")
    s = Schedule(N, (0, 2, 4, 9))
    model, ui = execute(b.patcher, reference=s, speedup=5.0)
    assert P.patched_config(model).schedule == s
    _, probe = probed_run(model, b, N)
    assert probe.block_runs == 4


@pytest.mark.parametrize("reuse", ["output", "omnicache"])
def test_reuse_operators_and_cache_device(reuse, batched_cfg):
    b = bundle("qwen_image")
    s = Schedule(N, (0, 1, 3, 5, 7, 9))
    ref = run(b.patcher, b, N)
    model, _ = execute(b.patcher, reference=s, reuse=reuse, gamma=0.5, cache_device="cpu offload")
    out, probe = probed_run(model, b, N)
    assert probe.block_runs == s.budget and torch.isfinite(out).all() and not torch.equal(out, ref)
    assert P.patched_config(model).reuse.name == reuse


def test_bad_inputs_are_one_line_errors():
    b = bundle("flux")
    with pytest.raises(ValueError, match="compute_steps=60 exceeds"):
        execute(b.patcher, reference=Schedule.full(N), anchor=Schedule(N, (0, 9)), budget_mode="compute steps",
                compute_steps=60)
    with pytest.raises(ValueError, match="reference input must be an OTCACHE_SCHEDULE"):
        execute(b.patcher, reference={"num_steps": 3})
    with pytest.raises(ValueError, match="speedup"):
        execute(b.patcher, speedup=0.5)


def test_a_schedule_from_another_model_is_flagged_on_the_plot_and_in_the_log(batched_cfg, caplog):
    b = bundle("flux")
    foreign = Schedule(N, (0, 2, 5, 9), kind="reference", provenance={"model_family": "wan", "steps": N})
    own = Schedule(N, (0, 2, 5, 9), kind="reference")
    with caplog.at_level(logging.WARNING, logger="otcache"):
        _, ui = execute(b.patcher, reference=foreign)
    flagged = ui["otcache_schedule"][0]["warnings"]
    assert any("calibrated on a wan model" in w for w in flagged)
    assert any("calibrated on a wan model" in r.getMessage() for r in caplog.records)
    _, ui_own = execute(b.patcher, reference=own)
    assert not any("calibrated on" in w for w in ui_own["otcache_schedule"][0]["warnings"])


def test_a_run_away_from_the_calibrated_step_count_is_logged(batched_cfg, caplog):
    b = bundle("flux")
    calibrated = Schedule(N, (0, 2, 5, 9), kind="reference", provenance={"steps": N})
    model, _ = execute(b.patcher, reference=calibrated)
    with caplog.at_level(logging.WARNING, logger="otcache"):
        run(model, b, N)
    assert not any("steps" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.WARNING, logger="otcache"):
        run(model, b, 2 * N)
    assert any(f"made for {N} steps, used with {2 * N}" in r.getMessage() for r in caplog.records)
