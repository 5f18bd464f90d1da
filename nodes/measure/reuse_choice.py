"""Measured choices of Calibrate: the reuse operator that suits this model, and a reference that beats uniform.

Which reuse operator is best depends on the model far more than any schedule does (measured in the in-host
benchmark: 5-8 dB between operators at equal K), and the graph search's error model can be wrong for a
model (it assumes errors of skipped segments add up). Both are questions about the real end-to-end error,
so both are answered by sampling the calibration pairs with the candidates (``judge.Judge``) -- after the
calibration runs, whose final latents are the uncached references, so no extra uncached run is needed.

Operators are scored on two schedules, the reference and the graph's schedule at the anchor's budget, so
the choice holds across the range the method interpolates over; errors are averaged in log space (a 2x
error counts the same at every budget). That one operator is what the anchor is searched with. The best
operator can change with the budget, though (in the in-host benchmark, Wan 2.1 at 30 steps: output reuse
best on average, gamma-1 extrapolation 14 dB better at the reference's budget and above), so ``auto``
follows what was measured where it was measured (``runtime.operators.measured_at``): at or above the reference's budget
the operator best on the reference itself; in between, the validation ladder's winner, which samples the
schedules Apply will run with both operators. Interpolating the two probes' errors instead was measured
and rejected: the low probe (a graph schedule) favours output reuse where the anchor, searched with
gamma-1 extrapolation, does better with it (-7 to -8 dB on Flux at N/4-N/5).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ...otcache_engine import Schedule
from ...otcache_engine.schedules.baselines import uniform_k
from ...otcache_engine.errors import OTCacheError
from ...otcache_engine.schedules.graph_search import reference_schedule
from ...otcache_engine.metrics import Perceptual, latent_rel_l1
from ..runtime.operators import AT_REFERENCE, AUTO, CANDIDATES, Operator, as_operator
from .judge import Judge

LATENT = Perceptual("latent-rel-l1", "latent", latent_rel_l1)


@dataclass(frozen=True)
class Choice:
    """What was measured: the operator and reference chosen, and every candidate's error."""

    operator: Operator
    reference: Schedule
    operator_errors: dict[str, float]
    reference_errors: dict[str, float]
    at_reference: Operator | None = None
    calls: int = 0       # model calls it spent (shared prefixes make it less than ``calls()`` planned)
    saving: str = ""     # what prefix sharing saved, for the log

    def provenance(self) -> dict[str, Any]:
        out = {**self.operator.as_dict(),
               "reuse_errors": self.operator_errors, "reference_check": self.reference_errors}
        if self.at_reference is not None:
            out[AT_REFERENCE] = self.at_reference.as_dict()
        return out


def ladder_operators(op: Operator, reuse: str, reference: Schedule) -> list[Operator]:
    """What the validation ladder samples with: the anchor's operator ``op``, and with ``auto`` also the
    one measured best on the reference when that differs."""
    at_ref = as_operator(reference.provenance.get(AT_REFERENCE)) if reuse == AUTO else None
    return [op] if at_ref is None or at_ref == op else [op, at_ref]


def log_mean(values: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(np.maximum(np.asarray(values, dtype=np.float64), 1e-12)))))


def judge_for(model: Any, data: Any) -> Judge:
    """The calibration pairs, with their recorded final latents as the uncached references."""
    return Judge(model, data.pairs, LATENT, refs=data.finals)


def probe_schedules(data: Any, reference: Schedule, low_budget: int) -> list[Schedule]:
    """The reference and the graph's schedule at ``low_budget`` (uniform if the graph has none there)."""
    low = data.widened_graph_schedule(low_budget)
    return [reference, low or uniform_k(reference.num_steps, low_budget, force_last=reference.force_last)]


def calls(ref_budget: int, low_budget: int, pairs: int) -> int:
    """Model calls of :func:`choose` (at most): every candidate on both probes, two rival references, and
    one operator on a rival that replaced the reference."""
    return pairs * (len(CANDIDATES) * (ref_budget + low_budget) + 3 * ref_budget)


def choose(model: Any, data: Any, reference: Schedule, low_budget: int,
           on_call: Callable[[int], None] = lambda n: None) -> Choice:
    """Score every operator, then check the reference against its rivals with the best operator."""
    if not data.pairs:
        raise OTCacheError("measuring needs the calibration runs' prompts and seeds (a calibration in memory)")
    judge = judge_for(model, data)

    def mean(s: Schedule, op: Operator) -> float:
        return judge.mean(s, op, lambda: on_call(s.budget))

    probes = probe_schedules(data, reference, low_budget)
    table = {op.label(): [mean(s, op) for s in probes] for op in CANDIDATES}
    errors = {label: log_mean(scores) for label, scores in table.items()}
    best = min(CANDIDATES, key=lambda op: errors[op.label()])
    ref_errors = {"graph": table[best.label()][0]}
    rivals = {"uniform": uniform_k(reference.num_steps, reference.budget, force_last=reference.force_last)}
    additive = _additive(data, reference)
    if additive is not None and additive.compute_steps != reference.compute_steps:
        rivals["graph (additive)"] = additive
    for name, s in rivals.items():
        ref_errors[name] = mean(s, best)
    winner = min(ref_errors, key=ref_errors.get)
    chosen = reference if winner == "graph" else rivals[winner].replace(
        kind="reference", sigmas=reference.sigmas, max_gap=None, provenance=dict(reference.provenance))
    at_reference = _best_on(chosen, winner != "graph", table, best, ref_errors[winner], mean)
    return Choice(best, chosen.with_provenance(reference_source=winner), errors, ref_errors, at_reference,
                  judge.calls, judge.saving())


def _best_on(chosen: Schedule, replaced: bool, table: dict[str, list[float]], best: Operator, best_error: float,
             mean: Callable[[Schedule, Operator], float]) -> Operator:
    """The operator best on the reference that will be used: the graph reference's winner, re-measured
    against ``best`` (one more sampling of the pairs) when a rival replaced that reference."""
    on_graph = min(CANDIDATES, key=lambda op: table[op.label()][0])
    if not replaced or on_graph == best:
        return on_graph
    return on_graph if mean(chosen, on_graph) < best_error else best


def _additive(data: Any, reference: Schedule) -> Schedule | None:
    if data.settings.get("objective", "leximax") == "additive":
        return None
    try:
        return reference_schedule(data.weights, reference.budget, max_gap=data.max_gap, objective="additive",
                                  force_last=reference.force_last, kind="reference")
    except OTCacheError:
        return None
