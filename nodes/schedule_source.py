"""Where OTCache Apply's schedule comes from: connected schedules and a budget, or a default.

- reference and anchor connected: the target is interpolated between them
  (``transport``) at the asked budget. One schedule alone is used as it is (the
  budget inputs do not apply; the preview widget shows the same).
- nothing connected: a default that works with no tuning. For families with a
  shipped preset (LeMiCa's published schedules) the preset pair is
  interpolated at the budget, otherwise a dense-head warp (early steps decide
  the layout, so they compute densely; the gaps grow towards the end and the
  last step computes). Made for ``NOMINAL_STEPS`` and carried to every run by
  the warp, so the speed-up is the one asked; with an explicit compute-step
  count it is made for each run's own step count instead.
The choice is always announced in the log.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..otcache_engine import Schedule
from ..otcache_engine.errors import OTCacheError
from ..otcache_engine.projection import project
from ..otcache_engine.runtime import compat

NOMINAL_STEPS = 50
PREVIEW_STEPS = 20
MODES = ("speedup", "compute steps")
DENSE_HEAD_POWER = 1.6
PRESET_FOR_FAMILY = {"flux": "flux1-dev", "chroma": "flux1-dev", "qwen_image": "qwen-image",
                     "wan": "wan2.1-t2v-1.3b", "hunyuan_video": "hunyuanvideo-1.5"}


@dataclass(frozen=True)
class ScheduleSource:
    """reference / anchor schedules (optional) and the budget asked for them."""

    reference: Schedule | None = None
    anchor: Schedule | None = None
    mode: str = "speedup"
    speedup: float = 2.0
    compute_steps: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OTCacheError(f"unknown budget mode {self.mode!r}; choose one of {list(MODES)}")
        if not (isinstance(self.speedup, (int, float)) and math.isfinite(self.speedup) and self.speedup >= 1.0):
            raise OTCacheError(f"speedup must be a number >= 1.0 (1.0 = compute every step), got {self.speedup!r}")
        if self.mode == "compute steps" and (not isinstance(self.compute_steps, int) or self.compute_steps < 1):
            raise OTCacheError(f"compute_steps must be a positive integer in 'compute steps' mode, "
                               f"got {self.compute_steps!r}")

    @property
    def connected(self) -> bool:
        return self.reference is not None or self.anchor is not None

    @property
    def per_run(self) -> bool:
        """True when the schedule can only be made once the run's step count is known."""
        return not self.connected and self.mode == "compute steps"

    def budget_for(self, num_steps: int) -> int:
        if self.mode == "compute steps":
            if self.compute_steps > num_steps:
                raise OTCacheError(f"compute_steps={self.compute_steps} exceeds the schedule's {num_steps} steps; "
                                   f"use at most {num_steps}")
            return self.compute_steps
        return max(1, min(num_steps, int(math.floor(num_steps / self.speedup + 0.5))))

    def resolve(self, family: str = "generic", num_steps: int | None = None) -> tuple[Schedule, str]:
        """(target schedule, one-line description). ``num_steps`` is the run's step count for per-run sources."""
        if self.connected:
            return self._from_schedules()
        n = num_steps if (self.per_run and num_steps) else (PREVIEW_STEPS if self.per_run else NOMINAL_STEPS)
        return default_schedule(family, n, self.budget_for(n))

    def _from_schedules(self) -> tuple[Schedule, str]:
        if self.reference is None or self.anchor is None:
            only = self.reference if self.reference is not None else self.anchor
            role = "reference" if self.reference is not None else "anchor"
            return only, f"the {role} as connected (connect both a reference and an anchor to set the budget)"
        budget = self.budget_for(self.reference.num_steps)
        return (compat.interpolate(self.reference, self.anchor, budget),
                "interpolated between reference and anchor")


def default_schedule(family: str, num_steps: int, budget: int) -> tuple[Schedule, str]:
    """The no-tuning schedule for ``family``: its shipped preset pair, else the dense-head warp."""
    key = PRESET_FOR_FAMILY.get(family)
    pair = _preset_pair(key) if key else None
    if pair is not None:
        ref, anc = pair
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if ref.num_steps != num_steps:
                ref, anc = compat.retarget_full(ref, num_steps), compat.retarget_full(anc, num_steps)
            target = compat.interpolate(ref, anc, budget)
        return (target.with_provenance(source=f"preset:{key}"),
                f"built-in preset {key}, interpolated")
    return dense_head(num_steps, budget), "built-in dense-head schedule"


def dense_head(num_steps: int, budget: int, power: float = DENSE_HEAD_POWER) -> Schedule:
    """K computed steps at (N-1) * (k/(K-1))^power: dense early, sparser late, last step computed."""
    n, k = num_steps, max(1, min(budget, num_steps))
    if k == n:
        return Schedule.full(n, kind="preset", provenance={"source": "dense-head"})
    if k == 1:
        return Schedule(n, (0,), kind="preset", force_last=False, provenance={"source": "dense-head"})
    y = (n - 1) * np.linspace(0.0, 1.0, k) ** power
    return Schedule(n, project(y, n, None, True), kind="preset", provenance={"source": "dense-head"})


def _preset_pair(key: str) -> tuple[Schedule, Schedule] | None:
    try:
        from . import presets
        return presets.preset_pair(key)
    except (ImportError, OTCacheError, OSError):
        return None
