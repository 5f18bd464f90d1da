"""Reuse operators as nodes name, record and read them back: the Taylor forecasts' order (pure: no ComfyUI)."""
from __future__ import annotations

import pytest

from otcache_pure.nodes.runtime import operators as OP
from otcache_pure.nodes.runtime.config import PatchOptions
from otcache_pure.otcache_engine import Schedule
from otcache_pure.otcache_engine.errors import OTCacheError
from otcache_pure.otcache_engine.runtime.reuse import NAMES


def test_taylor_carries_its_order_and_the_others_none():
    assert OP.Operator("taylor") == OP.Operator("taylor", order=2) != OP.Operator("taylor", order=1)
    assert OP.Operator("taylor", order=1).label() == "taylor(order=1)"
    assert OP.Operator("residual", order=2) == OP.Operator("residual") and OP.Operator("output").order == 0
    assert OP.Operator("taylor", 0.5, 1).as_dict() == {"reuse": "taylor", "gamma": 0.5, "order": 1}
    assert OP.Operator("omnicache", 1.0).as_dict() == {"reuse": "omnicache", "gamma": 1.0}


def test_the_measured_candidates_include_both_orders_and_read_back():
    taylors = [op for op in OP.CANDIDATES if op.reuse == "taylor"]
    assert [op.order for op in taylors] == [1] and {op.reuse for op in OP.CANDIDATES} == set(NAMES) - {"residual"}
    assert OP.DEFAULT in OP.CANDIDATES and OP.DEFAULT.space == "output"       # the free default is measured too
    assert len({op.label() for op in OP.CANDIDATES}) == len(OP.CANDIDATES)
    for op in OP.CANDIDATES:
        assert OP.as_operator(op.as_dict()) == op
    assert OP.as_operator({"reuse": "taylor", "gamma": 0.5}) == OP.Operator("taylor", order=2)
    assert OP.as_operator({"reuse": "residual", "gamma": 0.5}) == OP.Operator("residual")   # older schedules
    for bad in (3, True, "1", -1):
        assert OP.as_operator({"reuse": "taylor", "gamma": 0.5, "order": bad}) is None


def test_auto_follows_a_measured_taylor_order_and_a_chosen_one_is_order_two():
    order1 = OP.Operator("taylor", order=1)
    reference = Schedule(10, (0, 2, 4, 6, 9), provenance={OP.AT_REFERENCE: order1.as_dict()})
    assert OP.operator_for("auto", 0.5, reference, budget=5)[0] == order1
    entry = {"reuse": order1.as_dict()}
    assert OP.operator_for("auto", 0.5, reference, budget=3, entry=entry) == (
        order1, "measured by the validation ladder at K=3")
    assert OP.operator_for("taylor", 0.5)[0] == OP.Operator("taylor", order=2)


def test_patch_options_check_the_order():
    assert PatchOptions(reuse="taylor", order=1).order == 1 and PatchOptions().order == 2
    for bad in (3, True, 1.5, 1.0):
        with pytest.raises(OTCacheError, match="order"):
            PatchOptions(reuse="taylor", order=bad)


def test_an_extrapolating_operator_can_work_in_the_output_space_and_says_so():
    out = OP.Operator("omnicache", 1.0, space="output")
    assert out.label() == "omnicache(gamma=1, output)" and out != OP.Operator("omnicache", 1.0)
    assert out.as_dict() == {"reuse": "omnicache", "gamma": 1.0, "space": "output"}
    assert OP.as_operator(out.as_dict()) == out and OP.as_operator({**out.as_dict(), "space": "x"}) is None
    assert OP.Operator("taylor", order=1, space="output").label() == "taylor(order=1, output)"
    assert OP.Operator("output", space="output") == OP.Operator("output")        # implied by the name
    assert OP.Operator("omnicache", 1.0, space="residual") == OP.Operator("omnicache", 1.0)
    assert OP.operator_for("omnicache", 1.0, space="output")[0] == out
    with pytest.raises(OTCacheError, match="cache space"):
        PatchOptions(reuse="omnicache", space="latent")
