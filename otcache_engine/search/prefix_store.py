"""Saved trajectory states, found by the longest prefix of decisions they share with a new run.

Two measurement runs of the same pair and reuse operator whose schedules agree on decisions 0..j-1 are in
the same state at the start of step j (``runtime.trajectory``). The store keeps such states under a memory
bound, keyed by (run key, those decisions), and gives a new schedule the state of its longest saved prefix.
States are kept only at the start of computed steps: between two computed steps a run makes no model call,
so a later state would save nothing more. The least recently used state goes first when the bound is hit;
finding a state counts as a use, so the short prefixes that many schedules share stay longest.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Sequence

from ..runtime.trajectory import SavedState


class PrefixStore:
    """States of earlier runs, at most ``max_bytes`` of them (0 keeps nothing)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.bytes = 0
        self._states: OrderedDict[tuple[Hashable, tuple[bool, ...]], tuple[SavedState, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def find(self, key: Hashable, mask: Sequence[bool]) -> SavedState | None:
        """The saved state with the longest prefix of ``mask`` (at least one step), or None."""
        decisions = tuple(bool(c) for c in mask)
        for j in range(len(decisions) - 1, 0, -1):
            if not decisions[j]:
                continue   # states are kept only where a computed step starts
            hit = self._states.get((key, decisions[:j]))
            if hit is not None:
                self._states.move_to_end((key, decisions[:j]))
                return hit[0]
        return None

    def keep(self, key: Hashable, mask: Sequence[bool], state: SavedState) -> bool:
        """Keep ``state`` (taken at the start of ``state.step`` of a run with ``mask``); False when it does not
        fit the bound at all."""
        k = (key, tuple(bool(c) for c in mask[:state.step]))
        if k in self._states:
            self._states.move_to_end(k)
            return True
        size = state.nbytes
        if size > self.max_bytes:
            return False
        self._states[k] = (state, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, freed) = self._states.popitem(last=False)
            self.bytes -= freed
        return True

    def stats(self) -> dict[str, Any]:
        return {"states": len(self._states), "bytes": self.bytes, "max_bytes": self.max_bytes}
