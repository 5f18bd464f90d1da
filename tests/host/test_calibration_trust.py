"""Calibration a user can trust: each stage says what it will cost before it samples and what it spent,
and the free default (Apply with nothing connected) guards every budget Apply runs from a calibration."""
from __future__ import annotations

import logging
import re

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import folder_paths  # noqa: E402
import tiny_models  # noqa: E402
from otcache_pack.nodes.apply_node import OTCacheApply  # noqa: E402
from otcache_pack.nodes.measure import anchor as MA  # noqa: E402
from otcache_pack.nodes.measure import calibrate as MC  # noqa: E402
from otcache_pack.nodes.measure.sampling import SamplerSettings  # noqa: E402
from otcache_pack.nodes.runtime.operators import DEFAULT  # noqa: E402
from otcache_pack.nodes.runtime.patcher import patched_config  # noqa: E402
from otcache_pack.nodes.runtime.resolver import FREE_DEFAULT, BudgetRequest, resolve  # noqa: E402
from otcache_pack.otcache_engine.schedules.baselines import uniform_k  # noqa: E402

N = 10
COST = re.compile(r"(Calibrate|Anchor Search) (will cost at most|spent) (\d+) model calls = ([\d.]+) uncached "
                  r"generations of (\d+) steps")


@pytest.fixture(scope="module")
def flux():
    return tiny_models.build("flux")


class Calls:
    """Counts the block stack's runs (the transformer work a model call costs; a reused step runs none),
    and the log lines said before the first of them."""

    def __init__(self, model, caplog):
        self.n, self.said_before, self.caplog = 0, None, caplog
        first = tiny_models.stack_blocks(model.diffusion_model)[0][2]
        self.handle = first.register_forward_pre_hook(self.hook)

    def hook(self, *_):
        if self.said_before is None:
            self.said_before = [r.getMessage() for r in self.caplog.records]
        self.n += 1


@pytest.fixture(scope="module")
def searched(flux_searched):
    """The session's calibrated and searched tiny Flux (conftest): settings, reference, calibration, anchor,
    summary."""
    return flux_searched[1:]


def test_calibrate_says_its_cost_before_sampling_and_what_it_spent(flux, caplog):
    s = SamplerSettings(N, 1.0, "euler", "simple", flux.positive, flux.negative, {"samples": flux.empty_latent()})
    caplog.set_level(logging.INFO, logger="otcache")
    calls = Calls(flux, caplog)
    try:
        _, data = MC.calibrate(flux.patcher, s, [0, 1], mode="hybrid", max_gap=3, budget=5)
    finally:
        calls.handle.remove()
    before = [m for m in calls.said_before if COST.search(m)]
    assert before and COST.search(before[0]).group(2) == "will cost at most"
    planned = int(COST.search(before[0]).group(3))
    spent = [COST.search(r.getMessage()) for r in caplog.records if "Calibrate spent" in r.getMessage()]
    assert planned == data.settings["planned_calls"] and int(spent[-1].group(3)) <= planned
    assert int(spent[-1].group(3)) == data.settings["model_calls"]
    assert float(spent[-1].group(4)) == pytest.approx(int(spent[-1].group(3)) / N, abs=0.05)
    assert calls.n == data.settings["model_calls"]   # what it says it spent is what the stack ran
    assert data.settings["generations"] == pytest.approx(data.settings["model_calls"] / N, abs=0.01)


def test_anchor_search_reports_what_it_spent_within_what_it_said(searched):
    s, reference, calibration, anchor, summary = searched
    assert 0 < summary["model_calls"] <= summary["planned_calls"]
    assert summary["generations"] == pytest.approx(summary["model_calls"] / N, abs=0.01)
    assert "free default" in summary["validation"]


def test_the_free_default_is_measured_at_every_budget_and_at_both_ends(searched):
    s, reference, calibration, anchor, summary = searched
    lad = anchor.provenance["ladder"]
    records = list(lad["entries"].values()) + list(lad["ends"].values())
    assert set(lad["ends"]) == {"reference", "anchor"} and len(records) == 4
    assert lad["ends"]["reference"]["budget"] == reference.budget and lad["ends"]["anchor"]["budget"] == 3
    for entry in lad["entries"].values():
        free = entry[FREE_DEFAULT]
        assert free["wins"] == (free["error"] < entry["errors"][entry["source"]])
        assert list(free["steps"]) == list(uniform_k(N, len(entry["steps"])).compute_steps)
        assert free["reuse"] == DEFAULT.as_dict()
    end = lad["ends"]["anchor"]
    assert end["error"] == pytest.approx(anchor.provenance["score"]) and end[FREE_DEFAULT]["wins"] == (
        end[FREE_DEFAULT]["error"] < end["error"])


def with_verdicts(anchor, wins_at: set[str]):
    """The anchor with the free default's verdicts set by hand (budgets as strings, or an end's name)."""
    lad = anchor.provenance["ladder"]
    entries = {k: {**e, FREE_DEFAULT: {**e[FREE_DEFAULT], "wins": k in wins_at}} for k, e in lad["entries"].items()}
    ends = {k: {**e, FREE_DEFAULT: {**e[FREE_DEFAULT], "wins": k in wins_at}} for k, e in lad["ends"].items()}
    return anchor.with_provenance(ladder={**lad, "entries": entries, "ends": ends})


@pytest.mark.parametrize("wins_at, budget, free", [
    ({"5"}, 5, True), ({"5"}, 4, False),                          # a ladder budget
    ({"reference"}, 6, True), ({"reference"}, 8, True), ({"reference"}, 5, False),   # the reference's end
    ({"anchor"}, 3, True), ({"anchor"}, 2, True), ({"anchor"}, 4, False),            # the anchor's end
])
def test_apply_runs_the_free_default_where_it_was_measured_better_and_says_so(flux, searched, wins_at, budget,
                                                                             free):
    s, reference, calibration, anchor, summary = searched
    guarded = with_verdicts(anchor, wins_at)
    out = OTCacheApply.execute(flux.patcher, reference=reference, anchor=guarded, budget_mode="compute steps",
                               compute_steps=budget)
    cfg, note = patched_config(out.args[0]), out.ui["otcache_schedule"][0]["note"]
    assert ("runs the free default" in note) == free
    if free:
        assert cfg.schedule.compute_steps == uniform_k(N, budget).compute_steps
        assert cfg.reuse.describe() == "omnicache(gamma=0.5, output)"       # the free default's operator
        assert resolve(BudgetRequest(reference, guarded, mode="compute steps", budget=budget)).operator == DEFAULT
    chosen = resolve(BudgetRequest(reference, guarded, mode="compute steps", budget=budget, reuse="output"))
    assert "free default" not in chosen.description          # a hand-picked operator is never overridden


def test_apply_and_the_preview_show_what_was_measured_at_the_budget(flux, searched):
    from otcache_pack.nodes.preview import preview

    s, reference, calibration, anchor, summary = searched
    entry = anchor.provenance["ladder"]["entries"]["5"]
    out = OTCacheApply.execute(flux.patcher, reference=reference, anchor=anchor, budget_mode="compute steps",
                               compute_steps=5)
    payload = out.ui["otcache_schedule"][0]
    q = payload["quality"]
    assert q["budget"] == 5 and q["metric"] == anchor.provenance["ladder"]["metric"]
    assert q["calibrated"] == pytest.approx(entry["errors"][entry["source"]])
    assert q["free_default"] == pytest.approx(entry[FREE_DEFAULT]["error"])
    assert "measured at K=5 on the calibration pairs" in payload["note"]
    same = preview({"reference": reference.to_dict(), "anchor": anchor.to_dict(), "budget": 5})
    assert same["quality"] == q and same["compute_steps"] == payload["compute_steps"]
    beyond = OTCacheApply.execute(flux.patcher, reference=reference, anchor=anchor, budget_mode="compute steps",
                                  compute_steps=8).ui["otcache_schedule"][0]
    assert beyond["quality"] is None                    # nothing was measured above the reference's budget


def test_validating_the_two_ends_only_costs_less_and_apply_follows_the_nearer_end(flux, searched, tmp_path,
                                                                                  monkeypatch):
    s, reference, calibration, anchor, summary = searched
    monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(tmp_path))
    cheap, cheap_summary = MA.anchor_search(flux.patcher, s, reference, seeds=[0], budget=3, trials=6,
                                            calibration=calibration, every_budget=False)
    lad = cheap.provenance["ladder"]
    assert lad["entries"] == {} and set(lad["ends"]) == {"reference", "anchor"}
    assert "validated the two ends only" in cheap_summary["validation"]
    assert cheap_summary["planned_calls"] < summary["planned_calls"]
    assert cheap_summary["model_calls"] <= cheap_summary["planned_calls"]
    near_anchor = with_verdicts(cheap, {"anchor"})               # K=4 is nearer the anchor (3) than 6
    free = resolve(BudgetRequest(reference, near_anchor, mode="compute steps", budget=4))
    assert "runs the free default" in free.description
    near_ref = with_verdicts(cheap, {"reference"})
    assert "runs the free default" not in resolve(BudgetRequest(reference, near_ref, mode="compute steps",
                                                                budget=4)).description
    assert "runs the free default" in resolve(BudgetRequest(reference, near_ref, mode="compute steps",
                                                            budget=5)).description


def test_auto_validates_every_budget_with_several_pairs_and_the_two_ends_with_one(flux, searched, tmp_path,
                                                                                 monkeypatch):
    s, reference, calibration, anchor, summary = searched              # judged on the calibration's 2 pairs
    assert anchor.provenance["ladder"]["entries"] and "auto: 2 pair(s)" in summary["validation"]
    monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(tmp_path))
    one, one_summary = MA.anchor_search(flux.patcher, s, reference, seeds=[0], budget=3, trials=6,
                                        own_seeds=True)
    assert one.provenance["ladder"]["entries"] == {} and set(one.provenance["ladder"]["ends"]) == {"reference",
                                                                                                  "anchor"}
    assert one_summary["validation"].startswith("validated the two ends only")
    assert one_summary["validation"].endswith("(validate_budgets auto: 1 pair(s))")
    assert MA.validate_every_budget(2) and not MA.validate_every_budget(1)


def test_a_run_with_fewer_steps_beyond_the_anchors_speedup_takes_the_free_default(flux, searched, caplog):
    """The transfer benchmark's one failing region: fewer steps than calibrated, a speed-up beyond the
    anchor's. Such a run samples exactly what Apply with nothing connected samples at its K; others do not."""
    from apply_helpers import run as sample_run

    s, reference, calibration, anchor, summary = searched
    assert anchor.budget == 3 and reference.num_steps == N                # the anchor's speed-up: 10/3
    fast = OTCacheApply.execute(flux.patcher, reference=reference, anchor=anchor, speedup=5.0)
    assert "take the free default at this speed-up" in fast.ui["otcache_schedule"][0]["note"]
    free = OTCacheApply.execute(flux.patcher, budget_mode="compute steps", compute_steps=2).args[0]
    caplog.set_level(logging.INFO, logger="otcache")
    assert torch.equal(sample_run(fast.args[0], flux, 6), sample_run(free, flux, 6))    # 6 < 10 steps, 5x
    assert any("it runs the free default" in r.getMessage() for r in caplog.records)
    caplog.clear()
    more = sample_run(fast.args[0], flux, 14)                               # more steps: the calibration
    assert not any("it runs the free default" in r.getMessage() for r in caplog.records)
    assert not torch.equal(more, sample_run(OTCacheApply.execute(flux.patcher, budget_mode="compute steps",
                                                                  compute_steps=3).args[0], flux, 14))
    within = OTCacheApply.execute(flux.patcher, reference=reference, anchor=anchor, speedup=2.0)
    assert "take the free default" not in within.ui["otcache_schedule"][0]["note"]
    sample_run(within.args[0], flux, 6)                                     # fewer steps, within the anchor's
    assert not any("it runs the free default" in r.getMessage() for r in caplog.records)
