"""What Calibrate and Anchor Search measure instead of assuming: several prompt/seed pairs, the reuse operator,
the reference against uniform, the interpolation at every budget, and Apply following what was measured."""
from __future__ import annotations

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import folder_paths  # noqa: E402

import tiny_models  # noqa: E402
from otcache_pack.nodes import calibrate_node as C  # noqa: E402
from otcache_pack.nodes.measure import ladder, reuse_choice  # noqa: E402
from otcache_pack.nodes.runtime import operators as OP  # noqa: E402
from otcache_pack.nodes.apply_node import OTCacheApply  # noqa: E402
from otcache_pack.nodes.runtime.patcher import patched_config  # noqa: E402
from otcache_pack.nodes.measure.sampling import SamplerSettings, sample, to_internal  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402
from otcache_pack.otcache_engine.schedules.baselines import uniform_k  # noqa: E402
from otcache_pack.otcache_engine.errors import CalibrationError  # noqa: E402
from otcache_pack.nodes.measure import calibration_record as R  # noqa: E402
from otcache_pack.nodes.measure import calibrate as MC  # noqa: E402
from otcache_pack.nodes.measure import anchor as MA  # noqa: E402

N = 10


@pytest.fixture(scope="module")
def flux():
    return tiny_models.build("flux")


def settings(b, steps: int = N) -> SamplerSettings:
    return SamplerSettings(steps, 1.0, "euler", "simple", b.positive, b.negative, {"samples": b.empty_latent()})


def prompt(b, k: int) -> list:
    return tiny_models.make_conditioning(b.family, seed=5000 + k)


def test_each_prompt_gets_its_own_seed(flux):
    s = settings(flux)
    two = [prompt(flux, 1), prompt(flux, 2)]
    pairs = R.calibration_pairs(s, [7], two)
    assert [(p.prompt, p.seed) for p in pairs] == [(0, 7), (1, 8), (2, 9)]
    assert pairs[1].settings.positive is two[0] and pairs[0].settings.positive is s.positive
    pairs = R.calibration_pairs(s, [7, 3, 4, 5], two)              # more seeds than prompts: prompts repeat
    assert [(p.prompt, p.seed) for p in pairs] == [(0, 7), (1, 3), (2, 4), (0, 5)]
    assert [(p.prompt, p.seed) for p in R.calibration_pairs(s, [7, 8])] == [(0, 7), (0, 8)]
    with pytest.raises(CalibrationError, match="at most 64"):
        R.calibration_pairs(s, list(range(65)))


def test_more_prompts_are_calibrated_each_with_its_own_run(flux):
    combined = prompt(flux, 1) + prompt(flux, 2)                     # what Conditioning (Combine) makes
    out = C.Calibrate.execute(flux.patcher, flux.positive, flux.negative, {"samples": flux.empty_latent()}, 4, N,
                              1.0, "euler", "simple", 1.0, error_mode="local", max_gap=3, reference_budget=5,
                              measure=False, more_prompts=combined)
    ref, data = out.args
    assert [(r.meta["prompt"], r.meta["seed"]) for r in data.runs] == [(0, 4), (1, 5), (2, 6)]
    assert data.settings["prompts"] == 3 and data.settings["model_calls"] == 3 * N and len(data.pairs) == 3
    for run, pair in zip(data.runs, data.pairs):                      # every run sampled its own prompt and seed
        own = to_internal(flux.patcher, sample(flux.patcher, pair.settings, pair.seed))
        assert torch.allclose(run.latents[-1], own, atol=1e-5)
    assert not torch.allclose(data.runs[0].latents[-1], data.runs[1].latents[-1])
    with pytest.raises(CalibrationError, match="more_prompts must be a CONDITIONING"):
        R.split_prompts("a cat")


def test_measure_chooses_the_operator_with_the_smallest_error_and_checks_the_reference(flux):
    s = settings(flux)
    ref, data = MC.calibrate(flux.patcher, s, [0, 1], mode="local", max_gap=3, budget=5)
    p = ref.provenance
    labels = {op.label() for op in OP.CANDIDATES}
    assert set(p["reuse_errors"]) == labels
    chosen = OP.Operator(p["reuse"], p["gamma"]).label()
    assert p["reuse_errors"][chosen] == min(p["reuse_errors"].values())
    at_ref = OP.as_operator(p[OP.AT_REFERENCE])     # best on the reference itself
    assert at_ref in OP.CANDIDATES
    check = p["reference_check"]
    assert {"graph", "uniform"} <= set(check) and p["reference_source"] == min(check, key=check.get)
    assert ref.budget == 5 and ref.kind == "reference" and data.reference.compute_steps == ref.compute_steps
    assert data.settings["planned_calls"] == 2 * N + reuse_choice.calls(5, MC.default_anchor_budget(N), 2)
    assert data.settings["model_calls"] <= data.settings["planned_calls"]
    # the measured errors are real end-to-end errors: re-measure the chosen operator on the reference
    judge = reuse_choice.judge_for(flux.patcher, data)
    op = OP.Operator(p["reuse"], p["gamma"])
    assert judge.mean(ref, op) == pytest.approx(check[p["reference_source"]], rel=1e-5)
    assert judge.mean(ref, at_ref) <= judge.mean(ref, op) * (1 + 1e-5)


def test_a_graph_reference_that_loses_to_uniform_is_replaced(flux, monkeypatch):
    """The graph search's error model can be wrong for a model: the measured check must notice."""
    s = settings(flux)
    bad = Schedule(N, (0, 1, 2, 3, N - 1), kind="reference")        # everything early, one long skip at the end
    monkeypatch.setattr(MC, "reference_schedule", lambda *a, **k: bad.replace(sigmas=k.get("sigmas"),
                                                                              provenance=k.get("provenance", {})))
    ref, _ = MC.calibrate(flux.patcher, s, [0, 1], mode="local", max_gap=3, budget=5)
    check = ref.provenance["reference_check"]
    assert check["uniform"] < check["graph"] and ref.provenance["reference_source"] != "graph"
    assert ref.compute_steps != bad.compute_steps and ref.budget == 5
    if ref.provenance["reference_source"] == "uniform":
        assert ref.compute_steps == uniform_k(N, 5).compute_steps


def test_apply_auto_follows_the_measured_operator(flux):
    measured = uniform_k(N, 5).replace(provenance={"reuse": "output", "gamma": 0.5})
    patched = OTCacheApply.execute(flux.patcher, reference=measured).args[0]
    assert patched_config(patched).reuse.describe() == "output"
    patched = OTCacheApply.execute(flux.patcher, reference=measured, reuse="residual").args[0]
    assert patched_config(patched).reuse.describe() == "residual"           # a hand choice wins
    patched = OTCacheApply.execute(flux.patcher, reference=uniform_k(N, 5)).args[0]
    assert patched_config(patched).reuse.describe() == "omnicache(gamma=0.5, output)"   # nothing measured


def test_apply_auto_takes_the_operator_measured_where_it_runs(flux):
    """Calibrate measured output reuse best overall, gamma-1 extrapolation best on the reference (as on Wan 2.1
    at 30 steps); the ladder measured an operator per budget in between."""
    gamma1, output = {"reuse": "omnicache", "gamma": 1.0}, {"reuse": "output", "gamma": 0.5}
    reference = uniform_k(N, 6).replace(kind="reference", provenance={**output,
                                                                      OP.AT_REFERENCE: gamma1})
    entries = {"4": {"steps": list(uniform_k(N, 4).compute_steps), "source": "uniform", "reuse": output},
               "5": {"steps": list(uniform_k(N, 5).compute_steps), "source": "uniform", "reuse": gamma1}}
    anchor = uniform_k(N, 3).replace(kind="anchor", provenance={**output, "ladder": {"num_steps": N,
                                                                                     "entries": entries}})

    def run(k: int, **inputs) -> tuple[str, str]:
        out = OTCacheApply.execute(flux.patcher, reference=reference, anchor=anchor, budget_mode="compute steps",
                                   compute_steps=k, **inputs)
        return patched_config(out.args[0]).reuse.describe(), out.ui["otcache_schedule"][0]["note"]

    assert run(6)[0].startswith("omnicache(gamma=1") and "on the reference" in run(6)[1]
    assert run(8)[0].startswith("omnicache(gamma=1")                       # above the reference too
    assert run(5)[0].startswith("omnicache(gamma=1") and "validation ladder at K=5" in run(5)[1]
    assert run(4)[0] == "output" and run(3)[0] == "output"                 # ladder; the anchor's own budget
    assert run(6, reuse="residual")[0].startswith("residual")              # a hand choice wins
    only = OTCacheApply.execute(flux.patcher, reference=reference).args[0]   # the reference alone: its best
    assert patched_config(only).reuse.describe().startswith("omnicache(gamma=1")


def test_the_ladder_samples_both_operators_and_keeps_the_best_pair(flux, searched):
    s, reference, calibration, anchor, summary = searched
    op = OP.recorded(reference)
    other = next(o for o in OP.CANDIDATES if o != op)
    both = reference.with_provenance(**{OP.AT_REFERENCE: other.as_dict()})
    operators = reuse_choice.ladder_operators(op, "auto", both)
    residual = OP.Operator("residual", 0.5)
    assert operators == [op, other] and reuse_choice.ladder_operators(residual, "residual", both) == [residual]
    judge = reuse_choice.judge_for(flux.patcher, calibration)
    calls = []
    lad = ladder.build(judge, both, anchor, calibration, operators, calls.append)
    assert 0 < sum(calls) <= ladder.calls(both, anchor, len(judge.pairs), 2)   # computed steps, as announced
    for entry in lad["entries"].values():
        table = entry["by_reuse"]
        assert set(table) == {op.label(), other.label()}
        assert entry["errors"] == table[OP.as_operator(entry["reuse"]).label()]
        assert entry["errors"][entry["source"]] == min(e for errors in table.values() for e in errors.values())


@pytest.fixture(scope="module")
def searched(flux_searched):
    """The session's calibrated and searched tiny Flux (conftest): settings, reference, calibration, anchor,
    summary."""
    return flux_searched[1:]


def test_anchor_search_is_judged_on_the_calibration_pairs_with_its_operator(searched):
    s, reference, calibration, anchor, summary = searched
    assert summary["pairs"] == 2 and "calibration" in summary["judged_on"]
    assert anchor.provenance["reuse"] == reference.provenance["reuse"]         # 'auto': the measured operator
    assert anchor.provenance["gamma"] == reference.provenance["gamma"]


def test_the_ladder_holds_the_measured_best_at_every_budget_in_between(flux, searched):
    s, reference, calibration, anchor, summary = searched
    lad = anchor.provenance["ladder"]
    assert lad["num_steps"] == N and set(lad["entries"]) == {str(k) for k in range(4, 6)}
    for k, entry in lad["entries"].items():
        assert entry["source"] == min(entry["errors"], key=entry["errors"].get)
        assert set(entry["errors"]) <= {"ot", "graph", "uniform"} and len(entry["steps"]) == int(k)
    patched = OTCacheApply.execute(flux.patcher, reference=reference, anchor=anchor, budget_mode="compute steps",
                                   compute_steps=5).args[0]
    assert patched_config(patched).schedule.compute_steps == tuple(lad["entries"]["5"]["steps"])
    assert "validated 2 budgets" in summary["validation"]


def test_apply_says_when_the_budget_is_outside_anchor_and_reference(flux, searched):
    s, reference, calibration, anchor, summary = searched
    out = OTCacheApply.execute(flux.patcher, reference=reference, anchor=anchor, budget_mode="compute steps",
                               compute_steps=8)
    warnings = out.ui["otcache_schedule"][0]["warnings"]
    assert any("outside [3, 6]" in w for w in warnings)
    inside = OTCacheApply.execute(flux.patcher, reference=reference, anchor=anchor, budget_mode="compute steps",
                                  compute_steps=5)
    assert not any("outside" in w for w in inside.ui["otcache_schedule"][0]["warnings"])


def test_the_study_is_keyed_by_reference_and_calibration(flux, searched, user_dir):
    s, reference, calibration, anchor, summary = searched
    again, second = MA.anchor_search(flux.patcher, s, reference, seeds=[0], budget=3, trials=6,
                                    calibration=calibration, validate=False)
    other_ref = reference.replace(compute_steps=uniform_k(N, 6).compute_steps)
    other, third = MA.anchor_search(flux.patcher, s, other_ref, seeds=[0], budget=3, trials=6,
                                   calibration=calibration, validate=False)
    assert second["study"] == summary["study"] and third["study"] != summary["study"]
    assert "ladder" not in again.provenance                        # validate=False measures nothing more


def test_judged_on_the_calibration_the_search_samples_no_uncached_run_again(flux, searched, user_dir):
    s, reference, calibration, anchor, summary = searched
    passes = []
    handle = flux.last_block().register_forward_pre_hook(lambda *a: passes.append(1))
    try:
        MA.anchor_search(flux.patcher, s, reference, seeds=[0], budget=3, trials=1, calibration=calibration,
                        validate=False, storage="fresh-study")
    finally:
        handle.remove()
    assert len(passes) == 2 * 3          # one trial, 3 computed steps, on each of the 2 calibration pairs


def test_nothing_connected_uses_a_preset_only_on_its_own_model_near_its_steps(flux):
    from otcache_pack.nodes.runtime.families import FamilySpec, detect_family
    from otcache_pack.nodes.runtime.resolver import BudgetRequest, preset_for, resolve

    tiny = detect_family(flux.diffusion_model)
    assert tiny.preset == ("flux1-dev", 57) and len(tiny.blocks) == 4
    dev = FamilySpec("flux", "Flux", tuple(("double_block", i) for i in range(19)) +
                     tuple(("single_block", i) for i in range(38)), preset=("flux1-dev", 57))
    assert preset_for(dev, 50) == "flux1-dev" and preset_for(dev, 28) is None and preset_for(tiny, 50) is None
    res = resolve(BudgetRequest(speedup=2.5), dev, 50)
    schedule, what = res.schedule, res.description
    assert schedule.provenance["source"] == "preset:flux1-dev" and schedule.budget == 20
    res = resolve(BudgetRequest(speedup=2.5), tiny, 50)
    schedule, what = res.schedule, res.description
    assert "uniform" in what and schedule.compute_steps == uniform_k(50, 20).compute_steps
