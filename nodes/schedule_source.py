"""Where OTCache Apply's schedule comes from: connected schedules and a budget, or a default.

- reference and anchor connected: the target is interpolated between them
  (``transport``) at the asked budget. One schedule alone is used as it is (the
  budget inputs do not apply; the preview widget shows the same).
- nothing connected: made for each run's own step count. A shipped preset
  (LeMiCa's published schedules) only near its own setting: the model it was
  made for (same family and block count) at about its 50 steps; otherwise a
  uniform schedule: a schedule tuned for another model or step count can be
  worse than uniform, and nothing here has measured this one.
The choice is always announced in the log.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..otcache_engine import Schedule
from ..otcache_engine.schedule import budget_for_speedup
from ..otcache_engine.errors import OTCacheError
from ..otcache_engine import transport, warp
from .families import FamilySpec

PREVIEW_STEPS = 20
MODES = ("speedup", "compute steps")
PRESET_STEPS = (40, 60)   # "near its own setting": the presets are made for 50 steps


@dataclass(frozen=True)
class ScheduleSource:
    """reference / anchor schedules (optional) and the budget asked for them."""

    reference: Schedule | None = None
    anchor: Schedule | None = None
    mode: str = "speedup"
    speedup: float = 2.0
    budget: int = 0                     # K in 'compute steps' mode (a schedule's compute_steps is its step list)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OTCacheError(f"unknown budget mode {self.mode!r}; choose one of {list(MODES)}")
        if not (isinstance(self.speedup, (int, float)) and math.isfinite(self.speedup) and self.speedup >= 1.0):
            raise OTCacheError(f"speedup must be a number >= 1.0 (1.0 = compute every step), got {self.speedup!r}")
        if self.mode == "compute steps" and (not isinstance(self.budget, int) or self.budget < 1):
            raise OTCacheError(f"compute_steps must be a positive integer in 'compute steps' mode, "
                               f"got {self.budget!r}")

    @property
    def connected(self) -> bool:
        return self.reference is not None or self.anchor is not None

    @property
    def per_run(self) -> bool:
        """True when the schedule can only be made once the run's step count is known."""
        return not self.connected

    def connected_budget(self) -> int | None:
        """K of the schedule a connected source runs, in the reference's steps (None for the per-run
        default): where Apply looks up the reuse operator measured at its budget."""
        if self.reference is not None and self.anchor is not None:
            return self.budget_for(self.reference.num_steps)
        only = self.reference if self.reference is not None else self.anchor
        return None if only is None else only.budget

    def budget_for(self, num_steps: int) -> int:
        if self.mode == "compute steps":
            if self.budget > num_steps:
                raise OTCacheError(f"compute_steps={self.budget} exceeds the schedule's {num_steps} steps; "
                                   f"use at most {num_steps}")
            return self.budget
        return budget_for_speedup(num_steps, self.speedup)

    def target(self, family: FamilySpec | None = None, num_steps: int | None = None) -> tuple[Schedule, str]:
        """(target schedule, one-line description). ``num_steps`` is the run's step count for per-run sources
        (a preview count without one); ``family`` the model's (decides whether a shipped preset fits)."""
        if not self.connected:
            n = num_steps or PREVIEW_STEPS
            return default_schedule(family, n, self.budget_for(n))
        if self.reference is None or self.anchor is None:
            only = self.reference if self.reference is not None else self.anchor
            role = "reference" if self.reference is not None else "anchor"
            return only, f"the {role} as connected (connect both a reference and an anchor to set the budget)"
        budget = self.budget_for(self.reference.num_steps)
        target = transport.schedule_at(self.reference, self.anchor, budget)
        return target, describe(target, budget)


def describe(target: Schedule, budget: int) -> str:
    measured = target.provenance.get("ladder_source")
    if measured:
        return (f"{measured} schedule, measured best at K={budget} on the calibration pairs (the anchor's "
                "validation ladder)")
    return "interpolated between reference and anchor"


def default_schedule(family: FamilySpec | None, num_steps: int, budget: int) -> tuple[Schedule, str]:
    """The no-calibration schedule: the family's preset pair near its own setting, else uniform."""
    key = preset_for(family, num_steps)
    pair = _preset_pair(key) if key else None
    if pair is not None:
        ref, anc = pair
        if ref.num_steps != num_steps:
            ref, anc = warp.retarget(ref, num_steps), warp.retarget(anc, num_steps)
        target = transport.schedule_at(ref, anc, budget)
        return (target.with_provenance(source=f"preset:{key}"),
                f"built-in preset {key} (made for this model at 50 steps), interpolated")
    return uniform(num_steps, budget), "uniform schedule (calibrate, or load a schedule, to do better)"


def preset_for(family: FamilySpec | None, num_steps: int) -> str | None:
    """The shipped preset made for this model (its family's released one, by block count) near this step
    count, if any."""
    if family is None or family.preset is None:
        return None
    key, made_for = family.preset
    lo, hi = PRESET_STEPS
    return key if len(family.blocks) == made_for and lo <= num_steps <= hi else None


def uniform(num_steps: int, budget: int) -> Schedule:
    """K computed steps spread evenly, first and last included (``baselines.uniform_k``)."""
    from ..otcache_engine.baselines import uniform_k

    k = max(1, min(budget, num_steps))
    if k == 1:
        return Schedule(num_steps, (0,), kind="preset", force_last=False, provenance={"source": "uniform"})
    return uniform_k(num_steps, k).replace(kind="preset", provenance={"source": "uniform"})


def _preset_pair(key: str) -> tuple[Schedule, Schedule] | None:
    try:
        from . import presets
        return presets.preset_pair(key)
    except (ImportError, OTCacheError, OSError):
        return None
