"""One switch for what calibrating costs: 'effort' on OTCache Calibrate and OTCache Anchor Search sets the
inputs of the measured quick and thorough points, says what it overrode, and 'as set below' changes nothing."""
from __future__ import annotations

import pytest

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import tiny_models  # noqa: E402
from otcache_pack.nodes import anchor_node as A  # noqa: E402
from otcache_pack.nodes import calibrate_node as C  # noqa: E402
from otcache_pack.nodes.measure import effort  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N = 10


@pytest.fixture(scope="module")
def flux():
    return tiny_models.build("flux")


def calibrate(b, **inputs):
    return C.Calibrate.execute(b.patcher, b.positive, b.negative, {"samples": b.empty_latent()}, 3, N, 1.0, "euler",
                               "simple", 1.0, max_gap=3, reference_budget=5, **inputs)


def note_of(out, key="otcache_schedule"):
    return out.ui[key][0]["note"]


def test_quick_calibrates_with_local_error_and_no_operator_check_and_says_so(flux):
    out = calibrate(flux, effort=effort.QUICK)
    reference, data = out.args
    assert data.settings["error_mode"] == "local" and "reuse_errors" not in reference.provenance
    assert data.settings["model_calls"] == N                   # one recorded run, nothing else
    assert note_of(out).startswith("effort quick set error_mode=local, measure=False")


def test_thorough_calibrates_on_four_seeds_unless_seeds_are_given(flux):
    reference, data = calibrate(flux, effort=effort.THOROUGH, error_mode="local", measure=False).args
    assert [r.meta["seed"] for r in data.runs] == [3, 4, 5, 6]
    assert data.settings["error_mode"] == "hybrid" and "reuse_errors" in reference.provenance
    out = calibrate(flux, effort=effort.THOROUGH, calibration_seeds="7")
    assert [r.meta["seed"] for r in out.args[1].runs] == [3, 7]
    assert "calibration_seeds" not in note_of(out).split(";")[0]


def test_as_set_below_takes_the_inputs_as_they_are(flux):
    out = calibrate(flux, error_mode="local", measure=False)
    assert out.args[1].settings["error_mode"] == "local" and not note_of(out).startswith("effort")


def test_quick_anchor_search_runs_twelve_trials_and_validates_the_two_ends(flux, user_dir):
    reference, data = calibrate(flux, error_mode="local", measure=False).args
    out = A.AnchorSearch.execute(flux.patcher, flux.positive, flux.negative, {"samples": flux.empty_latent()}, 3, N,
                                 1.0, "euler", "simple", 1.0, reference, calibration=data, anchor_budget=3,
                                 trials=5, effort=effort.QUICK)
    (anchor,) = out.args
    (summary,) = out.ui["otcache_anchor"]
    assert isinstance(anchor, Schedule) and summary["trials"] == 12
    assert "validated the two ends only" in summary["validation"]
    assert note_of(out).startswith("effort quick set trials=12, validate_budgets=the two ends")


def test_thorough_anchor_search_asks_for_a_hundred_trials_and_every_budget():
    chosen, note = effort.anchor_inputs(effort.THOROUGH, {"trials": 30, "validate": False,
                                                          "validate_budgets": "the two ends"})
    assert chosen == {"trials": 100, "validate": True, "validate_budgets": "every budget"}
    assert note == "effort thorough set trials=100, validate=True, validate_budgets=every budget"


def test_an_unknown_effort_is_one_clear_sentence(flux):
    with pytest.raises(ValueError, match=r"^OTCache Calibrate: effort must be one of"):
        calibrate(flux, effort="fast")
