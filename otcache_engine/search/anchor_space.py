"""What the anchor search searches (method.md §4.2): its configuration, the parametrisations of a schedule
with K computed steps, their exact projection to integer steps, and the warm starts.

Gap fractions (``K-1`` log-uniform parameters) for K <= 12, a 6-piece warp slope for larger K; both are
projected exactly onto a feasible integer schedule (``projection.project``) with max gap ``L_a``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import OTCacheError
from ..schedules.projection import check_feasible, project
from ..schedules.schedule import Schedule

log = logging.getLogger("otcache")

GAP_LOW, GAP_HIGH = 0.05, 1.0
WARP_PIECES, WARP_LIMIT = 6, 2.5
MAX_GAP_PARAMS_K = 12


# --- configuration ---------------------------------------------------------------

def default_anchor_gap(num_steps: int, budget: int) -> int:
    """L_a = twice the uniform gap (method.md §4.1), so the search may leave the graph's cap."""
    span = num_steps - 1
    return max(1, min(span, 2 * math.ceil(span / max(budget - 1, 1))))


@dataclass(frozen=True)
class AnchorConfig:
    """What is searched. ``max_gap=None`` means :func:`default_anchor_gap`; ``param='auto'``
    picks gap fractions for K <= 12 and warp slopes above."""

    num_steps: int
    budget: int
    n_pairs: int = 1
    n_trials: int = 64
    seed: int = 0
    max_gap: int | None = None
    force_last: bool = True
    param: str = "auto"
    metric: str = "unknown"
    prune: bool = True
    sigmas: tuple[float, ...] | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, k = self.num_steps, self.budget
        if not isinstance(n, int) or n < 3:
            raise OTCacheError(f"the anchor search needs at least 3 sampling steps, got {n!r}")
        if not isinstance(k, int) or not 2 <= k < n:
            raise OTCacheError(f"anchor budget must be between 2 and steps-1 = {n - 1}, got {k!r}")
        if not isinstance(self.n_pairs, int) or self.n_pairs < 1:
            raise OTCacheError(f"n_pairs must be a positive integer, got {self.n_pairs!r}")
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise OTCacheError(f"n_trials must be a positive integer, got {self.n_trials!r}")
        if self.param not in ("auto", "gaps", "warp"):
            raise OTCacheError(f"param must be 'auto', 'gaps' or 'warp', got {self.param!r}")
        check_feasible(k, n, self.gap, self.force_last)

    @property
    def gap(self) -> int:
        return self.max_gap if self.max_gap is not None else default_anchor_gap(self.num_steps, self.budget)

    @property
    def kind(self) -> str:
        if self.param != "auto":
            return self.param
        return "gaps" if self.budget <= MAX_GAP_PARAMS_K else "warp"

    @property
    def dimension(self) -> int:
        """How many numbers a trial suggests: one gap fraction per gap, or the warp's pieces."""
        if self.kind == "gaps":
            return self.budget - 1 if self.force_last else self.budget
        return WARP_PIECES

    def digest(self, context: Mapping[str, Any] | None = None) -> str:
        """Short hash of everything that changes the objective, so unlike searches never share a study."""
        key = {"N": self.num_steps, "K": self.budget, "L": self.gap, "last": self.force_last,
               "param": self.kind, "pairs": self.n_pairs, "metric": self.metric, "ctx": context or {}}
        return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]


# --- parametrisations -----------------------------------------------------------------

def _span(num_steps: int, force_last: bool) -> int:
    return num_steps - 1 if force_last else num_steps


def positions_from_gaps(fractions: Sequence[float], num_steps: int, force_last: bool = True) -> np.ndarray:
    """K real positions from gap fractions r (K-1 of them, or K without ``force_last``: the last
    one is the gap to the virtual sink N)."""
    r = np.asarray(fractions, dtype=np.float64)
    return np.concatenate(([0.0], np.cumsum(_span(num_steps, force_last) * r / r.sum())))


def positions_from_warp(slopes: Sequence[float], num_steps: int, budget: int, force_last: bool = True) -> np.ndarray:
    """K real positions from a piecewise-constant log-slope warp (method.md §4.2 B)."""
    z = np.asarray(slopes, dtype=np.float64)
    knots = np.concatenate(([0.0], np.cumsum(np.exp(z))))
    knots /= knots[-1]
    points = budget if force_last else budget + 1
    u = np.linspace(0.0, 1.0, points)
    y = _span(num_steps, force_last) * np.interp(u, np.linspace(0.0, 1.0, z.size + 1), knots)
    return y[:budget]


def _gaps_of(steps: Sequence[int], num_steps: int, force_last: bool) -> np.ndarray:
    s = list(steps) + ([] if force_last else [num_steps])
    return np.diff(np.asarray(s, dtype=np.float64))


def params_for(steps: Sequence[int], cfg: AnchorConfig) -> dict[str, float]:
    """Parameters whose projection gives (or comes close to) ``steps`` -- for warm starts."""
    g = _gaps_of(steps, cfg.num_steps, cfg.force_last)
    if cfg.kind == "gaps":
        r = np.clip(g / g.max(), GAP_LOW, GAP_HIGH)
        return {f"r{k}": float(v) for k, v in enumerate(r, start=1)}
    knots = np.concatenate(([0.0], np.cumsum(g))) / g.sum()
    warp = np.interp(np.linspace(0, 1, WARP_PIECES + 1), np.linspace(0, 1, knots.size), knots)
    z = np.log(np.maximum(np.diff(warp), 1e-9) * WARP_PIECES)
    z = np.clip(z - z.mean(), -WARP_LIMIT, WARP_LIMIT)
    return {f"z{m}": float(v) for m, v in enumerate(z, start=1)}


def suggest_steps(trial: Any, cfg: AnchorConfig) -> tuple[int, ...]:
    """Ask the trial for its parameters and project them onto a feasible integer schedule."""
    if cfg.kind == "gaps":
        r = [trial.suggest_float(f"r{k}", GAP_LOW, GAP_HIGH, log=True) for k in range(1, cfg.dimension + 1)]
        y = positions_from_gaps(r, cfg.num_steps, cfg.force_last)[:cfg.budget]
    else:
        z = [trial.suggest_float(f"z{m}", -WARP_LIMIT, WARP_LIMIT) for m in range(1, WARP_PIECES + 1)]
        y = positions_from_warp(z, cfg.num_steps, cfg.budget, cfg.force_last)
    return project(y, cfg.num_steps, cfg.gap, cfg.force_last)


# --- warm starts -----------------------------------------------------------------------

def uniform_steps(num_steps: int, budget: int, max_gap: int | None, force_last: bool = True) -> tuple[int, ...]:
    """Evenly spread compute steps (the uniform-K baseline)."""
    y = np.linspace(0.0, _span(num_steps, force_last), budget if force_last else budget + 1)[:budget]
    return project(y, num_steps, max_gap, force_last)


def resampled_shape(schedule: Schedule, num_steps: int, budget: int, max_gap: int | None,
                    force_last: bool = True) -> tuple[int, ...]:
    """The schedule's own warp (index coordinate) re-sampled at ``budget`` points and projected:
    the reference's shape at the anchor budget (method.md §4.4 iii, lambda = 0)."""
    src = list(schedule.compute_steps) + ([] if schedule.force_last else [schedule.num_steps])
    t = np.asarray(src, dtype=np.float64) / _span(schedule.num_steps, schedule.force_last)
    points = budget if force_last else budget + 1
    u = np.linspace(0.0, 1.0, points)
    y = _span(num_steps, force_last) * np.interp(u, np.linspace(0.0, 1.0, t.size), t)
    return project(y[:budget], num_steps, max_gap, force_last)


def warm_starts(cfg: AnchorConfig, reference: Schedule | None = None,
                graph: Schedule | Sequence[int] | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """Named warm-start schedules at the anchor budget: uniform, the graph optimum, the reference shape."""
    out = [("uniform", uniform_steps(cfg.num_steps, cfg.budget, cfg.gap, cfg.force_last))]
    if graph is not None:
        steps = graph.compute_steps if isinstance(graph, Schedule) else tuple(int(s) for s in graph)
        if len(steps) == cfg.budget:
            out.append(("graph", project(steps, cfg.num_steps, cfg.gap, cfg.force_last)))
        else:
            log.warning("[OTCache] graph warm start has %d steps, not the anchor budget %d; ignored",
                        len(steps), cfg.budget)
    if reference is not None:
        out.append(("reference-shape", resampled_shape(reference, cfg.num_steps, cfg.budget, cfg.gap,
                                                       cfg.force_last)))
    merged: dict[tuple[int, ...], str] = {}
    for name, steps in out:   # one trial per distinct schedule, named after every start that gave it
        merged[steps] = f"{merged[steps]}+{name}" if steps in merged else name
    return [(name, steps) for steps, name in merged.items()]
