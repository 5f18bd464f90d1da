"""Reuse operators as a user or a measurement names them, and reading what a calibration measured.

An :class:`Operator` is the pair OTCache Apply's ``reuse`` and ``gamma`` inputs make (and, for the
forecasting ``taylor``, its order). ``auto`` runs the
operator measured where the schedule runs (:func:`measured_at`): Calibrate stores the one best on the
reference itself, the validation ladder the best (schedule, operator) pair at each budget in between, and
the schedules carry both. Only the reading lives here, so that the budget resolver (which every run asks)
never imports the code that samples; the measuring is ``measure.reuse_choice`` and ``measure.ladder``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...otcache_engine import Schedule
from ...otcache_engine.runtime.reuse import NAMES, TAYLOR_ORDERS

TAYLOR = "taylor"
EXTRAPOLATING = ("omnicache", TAYLOR)    # operators that can work in the output space of a block-cached model
SPACES = ("", "residual", "output")


@dataclass(frozen=True)
class Operator:
    """A reuse operator as the user picks it (``reuse`` of OTCache Apply), its gamma (omnicache only) and its
    order (taylor only: 1 or 2; 0 there means the default, 2). The order is kept 0 for every other operator,
    so that equal operators compare equal whatever was written for it."""

    reuse: str = "residual"
    gamma: float = 0.5
    order: int = 0
    space: str = ""           # extrapolating operators only: "" = the family's cache space, "output" = the output

    def __post_init__(self) -> None:
        if self.reuse != TAYLOR:
            object.__setattr__(self, "order", 0)
        elif self.order == 0:
            object.__setattr__(self, "order", TAYLOR_ORDERS[-1])
        if self.reuse not in EXTRAPOLATING or self.space == "residual":
            object.__setattr__(self, "space", "")

    def label(self) -> str:
        where = ", output" if self.space == "output" else ""
        if self.reuse == TAYLOR:
            return f"taylor(order={self.order}{where})"
        return f"omnicache(gamma={self.gamma:g}{where})" if self.reuse == "omnicache" else self.reuse

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reuse": self.reuse, "gamma": float(self.gamma)}
        if self.reuse == TAYLOR:
            out["order"] = self.order
        if self.space:
            out["space"] = self.space
        return out


# With nothing measured: the one operator never below the naive skip (the whole output of the last computed
# step) on uniform schedules at N/2..N/6 of every in-host benchmark cell at 30 and 50 steps, CFG off and on
# (docs/results/operators): half-damped extrapolation of the whole output. Extrapolating the block residual
# (gamma 1) is up to 4-6 dB better on the Flux model but up to 10 dB worse on the Wan models than this one,
# and below the naive skip from 2x (cfg 1) and 3x (cfg 3).
DEFAULT = Operator("omnicache", 0.5, space="output")
AUTO = "auto"
AT_REFERENCE = "reuse_at_reference"   # provenance: the operator measured best on the reference schedule itself
# Every operator Calibrate's measurement scores (and ``auto`` can therefore follow): the naive skip, the
# extrapolations of the block residual (OmniCache's gamma 1; TaylorSeer's order 1, arXiv 2503.06923) and of
# the whole output. Left out because another candidate beat them at every budget of every benchmark cell
# (docs/results/operators): plain residual reuse, gamma below 1 on the residual, Taylor order 2.
CANDIDATES: tuple[Operator, ...] = (Operator("output"), Operator("omnicache", 1.0), Operator(TAYLOR, order=1),
                                    DEFAULT, Operator("omnicache", 1.0, space="output"))


def as_operator(record: Any) -> Operator | None:
    """An operator recorded as ``{"reuse": ..., "gamma": ...}`` (+ ``"order"`` for taylor; without one, its
    default) (a schedule's provenance, a ladder entry)."""
    if not isinstance(record, Mapping):
        return None
    reuse, gamma, order = record.get("reuse"), record.get("gamma", 0.5), record.get("order", 0)
    space = record.get("space", "")
    if reuse not in NAMES or not _number(gamma) or space not in SPACES:
        return None
    if reuse == TAYLOR and (isinstance(order, bool) or not isinstance(order, int) or order not in (0,) + TAYLOR_ORDERS):
        return None
    return Operator(str(reuse), float(gamma), int(order) if reuse == TAYLOR else 0, space)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def recorded(*schedules: Schedule | None) -> Operator | None:
    """The operator a schedule's calibration measured (the first schedule that records one)."""
    return next((op for op in (as_operator(s.provenance) for s in schedules if s is not None) if op), None)


def measured_at(budget: int, reference: Schedule | None,
                entry: Mapping[str, Any] | None) -> tuple[Operator, str] | None:
    """The operator measured best at ``budget`` (K of the reference's steps), where one was measured there:
    at or above the reference's budget Calibrate's, else that of the ladder ``entry`` Apply runs (its steps
    checked by ``transport.measured_entry``)."""
    if reference is None:
        return None
    if budget >= reference.budget:
        op = as_operator(reference.provenance.get(AT_REFERENCE))
        if op is not None:
            return op, "measured by Calibrate on the reference"
    op = as_operator(entry.get("reuse")) if entry is not None else None
    return (op, f"measured by the validation ladder at K={budget}") if op is not None else None


def operator_for(reuse: str, gamma: float, reference: Schedule | None = None, anchor: Schedule | None = None,
                 budget: int | None = None, entry: Mapping[str, Any] | None = None, order: int = 0,
                 space: str = "") -> tuple[Operator, str]:
    """The operator to run with, and where it came from: an explicit choice, or for ``auto`` the one measured
    best at ``budget`` (:func:`measured_at`), else the schedules' overall measured one, else :data:`DEFAULT`.
    A taylor chosen by name without an order (OTCache Apply has no order input) forecasts at order 2."""
    if reuse != AUTO:
        return Operator(reuse, float(gamma), order, space), "chosen"
    at = measured_at(budget, reference, entry) if budget is not None else None
    if at is not None:
        return at
    found = recorded(reference, anchor)
    if found is not None:
        return found, "measured by Calibrate"
    return DEFAULT, "default (nothing measured)"
