"""OTCache Calibrate: stage 1 of OTCache inside ComfyUI (method.md §2-3, §10).

It takes a KSampler's inputs (so converting a workflow is one move), samples the model uncached on a
clone for every (prompt, seed) pair and records every step (``calibration_record``), builds the edge
weights of the step graph -- local (free), hybrid or global (LeMiCa's tail re-runs) -- solves the
reference schedule at the conservative budget, and with ``measure`` chooses the reuse operator and checks
the reference against a uniform schedule end to end (``reuse_choice``).

The user's model is never patched: every hook lives on a clone, and an
interrupt stops the job within one model call.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
from comfy_api.latest import io

from ..otcache_engine import Schedule
from ..otcache_engine.calibration import CalibrationRun, calibration_id
from ..otcache_engine.edge_errors import global_jobs, total_model_calls
from ..otcache_engine.errors import CalibrationError, OTCacheError
from ..otcache_engine.graph_search import OBJECTIVES, reference_schedule, smallest_feasible_budget
from ..otcache_engine.hybrid import HYBRID_PROBES, hybrid_jobs
from ..otcache_engine.replay import final_error
from . import reuse_choice
from .calibration_data import CalibrationData
from .calibration_record import calibration_pairs, edge_weights, record_run, split_prompts
from .preview import plot_payload, ui_output
from .provenance import run_provenance
from .run_sampling import Progress, SamplerSettings, run_sigmas
from .schedule_nodes import CalibrationType, ScheduleType

log = logging.getLogger("otcache")

ERROR_MODES = ("local", "hybrid", "global")
MAX_SEEDS = 64
MAX_SEED = 2 ** 64 - 1  # ComfyUI's seed input range; torch.manual_seed overflows above it
RECORD_KEY = "otcache_calibrate"


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


def parse_seeds(text: str, seed: int) -> list[int]:
    """The sampler seed plus extra seeds: ``"0, 1, 2"`` adds those; ``"x4"`` means 4 runs, seed .. seed+3.

    Only ASCII digits count ("x²" is a superscript, not a 2) and every seed must fit ComfyUI's seed range,
    which is what torch's generator accepts."""
    text = (text or "").strip()
    if not text:
        return [seed]
    count = re.fullmatch(r"[xX*]\s*([0-9]+)", text)
    if count:
        digits = count.group(1)
        if len(digits) > 3 or not 1 <= int(digits) <= MAX_SEEDS:
            raise CalibrationError(f"calibration runs must be between 1 and {MAX_SEEDS}, got {digits[:8]}")
        return [_seed_in_range(seed + k) for k in range(int(digits))]
    seeds = [seed]
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        if not part:
            continue
        if not re.fullmatch(r"[0-9]+", part):
            raise CalibrationError(f"calibration seeds must be integers separated by commas (e.g. '0, 1, 2') "
                                   f"or a count like 'x4'; got {part[:24]!r}")
        value = _seed_in_range(int(part) if len(part) <= 20 else MAX_SEED + 1, part)
        if value not in seeds:
            seeds.append(value)
    if len(seeds) > MAX_SEEDS:
        raise CalibrationError(f"at most {MAX_SEEDS} calibration seeds, got {len(seeds)}")
    return seeds


def _seed_in_range(value: int, text: str = "") -> int:
    if not 0 <= value <= MAX_SEED:
        shown = text if text and len(text) <= 24 else (f"a {len(text)}-digit number" if text else str(value))
        raise CalibrationError(f"calibration seeds must be between 0 and 2^64-1 (ComfyUI's seed range), got {shown}")
    return value


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
    "After the graph search, sample the calibration runs again with each reuse operator (residual, output, "
    "omnicache at gamma 0.5 / 0.75 / 1) on the reference and on a low-budget schedule, keep the one with the "
    "smallest end-to-end error (stored in the schedule: Apply's reuse 'auto' follows it), and check the "
    "reference against a uniform schedule with that operator (the better one becomes the reference). Costs "
    "at most 7 x (reference budget) + 5 x (anchor budget) model calls per calibration run.")


# --- the whole calibration ----------------------------------------------------------------------

def calibrate(model: Any, s: SamplerSettings, seeds: list[int], mode: str = "hybrid", max_gap: int = 0,
              budget: int = 0, objective: str = "leximax", prompts: list | None = None,
              measure: bool = True) -> tuple[Schedule, CalibrationData]:
    """Record the runs, build the weights, solve the reference. Pure function of its inputs (plus time).

    Runs are every prompt (``s.positive``, then each of ``prompts``) with every seed: a schedule is then used
    for prompts it never saw, so it should be calibrated on more than one. With ``measure``, the reuse
    operator and the reference are then chosen by their end-to-end error on those runs (``reuse_choice``).
    """
    if mode not in ERROR_MODES:
        raise CalibrationError(f"error mode must be one of {list(ERROR_MODES)}, got {mode!r}")
    if objective not in ("leximax", "additive"):
        raise CalibrationError(f"objective must be 'leximax' or 'additive', got {objective!r}")
    if mode != "local" and s.latent.get("noise_mask") is not None:
        raise CalibrationError("hybrid and global calibration restart sampling mid-way, which an inpainting "
                               "noise mask does not allow; use the local error mode")
    pairs = calibration_pairs(s, seeds, prompts)
    sigmas = run_sigmas(model, s)
    n = sigmas.numel() - 1
    if n < 3:
        raise CalibrationError(f"calibration needs at least 3 sampling steps, got {n}")
    gap = min(max_gap or default_max_gap(n), n - 1)
    k_ref = budget or default_reference_budget(n)
    least = smallest_feasible_budget(n, gap)
    if not least <= k_ref <= n:
        raise CalibrationError(f"reference budget {k_ref} is not possible for {n} steps with max gap {gap}: "
                               f"use a budget between {least} and {n} (or raise the max gap)")
    k_low = min(default_anchor_budget(n), k_ref - 1)
    checks = reuse_choice.calls(k_ref, k_low, len(pairs)) if measure and k_low >= 2 else 0
    total = len(pairs) * calls_per_seed(n, gap, mode) + checks
    n_prompts = len({p.prompt for p in pairs})
    log.info("[OTCache] Calibrate: %d run(s) (%d prompt(s), %d seed(s)) x %d model calls (%s error) = %d calls for "
             "%d steps", len(pairs), n_prompts, len({p.seed for p in pairs}), calls_per_seed(n, gap, mode), mode,
             total, n)
    progress = Progress(total)
    prov = run_provenance(model, steps=n, sampler=s.sampler_name, scheduler=s.scheduler,
                          latent_shape=s.latent_shape, sigmas=sigmas.tolist(), cfg=s.cfg, denoise=s.denoise)
    meta = {k: prov[k] for k in ("model_family", "model_hash", "sampler", "scheduler", "steps", "resolution")}
    meta["cfg"] = float(s.cfg)
    runs = [record_run(model, p.settings, p.seed, sigmas, {**meta, "prompt": p.prompt}, progress) for p in pairs]
    weights = edge_weights(model, pairs, runs, mode, gap, progress)
    cal_id = calibration_id(runs)
    settings = {**prov, "error_mode": mode, "objective": objective, "max_gap": gap, "seeds": [p.seed for p in pairs],
                "prompts": n_prompts, "model_calls": total, "budget": k_ref}
    reference = reference_schedule(weights, k_ref, max_gap=gap, objective=objective, sigmas=sigmas.tolist(),
                                   kind="reference", provenance={**prov, "source": "calibrate", "error_mode": mode,
                                                                 "metric": f"{mode} edge error (relative L1)",
                                                                 "seeds": [p.seed for p in pairs],
                                                                 "prompts": n_prompts,
                                                                 "calibration_id": cal_id, "created": _now()})
    reference = reference.with_provenance(**quality(runs, reference))
    data = CalibrationData(tuple(runs), weights, reference, settings, pairs=tuple(pairs))
    if checks:
        choice = reuse_choice.choose(model, data, reference, k_low, progress.step)
        reference = choice.reference.with_provenance(**choice.provenance())
        data = dataclasses.replace(data, reference=reference, settings={**settings, "model_calls": total})
    return reference, data


def quality(runs: list[CalibrationRun], schedule: Schedule) -> dict[str, float]:
    """Zero-call replay errors (relative final-latent L1) of the schedule and of uniform-K, for the UI."""
    from ..otcache_engine.baselines import uniform_k
    uni = uniform_k(schedule.num_steps, schedule.budget, force_last=schedule.force_last)
    err = float(np.mean([final_error(r, schedule, relative=True) for r in runs]))
    uerr = float(np.mean([final_error(r, uni, relative=True) for r in runs]))
    return {"calibrated_error": err, "uniform_error": uerr}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the node -----------------------------------------------------------------------------------

def sampler_inputs() -> list:
    """KSampler's inputs, same names and defaults, so a KSampler converts in one move."""
    import comfy.samplers
    return [
        io.Model.Input("model", tooltip="The model to calibrate (never modified)."),
        io.Conditioning.Input("positive"),
        io.Conditioning.Input("negative"),
        io.Latent.Input("latent_image", tooltip="Calibrate at the resolution (and frame count) you will use."),
        io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True),
        io.Int.Input("steps", default=20, min=3, max=10000),
        io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS),
        io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01),
    ]


class Calibrate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheCalibrate",
            display_name="OTCache Calibrate",
            category="OTCache",
            description="Stage 1: samples your model uncached (ComfyUI's own sampling, on a copy), measures how "
                        "much skipping each run of steps costs, and solves the reference schedule at a "
                        "conservative budget. Replace a KSampler with this node to calibrate that exact setup.",
            inputs=sampler_inputs() + [
                io.Conditioning.Input("more_prompts", optional=True,
                                      tooltip="More prompts to calibrate on besides 'positive'. Gather several with "
                                              "Conditioning (Combine): each combined entry is one prompt, and each "
                                              "prompt gets its own seed (seed, seed+1, ... unless "
                                              "calibration_seeds lists them). A schedule is used for prompts and "
                                              "seeds it never saw, so 3-4 pairs make it generalise."),
                io.String.Input("calibration_seeds", default="",
                                tooltip="Extra seeds to calibrate on besides 'seed': '0, 1, 2', or 'x4' for 4 runs "
                                        "(seed .. seed+3), paired with the prompts in turn (prompt k with seed k, "
                                        "the shorter list repeated). More pairs = a schedule that generalises "
                                        "better; each costs the model calls of one more run."),
                io.Combo.Input("error_mode", options=list(ERROR_MODES), default="hybrid", tooltip=ERROR_MODE_TOOLTIP),
                io.Int.Input("max_gap", default=0, min=0, max=1000,
                             tooltip="Longest run of skipped steps + 1 allowed in the reference. 0 = auto (about "
                                     "0.15 N: 4 for 28 steps, 7 for 50)."),
                io.Int.Input("reference_budget", default=0, min=0, max=10000,
                             tooltip="Computed steps K of the reference (the conservative end). 0 = auto (N/2)."),
                io.Combo.Input("objective", options=[o for o in OBJECTIVES if o != "bottleneck"], default="leximax",
                               tooltip="leximax (LeMiCa): minimise the worst skip first, then the next; "
                                       "additive: minimise the sum of skip errors."),
                io.Boolean.Input("measure", default=True, tooltip=MEASURE_TOOLTIP),
            ],
            outputs=[ScheduleType.Output("reference", display_name="reference"),
                     CalibrationType.Output("calibration", display_name="calibration")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, denoise,
                calibration_seeds="", error_mode="hybrid", max_gap=0, reference_budget=0,
                objective="leximax", measure=True, more_prompts=None) -> io.NodeOutput:
        s = SamplerSettings(steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise)
        try:
            seeds = parse_seeds(calibration_seeds, seed)
            reference, data = calibrate(model, s, seeds, error_mode, max_gap, reference_budget, objective,
                                        prompts=split_prompts(more_prompts), measure=bool(measure))
        except OTCacheError as e:
            raise ValueError(f"OTCache Calibrate: {e}") from None
        p = reference.provenance
        note = (f"reference K={reference.budget} of N={reference.num_steps} ({error_mode} error, "
                f"{len(data.runs)} run(s) over {data.settings['prompts']} prompt(s), {data.settings['model_calls']} "
                f"model calls); replay error {p['calibrated_error']:.4g} vs uniform {p['uniform_error']:.4g}")
        log.info("[OTCache] Calibrate: %s; %s", reference.mask_string(), note)
        ui = ui_output(plot_payload(reference, label="reference", note=note))
        ui["otcache_calibration"] = [data.summary() | {"calibrated_error": p["calibrated_error"],
                                                       "uniform_error": p["uniform_error"]}]
        return io.NodeOutput(reference, data, ui=ui)
