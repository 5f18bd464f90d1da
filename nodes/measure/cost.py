"""What a calibration stage costs, said in the user's units before it samples and again when it is done.

The unit is the model call at the run's own setting (one evaluation of the diffusion model, both CFG
branches in one batch); an uncached generation at that setting is N of them, so calls / N is the cost in
uncached generations -- the transformer work (tokens x block runs) a user would otherwise spend on images.
Every call of a stage has the run's token count, so the ratio is exact for that work.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("otcache")


@dataclass(frozen=True)
class StageCost:
    """A stage's model calls at N steps, and the same in uncached generations."""

    stage: str
    steps: int
    calls: int

    @property
    def generations(self) -> float:
        return self.calls / max(1, self.steps)

    def line(self, what: str) -> str:
        return (f"{self.stage} {what} {self.calls} model calls = {self.generations:.1f} uncached generations "
                f"of {self.steps} steps")


def announce(stage: str, steps: int, calls: int, parts: str = "") -> StageCost:
    """Log what the stage will cost at most, before any model call; returns it for the report."""
    cost = StageCost(stage, steps, calls)
    log.info("[OTCache] %s%s", cost.line("will cost at most"), f" ({parts})" if parts else "")
    return cost


def spent(stage: str, steps: int, calls: int, seconds: float) -> StageCost:
    """Log what the stage cost, and how long it took."""
    cost = StageCost(stage, steps, calls)
    log.info("[OTCache] %s in %s", cost.line("spent"), duration(seconds))
    return cost


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
