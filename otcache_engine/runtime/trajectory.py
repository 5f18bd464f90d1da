"""Resuming a measurement run where an earlier run of the same pair left off (method.md §10.6).

Calibration's measurements sample the same (prompt, seed) pair again and again with schedules that often
agree on their first decisions: Optuna's trials at one budget, the ladder's candidates at neighbouring
budgets. Two such runs are the same computation up to the first step where their decisions differ -- the
latent and every cache entry alike -- so a run can start from the state an earlier run had there instead of
from noise, and skip the model calls of the shared prefix.

A :class:`TrajectoryTap` rides in the options of one measuring run. It hands the run a saved state to resume
from (the session's caches and, to the caller, the latent) and collects the cache states the run passes
through at the start of each step it is asked about; the caller pairs them with the latents its sampler
callback saw and keeps them (``search.prefix_store``). Resuming needs a sampler whose step depends only on
the current latent and sigmas (euler, heun): a multistep sampler's memory would be lost at the restart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import OTCacheError
from .session import CacheSession, CacheSnapshot

TAP_KEY = "otcache_trajectory"


@dataclass(frozen=True, eq=False)
class SavedState:
    """A run's state at the start of ``step``: the sampler's internal latent x_step, the caches, and the
    whole run's sigmas (the plan of a resumed run is made on them, so its step numbers stay the same)."""

    step: int
    latent: torch.Tensor
    cache: CacheSnapshot
    sigmas: tuple[float, ...]

    @property
    def nbytes(self) -> int:
        """Memory it holds: the latent and its distinct cache tensors."""
        return sum(t.numel() * t.element_size() for t in [self.latent] + self.cache.tensors())


class TrajectoryTap:
    """One run's link to the saved states: where it resumes (``resume``), and the cache states it leaves at
    the start of the steps ``wanted`` says (after the run: ``states``).

    ``mask`` is the compute mask the caller keyed its states by; a run whose plan differs from it keeps
    nothing, and resuming such a run is refused (its saved prefix would not be its own). Tensors kept are
    copied to the host (``to_host``) so that saved states never hold accelerator memory."""

    def __init__(self, mask: Sequence[bool], resume: SavedState | None = None,
                 wanted: Callable[[int], bool] = lambda step: False, to_host: bool = True) -> None:
        self.mask = tuple(bool(c) for c in mask)
        self.resume, self.wanted, self.to_host = resume, wanted, to_host
        self.caches: dict[int, CacheSnapshot] = {}
        self.sigmas: tuple[float, ...] | None = None
        self.matched = False
        self._copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # ComfyUI deep-copies model options on clone(): every copy must be this one object
    def __copy__(self) -> "TrajectoryTap":
        return self

    def __deepcopy__(self, memo: dict) -> "TrajectoryTap":
        return self

    @property
    def start(self) -> int:
        return self.resume.step if self.resume is not None else 0

    def plan_sigmas(self, run_sigmas: Sequence[float]) -> list[float]:
        """The sigmas to plan the run on: the whole run's when resuming (the sampler walks only the tail)."""
        run = [float(s) for s in run_sigmas]
        if self.resume is None:
            self.sigmas = tuple(run)
            return run
        full = self.resume.sigmas
        tail = full[self.resume.step:]
        if len(tail) != len(run) or not all(_close(a, b) for a, b in zip(tail, run)):
            raise OTCacheError(f"a resumed measurement run walks {len(run) - 1} steps that are not the last ones "
                               f"of its saved run ({len(full) - 1} steps from step {self.resume.step})")
        self.sigmas = tuple(full)
        return list(full)

    def attach(self, session: CacheSession) -> None:
        """Start ``session`` from the saved caches, and watch each step it starts."""
        self.matched = tuple(session.plan.compute) == self.mask and session.enabled
        if self.resume is not None:
            if not self.matched:
                raise OTCacheError("a measurement run cannot resume: its plan is not the schedule it was keyed by")
            session.restore(self.resume.cache)
        if self.matched:
            session.watch = self._watch

    def states(self, latents: dict[int, torch.Tensor]) -> list[SavedState]:
        """The states of this run at the steps both the session and the sampler reported."""
        if not self.matched or self.sigmas is None:
            return []
        return [SavedState(step, latents[step], cache, self.sigmas)
                for step, cache in sorted(self.caches.items()) if step in latents]

    def _watch(self, step: int, session: CacheSession) -> None:
        if step > self.start and self.wanted(step):
            self.caches[step] = session.snapshot(self._keep)

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        """The host copy of ``t``, made once per run (consecutive states share most of their tensors)."""
        if not self.to_host or t.device.type == "cpu":
            return t
        hit = self._copies.get(id(t))
        if hit is None or hit[0] is not t:
            hit = self._copies[id(t)] = (t, t.detach().to("cpu"))
        return hit[1]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)
