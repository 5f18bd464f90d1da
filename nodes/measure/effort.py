"""One switch for how much a calibration spends: the settings of Calibrate and Anchor Search per effort level.

The in-host benchmark's cost-fidelity curve (``benchmarks/fidelity/cost_curve.py``, README "What
calibration costs") put the defaults at its knee; "quick" and "thorough" are its two other useful points.
Each level is the same set of node inputs a user could set by hand, so a level never does anything the
inputs cannot: "as set below" takes the inputs as they are (their defaults are the knee).

- quick: one pair, local error (no tail re-runs), no operator check; 12 trials, the two ends validated
  -- about 4 uncached generations in all at 30 or 50 steps.
- thorough: four calibration pairs (seed .. seed+3 when no other seeds or prompts are given), hybrid error,
  operator check; 100 trials, every budget validated -- about 100 generations.
"""
from __future__ import annotations

from typing import Any

from ...otcache_engine.errors import OTCacheError

AS_SET = "as set below"
QUICK = "quick"
THOROUGH = "thorough"
LEVELS = (AS_SET, QUICK, THOROUGH)

CALIBRATE = {QUICK: {"error_mode": "local", "measure": False},
             THOROUGH: {"error_mode": "hybrid", "measure": True}}
ANCHOR = {QUICK: {"trials": 12, "validate": True, "validate_budgets": "the two ends"},
          THOROUGH: {"trials": 100, "validate": True, "validate_budgets": "every budget"}}
THOROUGH_PAIRS = 4

TOOLTIP = ("One switch for the cost of calibrating (see the README's cost table). 'as set below': the inputs "
           "as they are; their defaults are the knee of the measured cost-fidelity curve (about 15 uncached "
           "generations at 30 or 50 steps with one seed; validate_budgets auto checks every budget once there "
           "are several pairs). 'quick': local error, no operator check, 12 trials, the "
           "two ends validated (about 4 generations). 'thorough': 4 calibration seeds (seed .. seed+3, unless "
           "calibration_seeds or more_prompts give the pairs), hybrid error, operator check, 100 trials, every "
           "budget validated (about 100 generations). A level overrides the inputs it names; the node's note "
           "says which.")


def check(level: str) -> None:
    if level not in LEVELS:
        raise OTCacheError(f"effort must be one of {list(LEVELS)}, got {level!r}")


def calibrate_inputs(level: str, inputs: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Calibrate's inputs at ``level``, and a note naming what the level overrode ('' when nothing)."""
    check(level)
    out = {**inputs, **CALIBRATE.get(level, {})}
    if level == THOROUGH and not str(inputs.get("calibration_seeds") or "").strip() \
            and inputs.get("more_prompts") is None:
        out["calibration_seeds"] = f"x{THOROUGH_PAIRS}"
    return out, _note(level, inputs, out)


def anchor_inputs(level: str, inputs: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Anchor Search's inputs at ``level``, and a note naming what the level overrode."""
    check(level)
    out = {**inputs, **ANCHOR.get(level, {})}
    return out, _note(level, inputs, out)


def _note(level: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    changed = [f"{k}={after[k]}" for k in after if before.get(k) != after[k]]
    if level == AS_SET:
        return ""
    return f"effort {level}" + (f" set {', '.join(changed)}" if changed else " (the inputs already match it)")
