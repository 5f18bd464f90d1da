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
from ...otcache_engine.runtime.reuse import TAYLOR_ORDERS

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


# With nothing measured: the operator that won most cells of the in-host benchmark for uniform schedules
# (omnicache at gamma 1 in the block-residual space; plain residual reuse was last on every model there).
DEFAULT = Operator("omnicache", 1.0)
AUTO = "auto"
AT_REFERENCE = "reuse_at_reference"   # provenance: the operator measured best on the reference schedule itself
# Every operator Calibrate's measurement scores (and ``auto`` can therefore follow); the Taylor forecasts
# (TaylorSeer, arXiv 2503.06923) of both orders beside the reuse and step-index extrapolation ones.
CANDIDATES: tuple[Operator, ...] = (Operator("residual"), Operator("output"), Operator("omnicache", 0.5),
                                    Operator("omnicache", 0.75), Operator("omnicache", 1.0),
                                    Operator(TAYLOR, order=1), Operator(TAYLOR, order=2))


def as_operator(record: Any) -> Operator | None:
    """An operator recorded as ``{"reuse": ..., "gamma": ...}`` (+ ``"order"`` for taylor; without one, its
    default) (a schedule's provenance, a ladder entry)."""
    if not isinstance(record, Mapping):
        return None
    reuse, gamma, order = record.get("reuse"), record.get("gamma", 0.5), record.get("order", 0)
    space = record.get("space", "")
    if reuse not in {op.reuse for op in CANDIDATES} or not _number(gamma) or space not in SPACES:
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
