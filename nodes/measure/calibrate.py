"""Stage 1 of OTCache inside ComfyUI (method.md §2-3, §10): the calibration pipeline behind OTCache Calibrate.

It samples the model uncached on a clone for every (prompt, seed) pair and records every step
(``calibration_record``), builds the edge weights of the step graph -- local (free), hybrid or global
(LeMiCa's tail re-runs) -- solves the reference schedule at the conservative budget, and with ``measure``
chooses the reuse operator and checks the reference against a uniform schedule end to end
(``reuse_choice``). The user's model is never patched: every hook lives on a clone, and an interrupt stops
the job within one model call.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ...otcache_engine import Schedule
from ...otcache_engine.calibration.calibration_run import CalibrationRun, calibration_id
from ...otcache_engine.calibration.edge_errors import global_jobs, total_model_calls
from ...otcache_engine.calibration.hybrid import HYBRID_PROBES, hybrid_jobs
from ...otcache_engine.calibration.replay import final_error
from ...otcache_engine.errors import CalibrationError
from ...otcache_engine.schedules.graph_search import reference_schedule, smallest_feasible_budget
from ..runtime.provenance import run_provenance
from . import reuse_choice
from .calibration_data import CalibrationData
from .calibration_record import calibration_pairs, edge_weights, record_run
from .cost import announce, spent
from .sampling import Progress, SamplerSettings, run_sigmas

log = logging.getLogger("otcache")

ERROR_MODES = ("local", "hybrid", "global")


# --- settings ------------------------------------------------------------------------

def default_max_gap(num_steps: int) -> int:
    """About 0.15 N (LeMiCa's released 50-step schedules cap gaps at 7)."""
    return max(2, min(num_steps - 1, int(0.15 * num_steps)))


def default_reference_budget(num_steps: int) -> int:
    """About N/2: LeMiCa's near-lossless 'slow' setting."""
    return max(2, math.ceil(num_steps / 2))


def default_anchor_budget(num_steps: int) -> int:
    """About N/5 (10 for 50 steps, 6 for 28): OTCache's 'extreme low budget'."""
    return max(2, round(num_steps / 5))


def calls_per_seed(num_steps: int, max_gap: int, mode: str) -> int:
    """Model calls (sampling steps) one calibration seed costs in ``mode``."""
    if mode == "local":
        return num_steps
    if mode == "hybrid":
        return num_steps + total_model_calls(hybrid_jobs(num_steps))
    return num_steps + total_model_calls(global_jobs(num_steps, max_gap))


def _cost_table() -> str:
    rows = []
    for n in (28, 50):
        g = default_max_gap(n)
        rows.append(f"N={n}, gap {g}: local {calls_per_seed(n, g, 'local')}, hybrid {calls_per_seed(n, g, 'hybrid')}, "
                    f"global {calls_per_seed(n, g, 'global')}")
    return "; ".join(rows)


ERROR_MODE_TOOLTIP = (
    "How the cost of skipping steps i+1..j-1 is measured. Model calls per calibration run (prompt x seed): "
    "local = N (free: from the recorded run, but blind to how much an early error grows later); hybrid = N + "
    f"the tails after a 2-step skip at {HYBRID_PROBES} probe steps (measures that growth; the in-host benchmark "
    "found local schedules losing to uniform ones where hybrid ones won); global = N + the tail of every edge "
    "(LeMiCa's exact end-to-end error). " + _cost_table() + ". The node reports the exact count.")
MEASURE_TOOLTIP = (
    "After the graph search, sample the calibration runs again with each reuse operator (the output skip; "
    "OmniCache gamma 1 and the Taylor forecast on the block residual; OmniCache gamma 0.5 and 1 on the whole "
    "output) on the reference and on a low-budget schedule, keep the one with the smallest end-to-end error "
    "(stored in the schedule: Apply's reuse 'auto' follows it), and check the reference against a uniform "
    "schedule with that operator (the better one becomes the reference). Costs at most 8 x (reference "
    "budget) + 5 x (anchor budget) model calls per calibration run; off, the anchor is searched with the free "
    "default's operator.")


# --- the whole calibration ----------------------------------------------------------------------

def calibrate(model: Any, s: SamplerSettings, seeds: list[int], mode: str = "hybrid", max_gap: int = 0,
              budget: int = 0, objective: str = "leximax", prompts: list | None = None,
              measure: bool = True) -> tuple[Schedule, CalibrationData]:
    """Record the runs, build the weights, solve the reference. Pure function of its inputs (plus time).

    Runs are every prompt (``s.positive``, then each of ``prompts``) with every seed: a schedule is then used
    for prompts it never saw, so it should be calibrated on more than one. With ``measure``, the reuse
    operator and the reference are then chosen by their end-to-end error on those runs (``reuse_choice``).
    What it will cost is said before the first model call (``cost.announce``), and what it spent at the end.
    """
    _check_settings(mode, objective, s)
    pairs = calibration_pairs(s, seeds, prompts)
    sigmas = run_sigmas(model, s)
    n = sigmas.numel() - 1
    gap, k_ref, k_low = _budgets(n, max_gap, budget)
    checks = reuse_choice.calls(k_ref, k_low, len(pairs)) if measure and k_low >= 2 else 0
    total = len(pairs) * calls_per_seed(n, gap, mode) + checks
    n_prompts = len({p.prompt for p in pairs})
    announce("Calibrate", n, total, f"{len(pairs)} run(s) over {n_prompts} prompt(s) and "
             f"{len({p.seed for p in pairs})} seed(s) x {calls_per_seed(n, gap, mode)} calls ({mode} error), "
             f"{checks} calls measuring the reuse operator")
    progress = Progress(total, "Calibrate")
    prov = run_provenance(model, steps=n, sampler=s.sampler_name, scheduler=s.scheduler,
                          latent_shape=s.latent_shape, sigmas=sigmas.tolist(), cfg=s.cfg, denoise=s.denoise)
    meta = {k: prov[k] for k in ("model_family", "model_hash", "sampler", "scheduler", "steps", "resolution")}
    meta["cfg"] = float(s.cfg)
    runs = [record_run(model, p.settings, p.seed, sigmas, {**meta, "prompt": p.prompt}, progress) for p in pairs]
    weights = edge_weights(model, pairs, runs, mode, gap, progress)
    settings = {**prov, "error_mode": mode, "objective": objective, "max_gap": gap, "seeds": [p.seed for p in pairs],
                "prompts": n_prompts, "model_calls": total, "generations": round(total / n, 2), "budget": k_ref}
    reference = reference_schedule(weights, k_ref, max_gap=gap, objective=objective, sigmas=sigmas.tolist(),
                                   kind="reference", provenance={**prov, "source": "calibrate", "error_mode": mode,
                                                                 "metric": f"{mode} edge error (relative L1)",
                                                                 "seeds": [p.seed for p in pairs],
                                                                 "prompts": n_prompts,
                                                                 "calibration_id": calibration_id(runs),
                                                                 "created": _now()})
    reference = reference.with_provenance(**quality(runs, reference))
    data = CalibrationData(tuple(runs), weights, reference, settings, pairs=tuple(pairs))
    used = progress.done
    if checks:
        choice = reuse_choice.choose(model, data, reference, k_low, progress.step)
        reference = choice.reference.with_provenance(**choice.provenance())
        used += choice.calls
        if choice.saving:
            log.info("[OTCache] Calibrate: %s", choice.saving)
    settings.update(planned_calls=total, model_calls=used, generations=round(used / n, 2))
    data = dataclasses.replace(data, reference=reference, settings=settings)
    spent("Calibrate", n, used, progress.seconds)
    return reference, data


def _check_settings(mode: str, objective: str, s: SamplerSettings) -> None:
    if mode not in ERROR_MODES:
        raise CalibrationError(f"error mode must be one of {list(ERROR_MODES)}, got {mode!r}")
    if objective not in ("leximax", "additive"):
        raise CalibrationError(f"objective must be 'leximax' or 'additive', got {objective!r}")
    if mode != "local" and s.latent.get("noise_mask") is not None:
        raise CalibrationError("hybrid and global calibration restart sampling mid-way, which an inpainting "
                               "noise mask does not allow; use the local error mode")


def _budgets(n: int, max_gap: int, budget: int) -> tuple[int, int, int]:
    """(max gap, the reference's K, the low probe's K) for ``n`` steps, checked."""
    if n < 3:
        raise CalibrationError(f"calibration needs at least 3 sampling steps, got {n}")
    gap = min(max_gap or default_max_gap(n), n - 1)
    k_ref = budget or default_reference_budget(n)
    least = smallest_feasible_budget(n, gap)
    if not least <= k_ref <= n:
        raise CalibrationError(f"reference budget {k_ref} is not possible for {n} steps with max gap {gap}: "
                               f"use a budget between {least} and {n} (or raise the max gap)")
    return gap, k_ref, min(default_anchor_budget(n), k_ref - 1)


def quality(runs: list[CalibrationRun], schedule: Schedule) -> dict[str, float]:
    """Zero-call replay errors (relative final-latent L1) of the schedule and of uniform-K, for the UI."""
    from ...otcache_engine.schedules.baselines import uniform_k
    uni = uniform_k(schedule.num_steps, schedule.budget, force_last=schedule.force_last)
    err = float(np.mean([final_error(r, schedule, relative=True) for r in runs]))
    uerr = float(np.mean([final_error(r, uni, relative=True) for r in runs]))
    return {"calibrated_error": err, "uniform_error": uerr}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


