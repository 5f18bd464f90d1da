"""Budget interpolation along the 1-D Wasserstein geodesic (method.md §5.3-5.8).

The reference (conservative budget K_ref, graph search) and the anchor (extreme
low budget K_anc, end-to-end search) are two warps phi_ref, phi_anc. A target
budget K_t gets lambda from a rule, the warp phi = (1-lambda) phi_ref + lambda
phi_anc -- the displacement interpolation of the two compute densities, which
*moves* dense regions instead of superposing them -- is sampled at K_t levels
and projected onto integer steps. No model call, well under a millisecond.

Choices (documented because the paper is silent):
- lambda is pinned to 0 at K_t = K_ref and 1 at K_t = K_anc for every rule, so
  the endpoints are reproduced exactly; outside [K_anc, K_ref] it is clamped to
  [0, 1] with an ``OTCacheWarning``.
- ``max_gap=None`` ("auto") caps gaps at the larger of the two endpoints'
  largest gaps, and raises that cap (with a warning) only when K_t would be
  infeasible under it; an explicit ``max_gap`` is strict and an infeasible K_t
  raises ``InfeasibleBudgetError`` naming the smallest feasible budget.
- K_t = N gives every step; K_t = 2 gives [0, N-1]; K_t > N is an error.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import InfeasibleBudgetError, ScheduleError
from .projection import check_feasible, project, smallest_feasible_budget, smallest_feasible_gap
from .schedule import Schedule
from .warp import COORDS, Warp, make_coordinate, resample, retarget, w2

Cost = Callable[[tuple[int, ...]], Any]  # steps -> comparable (float, or tuple for leximax)


class OTCacheWarning(UserWarning):
    """A result was produced, but outside the range where it is well founded."""


# --- budget -> lambda ------------------------------------------------------------

def linear_k(k_t: float, k_ref: float, k_anc: float) -> float:
    """(a) lambda linear in K."""
    return (k_ref - k_t) / (k_ref - k_anc)


def inverse_k(k_t: float, k_ref: float, k_anc: float) -> float:
    """(b) lambda linear in the speedup 1/K: moves slower near the reference."""
    return (1.0 / k_t - 1.0 / k_ref) / (1.0 / k_anc - 1.0 / k_ref)


def log_k(k_t: float, k_ref: float, k_anc: float) -> float:
    """(c) lambda linear in log K: between (a) and (b)."""
    return math.log(k_ref / k_t) / math.log(k_ref / k_anc)


RULES: dict[str, Callable[[float, float, float], float]] = {
    "linear_k": linear_k, "inverse_k": inverse_k, "log_k": log_k}
ALL_RULES = tuple(RULES) + ("predicted_error",)


def budget_to_lambda(rule: str, k_t: int, k_ref: int, k_anc: int) -> float:
    """Unclamped lambda of a closed-form rule; 0 when the endpoints share a budget."""
    if rule not in RULES:
        raise ScheduleError(f"unknown interpolation rule {rule!r}; expected one of {list(ALL_RULES)}")
    if k_ref == k_anc:
        return 0.0
    return float(RULES[rule](k_t, k_ref, k_anc))


def path_cost(weights: np.ndarray, objective: str = "leximax") -> Cost:
    """Predicted cost of a schedule from an edge-weight matrix w[i, j] (§3.1).

    ``leximax`` returns the descending-sorted edge weights (compared
    lexicographically), ``additive`` their sum. Gap-1 edges count as 0.
    """
    w = np.asarray(weights, dtype=np.float64)
    if objective not in ("leximax", "additive"):
        raise ScheduleError(f"unknown cost objective {objective!r}; expected 'leximax' or 'additive'")

    def cost(steps: tuple[int, ...]) -> Any:
        s = np.asarray(steps)
        edges = np.where(np.diff(s) > 1, np.nan_to_num(w[s[:-1], s[1:]], nan=np.inf), 0.0)
        return float(edges.sum()) if objective == "additive" else tuple(sorted(edges.tolist(), reverse=True))
    return cost


# --- interpolation -----------------------------------------------------------------

def interpolate(reference: Schedule, anchor: Schedule, budget: int, num_steps: int | None = None,
                rule: str = "linear_k", coord: str = "index", max_gap: int | None = None,
                sigmas: Sequence[float] | None = None, cost: Cost | None = None,
                lambda_grid: Sequence[float] | None = None, warn: bool = True) -> Schedule:
    """Schedule with ``budget`` computed steps between ``reference`` and ``anchor``.

    ``num_steps`` retargets both endpoints first (keeping their speedups);
    ``coord="sigma"`` interpolates noise progress on ``sigmas`` (default: the
    reference's grid). ``rule="predicted_error"`` picks lambda on
    ``lambda_grid`` (default 0, 0.01, ..., 1) minimising ``cost`` (see
    ``path_cost``) of the projected schedule. What a caller should be told (a budget outside the two, a
    raised gap cap) travels with the result, as ``provenance["warnings"]``; with ``warn`` it is also raised
    as an ``OTCacheWarning`` (for direct callers; the nodes read the provenance).
    """
    reference, anchor = _same_grid(reference, anchor, num_steps, sigmas)
    n = reference.num_steps
    _check_budget(budget, n)
    k_ref, k_anc = reference.budget, anchor.budget
    said: list[str] = []
    lam = _lambda(rule, budget, k_ref, k_anc, said)
    gap = _auto_gap(reference, anchor, budget, max_gap, said)
    if warn:
        _tell(said)
    if budget == n:
        steps: tuple[int, ...] = tuple(range(n))
    elif budget == 2 and reference.force_last:
        steps = (0, n - 1)
    else:
        chi_sigmas = sigmas if sigmas is not None else reference.sigmas
        place = _placer(reference, anchor, budget, gap, coord, chi_sigmas)
        if rule == "predicted_error" and lam is None:
            lam = _best_lambda(place, cost, lambda_grid)
        steps = place(lam)
    prov = _provenance(reference, anchor, budget, lam, rule, coord)
    if said:
        prov["warnings"] = said
    return Schedule(n, steps, kind="interpolated", force_last=reference.force_last, coord=coord,
                    sigmas=sigmas if sigmas is not None else reference.sigmas, max_gap=gap, provenance=prov)


def schedule_at(reference: Schedule, anchor: Schedule | None, budget: int) -> Schedule:
    """The schedule OTCache Apply runs at ``budget`` on the reference's steps (:func:`placed_at` after reading
    the anchor's validation ladder there)."""
    entry = measured_entry(anchor, reference.num_steps, budget) if anchor is not None else None
    return placed_at(reference, anchor, budget, entry)


def placed_at(reference: Schedule, anchor: Schedule | None, budget: int,
              entry: Mapping[str, Any] | None) -> Schedule:
    """The schedule at ``budget``, the anchor's ladder ``entry`` there already read (``measured_entry``).

    With an anchor: the entry's measured schedule, else the W2-geodesic interpolation; without one, the
    reference's own warp re-sampled at the budget (its shape kept). Warnings come back in
    ``provenance["warnings"]``.
    """
    if anchor is None or (anchor.budget == reference.budget and anchor.num_steps == reference.num_steps):
        return resample(reference, budget)
    if entry is None:
        return interpolate(reference, anchor, budget, num_steps=reference.num_steps, warn=False)
    return Schedule(reference.num_steps, tuple(entry["steps"]), kind="interpolated",
                    force_last=reference.force_last, sigmas=reference.sigmas,
                    provenance={**carried(reference), "budget": budget, "source": "validation ladder",
                                "ladder_source": str(entry.get("source", "measured")),
                                "steps": reference.num_steps})


def interpolate_many(anchors: Sequence[Schedule], budget: int, **kwargs: Any) -> Schedule:
    """Piecewise geodesic through several schedules sorted by budget (§5.7).

    Interpolates inside the bracket [K_{i+1}, K_i] that contains ``budget``;
    outside the range the nearest bracket is used (and lambda clamped, with a
    warning). Takes the keyword arguments of ``interpolate``.
    """
    if len(anchors) < 2:
        raise ScheduleError("interpolate_many needs at least two schedules")
    ordered = sorted(anchors, key=lambda s: s.budget, reverse=True)
    budgets = [s.budget for s in ordered]
    if len(set(budgets)) != len(budgets):
        raise ScheduleError(f"two schedules share a budget ({sorted(budgets, reverse=True)}); keep one per budget")
    i = next((i for i in range(len(ordered) - 1) if budget >= ordered[i + 1].budget), len(ordered) - 2)
    return interpolate(ordered[i], ordered[i + 1], budget, **kwargs)


LADDER_KEY = "ladder"


def ladder_entry(anchor: Schedule, num_steps: int, budget: int) -> Mapping[str, Any] | None:
    """What an anchor's validation ladder measured at ``budget`` for ``num_steps`` steps, if anything."""
    ladder = anchor.provenance.get(LADDER_KEY)
    if not isinstance(ladder, Mapping) or ladder.get("num_steps") != num_steps:
        return None
    entries = ladder.get("entries")
    entry = entries.get(str(int(budget))) if isinstance(entries, Mapping) else None
    return entry if isinstance(entry, Mapping) else None


def measured_entry(anchor: Schedule, num_steps: int, budget: int) -> Mapping[str, Any] | None:
    """The anchor's validation-ladder entry at ``budget`` when it holds a usable schedule for ``num_steps``.

    The anchor search checks the interpolation at every budget between the anchor and the reference
    against rival schedules on the calibration pairs and records the winner per budget
    (``{"num_steps": N, "entries": {"K": {"steps": [...], "source": "ot" | "graph" | "uniform", "reuse":
    {...}}}}`` in the anchor's provenance). A ladder for another step count, or an entry whose steps are
    not K distinct steps from 0 within N, is ignored (None): the plain interpolation is then used, and no
    operator is read from it.
    """
    entry = ladder_entry(anchor, num_steps, budget)
    if entry is None:
        return None
    steps = entry.get("steps")
    if not isinstance(steps, (list, tuple)) or len(steps) != budget or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in steps):
        return None
    if list(steps) != sorted(set(steps)) or steps[0] != 0 or steps[-1] >= num_steps:
        return None
    return entry


def w2_distance(a: Schedule, b: Schedule, coord: str = "index") -> float:
    """W2 between the compute densities of two schedules (any budgets and step counts)."""
    return w2(Warp.from_schedule(a, coord), Warp.from_schedule(b, coord))


# --- helpers -------------------------------------------------------------------------

def _same_grid(reference: Schedule, anchor: Schedule, num_steps: int | None,
               sigmas: Sequence[float] | None) -> tuple[Schedule, Schedule]:
    if reference.force_last != anchor.force_last:
        raise ScheduleError("reference and anchor differ in force_last; make both compute the last step or neither")
    if num_steps is None:
        if reference.num_steps != anchor.num_steps:
            raise ScheduleError(
                f"reference has {reference.num_steps} steps but anchor has {anchor.num_steps}; "
                "pass num_steps (--steps) to retarget both")
        return reference, anchor
    return (retarget(reference, num_steps, sigmas=sigmas), retarget(anchor, num_steps, sigmas=sigmas))


def _check_budget(budget: int, num_steps: int) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise InfeasibleBudgetError(f"budget must be a positive integer, got {budget!r}")
    if budget > num_steps:
        raise InfeasibleBudgetError(
            f"budget K={budget} is out of range: at most num_steps={num_steps} steps can be computed")


def _tell(said: list[str]) -> None:
    for message in said:
        warnings.warn(message, OTCacheWarning, stacklevel=4)


def _lambda(rule: str, budget: int, k_ref: int, k_anc: int, said: list[str]) -> float | None:
    """Clamped lambda, or None when predicted_error must choose it."""
    if rule not in ALL_RULES:
        raise ScheduleError(f"unknown interpolation rule {rule!r}; expected one of {list(ALL_RULES)}")
    lo, hi = min(k_ref, k_anc), max(k_ref, k_anc)
    if not lo <= budget <= hi:
        said.append(f"budget K={budget} is outside [{lo}, {hi}] spanned by the two schedules; the nearest "
                    "one's shape is re-sampled, unvalidated (add a schedule nearer that budget)")
    if budget == k_ref:
        return 0.0
    if budget == k_anc:
        return 1.0
    if rule == "predicted_error":
        return None if lo < budget < hi else (0.0 if abs(budget - k_ref) < abs(budget - k_anc) else 1.0)
    return min(1.0, max(0.0, budget_to_lambda(rule, budget, k_ref, k_anc)))


def _auto_gap(reference: Schedule, anchor: Schedule, budget: int, max_gap: int | None, said: list[str]) -> int:
    n, force_last = reference.num_steps, reference.force_last
    if max_gap is not None:
        check_feasible(budget, n, max_gap, force_last)
        return max_gap
    gap = max(reference.largest_gap, anchor.largest_gap)
    check_feasible(budget, n, None, force_last)
    if budget < smallest_feasible_budget(n, gap, force_last):
        raised = smallest_feasible_gap(n, budget, force_last)
        said.append(f"budget K={budget} needs gaps longer than the schedules' largest ({gap}); "
                    f"max gap raised to {raised}")
        gap = raised
    return gap


def _placer(reference: Schedule, anchor: Schedule, budget: int, gap: int, coord: str,
            sigmas: Sequence[float] | None) -> Callable[[float], tuple[int, ...]]:
    """lambda -> projected schedule steps, with the warps built once."""
    if coord not in COORDS:
        raise ScheduleError(f"unknown coordinate {coord!r}; expected one of {list(COORDS)}")
    phi_ref = Warp.from_schedule(reference, coord, reference.sigmas if reference.sigmas is not None else sigmas)
    phi_anc = Warp.from_schedule(anchor, coord, anchor.sigmas if anchor.sigmas is not None else sigmas)
    target = make_coordinate(coord, reference.num_steps, reference.force_last, sigmas)
    n, force_last = reference.num_steps, reference.force_last

    def place(lam: float) -> tuple[int, ...]:
        phi = (1.0 - lam) * phi_ref.sample(budget) + lam * phi_anc.sample(budget)
        return project(target.inverse(phi), n, gap, force_last)
    return place


def _best_lambda(place: Callable[[float], tuple[int, ...]], cost: Cost | None,
                 grid: Sequence[float] | None) -> float:
    """argmin of the predicted cost over the lambda grid; ties go to the smaller lambda."""
    if cost is None:
        raise ScheduleError("rule 'predicted_error' needs a cost function (e.g. path_cost(weights))")
    lams = np.linspace(0.0, 1.0, 101) if grid is None else np.clip(np.asarray(grid, dtype=np.float64), 0, 1)
    best_lam, best_cost, seen = float(lams[0]), None, {}
    for lam in lams:
        steps = place(float(lam))
        if steps not in seen:
            seen[steps] = cost(steps)
        if best_cost is None or seen[steps] < best_cost:
            best_lam, best_cost = float(lam), seen[steps]
    return best_lam


# Identity of the setting both endpoints were made for; anything else describes one endpoint only.
_CARRIED = ("model_family", "model", "model_hash", "sampler", "scheduler", "resolution", "calibration_id",
            "shift", "guidance")


def carried(reference: Schedule) -> dict[str, Any]:
    """The provenance that describes the setting (model, sampler, ...), not one schedule."""
    return {k: v for k, v in reference.provenance.items() if k in _CARRIED}


def _provenance(reference: Schedule, anchor: Schedule, budget: int, lam: float | None, rule: str,
                coord: str) -> dict[str, Any]:
    prov = carried(reference)
    prov.update(source="otcache interpolation", budget=budget, steps=reference.num_steps,
                rule=rule, coord=coord, reference=_summary(reference), anchor=_summary(anchor))
    prov["lambda"] = lam
    return prov


def _summary(s: Schedule) -> dict[str, Any]:
    out: dict[str, Any] = {"budget": s.budget, "kind": s.kind}
    source = s.provenance.get("source")
    if source is not None:
        out["source"] = source
    return out
