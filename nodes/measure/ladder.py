"""The interpolation, checked where it will be used: a validation ladder over every budget in between.

OT interpolation places any budget between the anchor and the reference instantly, but nothing guarantees
the placed schedule is good: in the in-host benchmark an interpolated schedule lost 2.4 dB to a uniform one
at one budget while winning by 5-6 dB at its neighbours (with an extrapolating reuse operator the exact gap
pattern matters). So after the anchor search, at every budget strictly between the two, the instant
candidates are sampled on the calibration pairs with the deployed operator -- the interpolation and the
graph search's optimum at that budget (from the calibration's weights) -- and the best is recorded per budget in the anchor (``transport.measured_entry`` reads it). When Calibrate measured another
operator best on the reference than the one the anchor was searched with, each candidate is sampled with
both, and the entry records the winning pair (``runtime.operators.measured_at`` reads the operator). OTCache Apply then stays a table
lookup: no model call when the slider moves, and never a budget where a measured rival was better.

The free default guards all of it (:func:`guard`): what Apply runs with nothing connected (the family's
default schedule at K with the default operator, ``resolver.default_schedule``) is sampled on the same pairs
at every budget of the ladder and at both ends, the reference's and the anchor's own budgets. Where it
is better than everything calibrated, the record says so and Apply runs it (beyond an end: from that end's
verdict), so a calibration never leaves the user below what connecting nothing gives. The cheap validation
(:func:`ends_only`) measures only the two ends; Apply then follows the nearer end's verdict in between.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ...otcache_engine import Schedule
from ...otcache_engine.errors import OTCacheError
from ...otcache_engine.schedules.transport import LADDER_KEY, schedule_at
from ..runtime.operators import DEFAULT, Operator
from ..runtime.resolver import FREE_DEFAULT as FREE
from .judge import Judge


def budgets(reference: Schedule, anchor: Schedule) -> range:
    return range(anchor.budget + 1, reference.budget)


def calls(reference: Schedule, anchor: Schedule, pairs: int, operators: int = 1) -> int:
    """Model calls of :func:`build` at most (two candidates per budget and operator, fewer when they
    coincide)."""
    return span_calls(reference.budget, anchor.budget, pairs, operators)


def span_calls(k_ref: int, k_anc: int, pairs: int, operators: int = 1) -> int:
    """:func:`calls` for the budgets alone."""
    return len(CANDIDATES) * operators * pairs * sum(range(k_anc + 1, k_ref))


CANDIDATES = ("ot", "graph")


def candidates(reference: Schedule, anchor: Schedule, calibration: Any, budget: int) -> dict[str, Schedule]:
    """The interpolation and the graph's optimum at ``budget``; one entry per distinct schedule. (A uniform
    schedule with the deployed operator was a third candidate: it won 1 of the 66 budgets of the in-host
    benchmark, and the free default, a uniform schedule with the default operator, is measured anyway.)"""
    n = reference.num_steps
    found = {"ot": plain_interpolation(reference, anchor, budget)}
    if calibration is not None and calibration.num_steps == n:
        graph = calibration.widened_graph_schedule(budget)
        if graph is not None:
            found["graph"] = graph
    distinct: dict[str, Schedule] = {}
    for name, s in found.items():
        if all(s.compute_steps != t.compute_steps for t in distinct.values()):
            distinct[name] = s
    return distinct


def build(judge: Judge, reference: Schedule, anchor: Schedule, calibration: Any, operators: Sequence[Operator],
          on_call: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    """The ladder: per budget, the measured best candidate and operator, its steps and every candidate's
    error with that operator (the others' under ``by_reuse`` when there are several)."""
    if reference.num_steps != anchor.num_steps:
        raise OTCacheError("the ladder needs the reference and the anchor on the same step count")
    entries = {}
    for k in budgets(reference, anchor):
        cands = candidates(reference, anchor, calibration, k)
        table = {op: {name: judge.mean(s, op, lambda s=s: on_call(s.budget)) for name, s in cands.items()}
                 for op in operators}
        op, best = min(((op, name) for op, errors in table.items() for name in errors),
                       key=lambda pair: table[pair[0]][pair[1]])
        entries[str(k)] = {"steps": list(cands[best].compute_steps), "source": best, "errors": table[op],
                           "reuse": op.as_dict()}
        if len(operators) > 1:
            entries[str(k)]["by_reuse"] = {o.label(): errors for o, errors in table.items()}
    return {"num_steps": reference.num_steps, "reuse": operators[0].as_dict(), "metric": judge.metric.name,
            "entries": entries}


def summary(ladder: dict[str, Any]) -> str:
    """One line: how often each candidate won."""
    wins: dict[str, int] = {}
    for entry in ladder.get("entries", {}).values():
        wins[entry["source"]] = wins.get(entry["source"], 0) + 1
    if not wins:
        return ("validated the two ends only" if ladder.get("ends")
                else "no budget between the anchor and the reference")
    shown = ", ".join(f"{name} {count}" for name, count in sorted(wins.items(), key=lambda kv: -kv[1]))
    return f"validated {sum(wins.values())} budgets between anchor and reference (best: {shown})"


def plain_interpolation(reference: Schedule, anchor: Schedule, budget: int) -> Schedule:
    """The OT interpolation alone, whatever ladder the anchor carries."""
    if LADDER_KEY in anchor.provenance:
        anchor = anchor.replace(provenance={k: v for k, v in anchor.provenance.items() if k != LADDER_KEY})
    return schedule_at(reference, anchor, budget)




def guard_calls(k_ref: int, k_anc: int, pairs: int, every_budget: bool = True) -> int:
    """Model calls of :func:`guard` at most: the free default at every budget from the anchor's to the
    reference's (or at the two ends only), and the reference itself once with its operator."""
    free = sum(range(k_anc, k_ref + 1)) if every_budget else k_anc + k_ref
    return pairs * (free + k_ref)


def ends_only(reference: Schedule, judge: Judge, operators: Sequence[Operator]) -> dict[str, Any]:
    """A ladder without budgets in between, for :func:`guard` to measure the two ends only (the cheap
    validation: Apply follows the nearer end's verdict in between)."""
    return {"num_steps": reference.num_steps, "reuse": operators[0].as_dict(), "metric": judge.metric.name,
            "entries": {}}


def guard(ladder: dict[str, Any], judge: Judge, reference: Schedule, anchor: Schedule, anchor_error: float,
          ends: dict[str, Operator], free_at: Callable[[int], Schedule],
          on_call: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    """The ladder with the free default measured beside every entry and at both ends.

    ``free_at(K)`` is the schedule Apply runs at K with nothing connected; ``anchor_error`` the anchor's own
    score on these pairs (the search measured it); ``ends`` the operators the reference and the anchor run
    with. Each record gains ``free_default``: its error, steps and operator, and ``wins`` when it beat the
    calibrated choice there."""
    def measured(k: int, own: float) -> dict[str, Any]:
        s = free_at(k)
        error = judge.mean(s, DEFAULT, lambda: on_call(s.budget))
        return {"error": error, "steps": list(s.compute_steps), "reuse": DEFAULT.as_dict(), "wins": error < own}

    entries = {k: {**e, FREE: measured(int(k), e["errors"][e["source"]])} for k, e in ladder["entries"].items()}
    ref_error = judge.mean(reference, ends["reference"], lambda: on_call(reference.budget))
    out = {**ladder, "entries": entries}
    out["ends"] = {"reference": {"budget": reference.budget, "error": ref_error, "reuse": ends["reference"].as_dict(),
                                 FREE: measured(reference.budget, ref_error)},
                   "anchor": {"budget": anchor.budget, "error": anchor_error, "reuse": ends["anchor"].as_dict(),
                              FREE: measured(anchor.budget, anchor_error)}}
    return out


def guard_summary(ladder: dict[str, Any]) -> str:
    """One line: at how many of the measured budgets the free default won."""
    records = list(ladder.get("entries", {}).values()) + list(ladder.get("ends", {}).values())
    won = sum(1 for r in records if r.get(FREE, {}).get("wins"))
    return (f"the free default (nothing connected) was better at {won} of {len(records)} measured budgets; "
            "Apply runs it there" if won else f"the calibration beat the free default at all {len(records)} "
            "measured budgets")
