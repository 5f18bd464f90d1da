"""OTCache Calibrate on tiny real-architecture models: reference quality, costs, progress, interruption."""
from __future__ import annotations

import re

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import comfy.model_management as mm  # noqa: E402

import tiny_models  # noqa: E402
from otcache_pack.nodes import calibrate_node as C  # noqa: E402
from otcache_pack.nodes.measure.calibration_data import CalibrationData  # noqa: E402
from otcache_pack.nodes.runtime.patcher import cached_model  # noqa: E402
from otcache_pack.nodes.measure.sampling import SamplerSettings, sample, to_internal  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402
from otcache_pack.otcache_engine.schedules.baselines import uniform_k  # noqa: E402
from otcache_pack.otcache_engine.calibration.hybrid import probe_steps  # noqa: E402
from otcache_pack.otcache_engine.errors import CalibrationError  # noqa: E402
from otcache_pack.otcache_engine.schedules.graph_search import schedule_cost  # noqa: E402
from otcache_pack.nodes import node_types as T  # noqa: E402
from otcache_pack.nodes.measure import calibrate as MC  # noqa: E402

CFG = {"flux": 1.0, "wan21": 3.5}


@pytest.fixture(scope="module")
def bundles():
    return {fam: tiny_models.build(fam) for fam in CFG}


def settings(bundle, steps: int) -> SamplerSettings:
    return SamplerSettings(steps, CFG[bundle.family], "euler", "simple", bundle.positive, bundle.negative,
                           {"samples": bundle.empty_latent()})


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().mean() / ref.abs().mean())


@pytest.mark.parametrize("family", ["flux", "wan21"])
def test_reference_has_the_asked_budget_and_beats_uniform(bundles, family, progress_events):
    b = bundles[family]
    s = settings(b, 12)
    ref, data = MC.calibrate(b.patcher, s, [0], mode="local", max_gap=4, budget=5, measure=False)
    uni = uniform_k(12, 5)
    assert ref.kind == "reference" and ref.budget == 5 and ref.num_steps == 12 and ref.largest_gap <= 4
    assert ref.sigmas is not None and len(ref.sigmas) == 13
    # the calibrated (leximax) cost and the zero-call replay error both favour the reference ...
    assert schedule_cost(data.weights, ref, "leximax") < schedule_cost(data.weights, uni, "leximax")
    assert ref.provenance["calibrated_error"] < ref.provenance["uniform_error"]
    # ... and so does the real end-to-end error of cached sampling (OTCache Apply's runtime)
    full = sample(b.patcher, s, 0)
    assert rel_error(sample(cached_model(b.patcher, ref), s, 0), full) < \
        rel_error(sample(cached_model(b.patcher, uni), s, 0), full)
    # what was recorded: every step's latent and output, the baseline signals, provenance
    run = data.runs[0]
    assert run.latents.shape[0] == 13 and run.outputs.shape[0] == 12
    assert torch.allclose(run.latents[-1], to_internal(b.patcher, full), atol=1e-5)  # x_N: the KSampler output
    assert run.check_euler_consistency() < 1e-4   # v_n is exactly the Euler velocity of the recorded x_n
    assert {"output_rel_l1", "easycache_k", "curvature_cos", "fbcache_rel_l1", "step_time"} <= set(run.signals)
    assert run.residual_norms["img"].shape[0] == 12
    p = ref.provenance
    assert p["model_family"] == ("flux" if family == "flux" else "wan") and len(p["model_hash"]) == 16
    assert (p["steps"], p["sampler"], p["scheduler"], p["error_mode"]) == (12, "euler", "simple", "local")
    assert p["budget"] == 5 and p["resolution"] and p["sigma_grid"] and p["metric"].startswith("local")
    assert progress_events[-1] == (12, 12) and [v for v, _ in progress_events] == sorted(v for v, _ in progress_events)


def test_node_outputs_ui_and_calibration(bundles):
    b = bundles["flux"]
    out = C.Calibrate.execute(b.patcher, b.positive, b.negative, {"samples": b.empty_latent()}, 3, 8, 1.0,
                              "euler", "simple", 1.0, calibration_seeds="x2", error_mode="local", max_gap=3,
                              reference_budget=4, objective="additive", measure=False)
    ref, data = out.args
    assert isinstance(ref, Schedule) and ref.budget == 4 and isinstance(data, CalibrationData)
    assert [r.meta["seed"] for r in data.runs] == [3, 4] and data.settings["model_calls"] == 16
    (payload,) = out.ui["otcache_schedule"]
    assert payload["compute_steps"] == list(ref.compute_steps) and payload["rows"][-1]["label"] == "reference"
    (summary,) = out.ui["otcache_calibration"]
    assert summary["error_mode"] == "local" and summary["model_calls"] == 16
    assert data.graph_schedule(5).budget == 5 and data.graph_schedule(3) is None  # K >= 1 + ceil(7/3)


@pytest.mark.parametrize("mode", ["hybrid", "global"])
def test_tail_rerun_modes_cost_what_the_tooltip_says(bundles, mode, progress_events):
    b = bundles["wan21"]
    n, gap = 6, 3
    ref, data = MC.calibrate(b.patcher, settings(b, n), [0], mode=mode, max_gap=gap, budget=3, measure=False)
    expected = {"hybrid": n + (n - 1) * (n - 2) // 2, "global": MC.calls_per_seed(n, gap, "global")}[mode]
    assert data.settings["model_calls"] == expected == progress_events[-1][0] == progress_events[-1][1]
    assert ref.budget == 3 and ref.provenance["error_mode"] == mode
    finite = data.weights[data.weights < float("inf")]
    assert (finite >= 0).all() and (finite > 0).any()


def test_a_tail_rerun_reproduces_the_recorded_run(bundles):
    """Restarting ComfyUI's sampler from a recorded latent lands on the recorded final latent."""
    from otcache_pack.nodes.measure.sampling import interruptible, tail_sample
    b = bundles["flux"]
    s = settings(b, 8)
    ref, data = MC.calibrate(b.patcher, s, [0], mode="local", max_gap=3, budget=4, measure=False)
    run = data.runs[0]
    out = tail_sample(interruptible(b.patcher), s, run.latents[3], run.sigmas[3:], 0)
    assert torch.allclose(out, run.latents[-1], atol=1e-4, rtol=1e-4)


def test_interrupt_stops_within_one_model_call_and_leaves_the_model_unpatched(bundles):
    b = bundles["flux"]
    before = (dict(b.patcher.model_options), {k: dict(v) for k, v in b.patcher.wrappers.items()})
    reference = sample(b.patcher, settings(b, 8), 0)
    runs = []

    def count(_module, _inputs, _output):
        runs.append(1)
        if len(runs) == 5:
            mm.interrupt_current_processing(True)   # the user presses Cancel during model call 5

    handle = b.last_block().register_forward_hook(count)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            MC.calibrate(b.patcher, settings(b, 8), [0, 1], mode="global", max_gap=3, budget=4)
    finally:
        handle.remove()
        mm.interrupt_current_processing(False)
    assert len(runs) == 5
    assert (dict(b.patcher.model_options), {k: dict(v) for k, v in b.patcher.wrappers.items()}) == before
    assert "patches_replace" not in b.patcher.model_options.get("transformer_options", {})
    assert torch.equal(sample(b.patcher, settings(b, 8), 0), reference)


def test_bad_settings_are_clear_errors(bundles):
    b = bundles["flux"]
    with pytest.raises(CalibrationError, match="between 4 and 8"):
        MC.calibrate(b.patcher, settings(b, 8), [0], max_gap=3, budget=3)
    with pytest.raises(CalibrationError, match="integers separated by commas"):
        T.parse_seeds("1, two", 0)
    assert T.parse_seeds("", 7) == [7] and T.parse_seeds("x3", 7) == [7, 8, 9]
    assert T.parse_seeds("1, 2 ,7", 7) == [7, 1, 2]
    with pytest.raises(ValueError, match="OTCache Calibrate: .*error mode"):
        C.Calibrate.execute(b.patcher, b.positive, b.negative, {"samples": b.empty_latent()}, 0, 8, 1.0, "euler",
                            "simple", 1.0, error_mode="exact")


def test_cost_helpers_match_the_design_tables():
    assert MC.default_max_gap(50) == 7 and MC.default_max_gap(28) == 4
    assert MC.default_reference_budget(50) == 25 and MC.default_reference_budget(28) == 14
    assert MC.calls_per_seed(50, 7, "hybrid") == 50 + sum(50 - j for j in probe_steps(50)) < 50 + 1176 / 3
    assert MC.calls_per_seed(50, 7, "global") == 50 + 6356       # method.md §2.4 table, L = 7
    assert "N=28" in MC.ERROR_MODE_TOOLTIP and "N=50" in MC.ERROR_MODE_TOOLTIP


def test_a_model_that_already_carries_otcache_is_calibrated_uncached(bundles):
    b = bundles["wan21"]
    s = settings(b, 8)
    plain_ref, plain = MC.calibrate(b.patcher, s, [0], mode="local", max_gap=3, budget=4, measure=False)
    cached = cached_model(b.patcher, uniform_k(8, 4))
    ref, data = MC.calibrate(cached, s, [0], mode="local", max_gap=3, budget=4, measure=False)
    assert ref.compute_steps == plain_ref.compute_steps
    assert torch.equal(data.runs[0].latents, plain.runs[0].latents)   # no step was skipped while recording
    assert "otcache" in cached.model_options["transformer_options"]     # and the input keeps its OTCache


@pytest.mark.parametrize("text, fragment", [
    ("x²", "integers separated by commas"),           # a superscript two passes str.isdigit()
    ("1, ٣", "integers separated by commas"),
    ("18446744073709551616", "2^64-1"),               # torch.manual_seed overflows from here
    ("9" * 5000, "5000-digit"),                       # int() of it raises its own ValueError
    ("x99999", "between 1 and 64"),
])
def test_hostile_calibration_seeds_are_one_sentence(bundles, text, fragment):
    """Issue #12 item 7: refused before any model call, as one sentence."""
    b = bundles["flux"]
    with pytest.raises(ValueError, match=f"^OTCache Calibrate: .*{re.escape(fragment)}") as e:
        C.Calibrate.execute(b.patcher, b.positive, b.negative, {"samples": b.empty_latent()}, 0, 8, 1.0, "euler",
                            "simple", 1.0, calibration_seeds=text)
    assert type(e.value) is ValueError and len(str(e.value)) < 200
    assert T.parse_seeds("x2", 2 ** 64 - 2) == [2 ** 64 - 2, 2 ** 64 - 1]
    with pytest.raises(CalibrationError, match="2\\^64-1"):
        T.parse_seeds("x3", 2 ** 64 - 2)
