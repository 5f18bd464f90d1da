"""The one budget resolver: what OTCache Apply was given -> the schedule and reuse operator a run uses.

Apply's output (its plot and log line), the preview route while the slider moves and every sampling run's
plan ask :func:`resolve`, so they cannot disagree. It computes K once per call: from the speed-up (the one
rounding, ``schedule.budget_for_speedup``) or as given, on the reference's steps when schedules are
connected, on the run's when nothing is; it reads the anchor's validation ladder once at that K, for the
schedule and for the operator measured there. A run with another step count than its schedule gets its
own K once more, from that schedule (:func:`run_budget`), and hands it to the step plan.

- reference and anchor connected: the schedule at K between them (the ladder's measured one, else the
  OT interpolation, ``transport.placed_at``). One schedule alone is used as it is (the budget inputs do
  not apply; the preview widget shows the same).
- the free default guards both: where the anchor's validation measured what Apply would run with nothing
  connected (the default below, with the default operator) better than the calibrated choice -- at a
  ladder budget, or at the reference's or the anchor's own budget and beyond it -- that is what runs, and
  the description says so.
- nothing connected: made for each run's own step count. A shipped preset (LeMiCa's published schedules)
  only near its own setting: the model it was made for (same family and block count) at about its 50
  steps; otherwise a uniform schedule: a schedule tuned for another model or step count can be worse than
  uniform, and nothing here has measured this one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from ...otcache_engine import Schedule
from ...otcache_engine.errors import OTCacheError
from ...otcache_engine.runtime import StepPlan
from ...otcache_engine.runtime.reuse import NAMES as REUSE_NAMES
from ...otcache_engine.schedules import transport, warp
from ...otcache_engine.schedules.baselines import uniform_k
from ...otcache_engine.schedules.schedule import budget_for_speedup
from .families import FamilySpec
from .operators import AUTO, DEFAULT, SPACES, Operator, operator_for

PREVIEW_STEPS = 20
MODES = ("speedup", "compute steps")
PRESET_STEPS = (40, 60)   # "near its own setting": the presets are made for 50 steps
FREE_DEFAULT = "free default"   # the ladder's record of what connecting nothing measured
TRANSFER = "transfer"           # provenance: the calibration's steps and the anchor's speed-up, for each run
ASKED = "asked_speedup"         # provenance: the speed-up Apply was asked, which a run on other steps keeps


@dataclass(frozen=True)
class BudgetRequest:
    """OTCache Apply's schedule inputs: reference / anchor (optional), the budget asked, the reuse choice."""

    reference: Schedule | None = None
    anchor: Schedule | None = None
    mode: str = "speedup"
    speedup: float = 2.0
    budget: int = 0                     # K in 'compute steps' mode
    reuse: str = AUTO
    gamma: float = 0.5
    order: int = 0                      # taylor's forecast order (0: its default)
    space: str = ""                     # where omnicache / taylor extrapolate ("": the family's cache space)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OTCacheError(f"unknown budget mode {self.mode!r}; choose one of {list(MODES)}")
        if not (isinstance(self.speedup, (int, float)) and math.isfinite(self.speedup) and self.speedup >= 1.0):
            raise OTCacheError(f"speedup must be a number >= 1.0 (1.0 = compute every step), got {self.speedup!r}")
        if self.mode == "compute steps" and (not isinstance(self.budget, int) or self.budget < 1):
            raise OTCacheError(f"compute_steps must be a positive integer in 'compute steps' mode, "
                               f"got {self.budget!r}")
        if self.reuse != AUTO and self.reuse not in REUSE_NAMES:
            raise OTCacheError(f"unknown reuse operator {self.reuse!r}; choose one of {list(REUSE_NAMES)}")
        if self.space not in SPACES:
            raise OTCacheError(f"unknown cache space {self.space!r}; choose one of {list(SPACES)}")

    @property
    def connected(self) -> bool:
        return self.reference is not None or self.anchor is not None

    @property
    def per_run(self) -> bool:
        """True when the schedule can only be made once the run's step count is known."""
        return not self.connected

    def k_for(self, num_steps: int) -> int:
        """K of ``num_steps`` steps for this request: the only place a speed-up becomes a step count."""
        if self.mode == "compute steps":
            if self.budget > num_steps:
                raise OTCacheError(f"compute_steps={self.budget} exceeds the schedule's {num_steps} steps; "
                                   f"use at most {num_steps}")
            return self.budget
        return budget_for_speedup(num_steps, self.speedup)


@dataclass(frozen=True)
class Resolution:
    """The schedule and operator a request resolves to, and why."""

    schedule: Schedule
    operator: Operator
    operator_origin: str                # "chosen", "measured by ...", "default (nothing measured)"
    description: str                    # where the schedule came from, one line
    warnings: tuple[str, ...] = ()
    quality: Mapping | None = None      # measured on the calibration pairs at this K (metric, errors)

    @property
    def budget(self) -> int:
        return self.schedule.budget


def resolve(request: BudgetRequest, family: FamilySpec | None = None, steps: int | None = None) -> Resolution:
    """The schedule and operator for ``request``; ``steps`` is the run's step count for a per-run request
    (``PREVIEW_STEPS`` to show one without a run), ``family`` the model's (whether a shipped preset fits)."""
    ref, anc = request.reference, request.anchor
    if not request.connected:
        n, k = _per_run_budget(request, steps)
        schedule, description = default_schedule(family, n, k)
        return _resolved(request, schedule, description)
    if ref is None or anc is None:
        only, role = (ref, "reference") if ref is not None else (anc, "anchor")
        return _resolved(request, only, f"the {role} as connected (connect both a reference and an anchor to set "
                                        "the budget)", budget=only.budget)
    k = request.k_for(ref.num_steps)
    entry = transport.measured_entry(anc, ref.num_steps, k)
    measured = quality(anc, ref.num_steps, k, entry)
    asked = {ASKED: float(request.speedup)} if request.mode == "speedup" else {}
    if request.reuse == AUTO and free_default_won(anc, ref.num_steps, k, entry):
        free = _free_default(family, ref, k)
        return replace(free, schedule=free.schedule.with_provenance(**asked), quality=measured)
    schedule = transport.placed_at(ref, anc, k, entry).with_provenance(**asked)
    if request.reuse == AUTO:
        schedule = schedule.with_provenance(**{TRANSFER: {"steps": ref.num_steps,
                                                          "anchor_speedup": ref.num_steps / anc.budget}})
    return replace(_resolved(request, schedule, describe(schedule, k), budget=k, entry=entry), quality=measured)


def _per_run_budget(request: BudgetRequest, steps: int | None) -> tuple[int, int]:
    """(N, K) of a request with nothing connected: the run's own N (the preview's when there is no run yet, at
    least K) and K, at most N -- a run with fewer steps than the compute steps asked computes every step."""
    asked = request.budget if request.mode == "compute steps" else 0
    n = steps or max(PREVIEW_STEPS, asked)
    return n, min(asked, n) if asked else request.k_for(n)


def free_default_for_run(schedule: Schedule, steps: int) -> bool:
    """Whether a run of ``steps`` steps should run the free default instead of ``schedule``: one with fewer
    steps than the calibration at a speed-up beyond the anchor's, where nothing measured the schedule. On the
    transfer benchmark (docs/results/transfer, gap cap kept relative to the uniform gap) calibrated schedules
    there went from -3.0 dB (Flux, 18 of 30 steps, 6x) to +8.6 dB against the free default: the rule gives
    up +0.7..+8.6 dB in six cells to keep the two that fell below (-3.0, -0.6)."""
    limit = schedule.provenance.get(TRANSFER)
    if not isinstance(limit, Mapping):
        return False
    return steps < limit.get("steps", 0) and schedule.speedup > limit.get("anchor_speedup", float("inf")) + 1e-9


def transfer_note(schedule: Schedule) -> str:
    """What Apply's plot says about runs that will take the free default instead (empty when none will)."""
    limit = schedule.provenance.get(TRANSFER)
    if not isinstance(limit, Mapping) or schedule.speedup <= limit.get("anchor_speedup", float("inf")) + 1e-9:
        return ""
    return (f"runs of fewer than {limit['steps']} steps take the free default at this speed-up (beyond the "
            f"anchor's {limit['anchor_speedup']:.1f}x, where calibrated schedules were measured below it)")


def quality(anchor: Schedule, num_steps: int, k: int, entry: Mapping | None) -> dict | None:
    """What the anchor's validation measured at exactly K on the calibration pairs: the calibrated choice's
    error and the free default's, in the search's metric (lower is better); None where nothing was."""
    ladder = anchor.provenance.get(transport.LADDER_KEY)
    if not isinstance(ladder, Mapping) or ladder.get("num_steps") != num_steps:
        return None
    record, error = None, None
    if entry is not None and isinstance(entry.get("errors"), Mapping):
        record, error = entry, entry["errors"].get(entry.get("source"))
    for end in (ladder.get("ends") or {}).values():
        if record is None and isinstance(end, Mapping) and end.get("budget") == k:
            record, error = end, end.get("error")
    free = record.get(FREE_DEFAULT) if record is not None else None
    if not isinstance(error, (int, float)) or not isinstance(free, Mapping):
        return None
    return {"metric": str(ladder.get("metric", "")), "budget": k, "calibrated": float(error),
            "free_default": float(free.get("error", float("nan")))}


def quality_line(q: Mapping | None) -> str:
    """One line for the plot: what was measured at this K, and the margin over the free default."""
    if not q:
        return ""
    better = q["free_default"] / q["calibrated"] if q["calibrated"] > 0 else float("inf")
    return (f"measured at K={q['budget']} on the calibration pairs ({q['metric']}, lower is better): calibrated "
            f"{q['calibrated']:.4g}, free default {q['free_default']:.4g} ({better:.2f}x)")


def free_default_won(anchor: Schedule, num_steps: int, k: int, entry: Mapping | None) -> bool:
    """Whether the anchor's validation measured the free default better than the calibration at K: at a
    ladder budget its entry says so; elsewhere the nearer end's check does (the reference's budget and
    above, the anchor's and below, and in between when only the ends were validated)."""
    if entry is not None:
        return bool(entry.get(FREE_DEFAULT, {}).get("wins"))
    ladder = anchor.provenance.get(transport.LADDER_KEY)
    if not isinstance(ladder, Mapping) or ladder.get("num_steps") != num_steps:
        return False
    ends = ladder.get("ends") if isinstance(ladder.get("ends"), Mapping) else {}
    ends = [e for e in ends.values() if isinstance(e, Mapping) and isinstance(e.get("budget"), int)]
    if not ends:
        return False
    nearest = min(ends, key=lambda e: abs(e["budget"] - k))
    return bool(nearest.get(FREE_DEFAULT, {}).get("wins"))


def _free_default(family: FamilySpec | None, reference: Schedule, k: int) -> Resolution:
    schedule, made = default_schedule(family, reference.num_steps, k)
    schedule = schedule.replace(sigmas=reference.sigmas).with_provenance(ladder_source=FREE_DEFAULT)
    return Resolution(schedule, DEFAULT, "the free default's, measured better here on the calibration pairs",
                      f"runs the free default ({made.split(' (')[0]}, as with nothing connected): the "
                      f"anchor's validation measured it better than the calibrated schedule at K={k} on the "
                      "calibration pairs")


def _resolved(request: BudgetRequest, schedule: Schedule, description: str, budget: int | None = None,
              entry: dict | None = None) -> Resolution:
    op, why = operator_for(request.reuse, request.gamma, request.reference, request.anchor, budget, entry,
                           request.order, request.space)
    return Resolution(schedule, op, why, description, tuple(schedule.provenance.get("warnings", ())))


def run_budget(schedule: Schedule, steps: int) -> int:
    """K of a run of ``steps`` steps that follows ``schedule``: its own K on its own step count, else the
    speed-up Apply was asked (its own N/K when none was: a schedule connected alone, or compute steps) kept
    (``warp.retarget_budget``: at least 2 when the last step is forced)."""
    if steps == schedule.num_steps:
        return schedule.budget
    asked = schedule.provenance.get(ASKED)
    return warp.retarget_budget(schedule, steps, asked if isinstance(asked, (int, float)) and asked >= 1 else None)


def plan_run(planned: Schedule | BudgetRequest, family: FamilySpec | None, run_sigmas: Sequence[float],
             grid: Callable[[Schedule], Sequence[float] | None],
             may_switch: bool = True) -> tuple[Schedule, StepPlan, bool]:
    """The schedule a sampling run follows, its step plan, and whether it is the free default taken instead
    of a calibrated one (:func:`free_default_for_run`; only where the run ``may_switch`` operator). A fixed
    schedule is used as it is, a per-run request resolved for the run's step count. ``grid(schedule)`` is
    the noise grid a schedule without sigmas is assumed to live on (the model's own scheduler for its N)."""
    n = len(run_sigmas) - 1
    free = isinstance(planned, Schedule) and may_switch and free_default_for_run(planned, n)
    if free:
        planned = BudgetRequest(mode="compute steps", budget=run_budget(planned, n))
    schedule = planned if isinstance(planned, Schedule) else resolve(planned, family, n).schedule
    reference = grid(schedule) if schedule.sigmas is None else None
    return schedule, StepPlan.build(schedule, run_sigmas, reference, budget=run_budget(schedule, n)), free


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
