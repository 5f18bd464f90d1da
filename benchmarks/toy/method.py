"""The OTCache method on the toy model: calibration -> reference -> anchor -> interpolation.

Stage 1 (reference): recorded uncached runs give local E1 edge errors; the gap-2 edges are
re-run to the end (LeMiCa's global error, batched over pairs) to calibrate the local
errors' downstream amplification (hybrid weights, method.md §2.5); the leximax graph
search gives the reference at the conservative budget.
Stage 2 (anchor): Optuna searches the schedule at the extreme low budget that minimises
the end-to-end perceptual distance of the cached output to the uncached one, on the
calibration pairs, warm-started from uniform, the graph optimum and the reference shape.
Stage 3 (interpolation): quantile (W2-geodesic) interpolation between the two warps, for
any budget, without a model call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import optuna
import torch

from otcache_engine.calibration import edge_errors, hybrid
from otcache_engine.schedules import graph_search, omnicache, transport
from otcache_engine.search.anchor_search import AnchorConfig, search_anchor
from otcache_engine.calibration.calibration_run import CalibrationRun
from otcache_engine.schedules.schedule import budget_for_speedup
from otcache_engine.schedules.projection import smallest_feasible_gap
from otcache_engine.schedules.schedule import Schedule
from .harness import Pairs, Toy, run_schedule
from .sampler import sample

Progress = Callable[[str], None]


def graph_gap(steps: int, budget: int) -> int:
    """The graph's edge cap L: ~0.15 N (7 at N = 50, as in LeMiCa's released schedules), raised
    to the least cap that makes ``budget`` feasible."""
    return max(2, round(0.15 * steps), smallest_feasible_gap(steps, budget))


def hybrid_weights(toy: Toy, runs: Sequence[CalibrationRun], pairs: Pairs, max_gap: int,
                   progress: Progress | None = None) -> np.ndarray:
    """Hybrid edge weights: local E1 scaled by alpha_j from the global error of gap-2 edges, measured at
    every landing step (the bundled model is cheap to re-run; ComfyUI's Calibrate probes 8 of them)."""
    local = edge_errors.local_weights(runs, max_gap, kind="E1")
    labels = torch.tensor(pairs.labels)
    gap2: dict[int, list[float]] = {}
    jobs = hybrid.hybrid_jobs(toy.steps, probes=None)
    for k, job in enumerate(jobs):
        start = torch.stack([job.start_state(r)[1] for r in runs])
        tail = sample(toy.model, labels, start, toy.sigmas[job.j:], toy.cfg_scale).x
        err = [float((tail[p] - r.final_latent).abs().mean() / r.final_latent.abs().mean().clamp_min(1e-12))
               for p, r in enumerate(runs)]
        gap2[job.j] = err
        if progress is not None and (k + 1) % 8 == 0:
            progress(f"global error of gap-2 edges {k + 1}/{len(jobs)}")
    glob = {j: float(np.mean(v)) for j, v in gap2.items()}
    return hybrid.hybrid_weights(local, glob)


def reference_schedule(weights: np.ndarray, budget: int, toy: Toy, max_gap: int) -> Schedule:
    return graph_search.reference_schedule(weights, budget, max_gap=max_gap, objective="leximax",
                                           sigmas=toy.sigmas.tolist(),
                                           provenance={"model_family": "toy-dit", "shift": toy.shift})


def gammas_for(runs: Sequence[CalibrationRun], reuse: str, schedule: Schedule) -> list[float] | None:
    """OmniCache's least-squares gammas of ``schedule`` when the operator extrapolates, else None."""
    return omnicache.fit_gammas(runs, schedule) if reuse == "omnicache" else None


@dataclass
class AnchorProblem:
    """What the end-to-end search scores: cached outputs of the calibration pairs vs their references,
    with the reuse operator that will be deployed (gammas refitted per schedule for ``omnicache``)."""

    toy: Toy
    pairs: Pairs
    runs: Sequence[CalibrationRun]                  # the pairs' uncached records (references, gamma fits)
    distance: Callable[[torch.Tensor, torch.Tensor], float]
    metric: str
    reuse: str = "residual"

    def evaluate(self, schedule: Schedule, pair: int) -> float:
        out = run_schedule(self.toy, self.pairs.subset([pair]), schedule, reuse=self.reuse,
                           gamma=gammas_for(self.runs, self.reuse, schedule))
        return self.distance(out.x, self.runs[pair].final_latent[None])


def search(problem: AnchorProblem, budget: int, trials: int, seed: int = 0,
           reference: Schedule | None = None, graph: Schedule | None = None,
           storage=None, progress: Progress | None = None, kind: str = "anchor") -> Schedule:
    """Optuna search of the best schedule at ``budget`` (the anchor; also 'direct optimisation')."""
    toy = problem.toy
    cfg = AnchorConfig(num_steps=toy.steps, budget=budget, n_pairs=len(problem.pairs), n_trials=trials,
                       seed=seed, metric=problem.metric, sigmas=tuple(toy.sigmas.tolist()),
                       provenance={"model_family": "toy-dit", "shift": toy.shift})

    def report(done: int, total: int, best: float | None) -> None:
        if progress is not None and (done % 5 == 0 or done == total):
            shown = "-" if best is None else f"{best:.4f}"
            progress(f"{kind} search K={budget}: trial {done}/{total}, best {problem.metric} {shown}")
    store = storage if storage is not None else optuna.storages.InMemoryStorage()
    found = search_anchor(problem.evaluate, cfg, store, model_key="toy-dit", reference=reference, graph=graph,
                          progress=report, context={"seeds": list(problem.pairs.seeds),
                                                    "classes": list(problem.pairs.labels), "reuse": problem.reuse})
    return found.replace(kind=kind) if kind != "anchor" else found


def interpolate(reference: Schedule, anchor: Schedule, budget: int, rule: str = "linear_k",
                weights: np.ndarray | None = None) -> Schedule:
    """Stage 3: the OT schedule at ``budget`` (``rule='predicted_error'`` needs the edge weights)."""
    cost = transport.path_cost(weights, "leximax") if rule == "predicted_error" else None
    return transport.interpolate(reference, anchor, budget, rule=rule, cost=cost)


def budgets_between(k_ref: int, k_anc: int, count: int) -> list[int]:
    """``count`` budgets from K_ref down to K_anc, evenly spaced and distinct."""
    vals = np.linspace(k_ref, k_anc, count)
    return sorted({int(round(v)) for v in vals}, reverse=True)


def fraction_budget(steps: int, divisor: float) -> int:
    """K = round(N / divisor), at least 3."""
    return budget_for_speedup(steps, divisor, least=3)
