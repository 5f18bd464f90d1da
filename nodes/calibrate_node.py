"""OTCache Calibrate: stage 1 of OTCache inside ComfyUI (algorithms §2-3).

It takes a KSampler's inputs (so converting a workflow is one move), samples the
model uncached with ComfyUI's own sampling on a clone, once per calibration
seed, and records what later stages need: the sigma grid, the sampler's latent
x_n and velocity v_n = (x_n - denoised_n) / sigma_n at every step, the per-step
signals of the baselines (output change, EasyCache's k, curvature, MagCache's
residual norms and FBCache's first-block change when the family has block
hooks) and the step times. From these it builds the edge weights of the step
graph -- local (free), hybrid or global (LeMiCa's tail re-runs, sampled with
ComfyUI from stored latents) -- and solves the reference schedule at the
conservative budget.

The user's model is never patched: every hook lives on a clone, and an
interrupt stops the job within one model call.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import torch
from comfy_api.latest import io

from ..otcache_engine import Schedule
from ..otcache_engine.calibration import CalibrationRun, calibration_id
from ..otcache_engine.edge_errors import combine_weights, e1_weights, global_jobs, global_weights, total_model_calls
from ..otcache_engine.hybrid import HYBRID_PROBES, hybrid_jobs, hybrid_weights
from ..otcache_engine.replay import final_error
from ..otcache_engine.errors import CalibrationError, OTCacheError
from ..otcache_engine.graph_search import OBJECTIVES, reference_schedule, smallest_feasible_budget
from .calibration_data import CalibrationData
from . import reuse_choice
from .preview import plot_payload, ui_output
from .provenance import run_provenance
from .run_sampling import Progress, SamplerSettings, interruptible, run_sigmas, sample, tail_sample, to_internal
from .run_sampling import uncached
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


# --- recording one run --------------------------------------------------------------------

class StackRecorder:
    """Block-stack residual norms (MagCache) and first-block change (FBCache), first call of each step.

    Installed as ``patches_replace["dit"]`` on the first and last block of the family's stack of a
    recording clone, wrapping any replacement already there. Families without block hooks record nothing.
    """

    def __init__(self, joint_order: str, last_is_single: bool):
        self.joint_order, self.last_is_single = joint_order, last_is_single
        self.step = 0
        self.h_in: torch.Tensor | None = None
        self.first_res: torch.Tensor | None = None
        self.norms: dict[int, torch.Tensor] = {}
        self.fb: dict[int, float] = {}
        self._prev_first: torch.Tensor | None = None
        self._taken: set[int] = set()

    def first(self, inner: Callable | None) -> Callable:
        def block(args: dict, extra: dict) -> dict:
            out = inner(args, extra) if inner is not None else extra["original_block"](args)
            if self.step not in self._taken:
                img = args["img"]
                self.h_in = img[:1].detach().float()
                res = out["img"][:1].detach().float() - self.h_in if out["img"].shape == img.shape else None
                if res is not None:
                    if self._prev_first is not None and self._prev_first.shape == res.shape:
                        prev = self._prev_first
                        self.fb[self.step] = float((res - prev).abs().mean() / prev.abs().mean().clamp_min(1e-12))
                    self._prev_first = res
            return out
        return block

    def last(self, inner: Callable | None) -> Callable:
        def block(args: dict, extra: dict) -> dict:
            out = inner(args, extra) if inner is not None else extra["original_block"](args)
            if self.step not in self._taken and self.h_in is not None:
                img = out["img"][:1].detach().float()
                n = self.h_in.shape[1]
                if self.last_is_single and img.shape[1] > n:
                    img = img[:, -n:] if self.joint_order == "txt_first" else img[:, :n]
                if img.shape == self.h_in.shape:
                    self.norms[self.step] = (img - self.h_in).norm(dim=-1).reshape(-1).cpu()
                self._taken.add(self.step)
            return out
        return block

    def residual_norms(self, num_steps: int) -> dict[str, torch.Tensor]:
        if sorted(self.norms) != list(range(num_steps)):
            return {}
        return {"img": torch.stack([self.norms[k] for k in range(num_steps)])}

    def signals(self, num_steps: int) -> dict[str, np.ndarray]:
        if sorted(self.fb) != list(range(1, num_steps)):
            return {}
        return {"fbcache_rel_l1": np.array([0.0] + [self.fb[k] for k in range(1, num_steps)])}


def recording_clone(model: Any) -> tuple[Any, StackRecorder | None]:
    """An interruptible, uncached clone with the stack recorder on the first and last block (if any)."""
    from .families import detect_family

    m = interruptible(uncached(model))
    spec = detect_family(m.get_model_object("diffusion_model"))
    if not spec.block_caching:
        return m, None
    rec = StackRecorder(spec.joint_order, spec.last_is_single)
    existing = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    (k0, i0), (k1, i1) = spec.blocks[0], spec.blocks[-1]
    m.set_model_patch_replace(rec.first(existing.get((k0, i0))), "dit", k0, i0)
    m.set_model_patch_replace(rec.last(existing.get((k1, i1))), "dit", k1, i1)
    return m, rec


def record_run(model: Any, s: SamplerSettings, seed: int, sigmas: torch.Tensor, meta: dict,
               progress: Progress) -> CalibrationRun:
    """One uncached KSampler run with every step recorded (N model calls)."""
    m, rec = recording_clone(model)
    n = sigmas.numel() - 1
    xs: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    times: list[float] = []
    start = [time.perf_counter()]

    def on_step(i: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        sigma = float(sigmas[len(xs)]) if len(xs) < n else float("nan")
        xs.append(x.detach().float().cpu())
        outs.append(((x.detach().float() - denoised.detach().float()) / sigma).cpu())
        now = time.perf_counter()
        times.append(now - start[0])
        start[0] = now
        if rec is not None:
            rec.step = len(xs)
        progress.step()

    final = sample(m, s, seed, on_step)
    if len(xs) != n:
        raise CalibrationError(f"sampler {s.sampler_name!r} reported {len(xs)} steps for {n} sigmas; calibrate "
                               f"with a sampler that takes one step per sigma (euler, dpmpp_2m, ...)")
    latents = torch.stack(xs + [to_internal(m, final)])
    signals = {"step_time": np.array(times)}
    norms = {}
    if rec is not None:
        norms = rec.residual_norms(n)
        signals.update(rec.signals(n))
    run = CalibrationRun(sigmas=sigmas, latents=latents, outputs=torch.stack(outs), residual_norms=norms,
                         signals=signals, meta={**meta, "seed": int(seed)})
    return run.with_derived_signals()


# --- edge weights --------------------------------------------------------------------------

def tail_results(model: Any, pair: "CalibrationPair", run: CalibrationRun, jobs: list, progress: Progress) -> dict:
    """Final latents of the runs that cache only edge (i -> j): restart at x_hat_j, sample j..N-1."""
    m = interruptible(uncached(model))
    out = {}
    for job in jobs:
        j, x_hat = job.start_state(run)
        out[job.edge] = tail_sample(m, pair.settings, x_hat, run.sigmas[j:], pair.seed, progress.step)
    return out


def edge_weights(model: Any, pairs: list["CalibrationPair"], runs: list[CalibrationRun], mode: str, max_gap: int,
                 progress: Progress) -> np.ndarray:
    mats = []
    for pair, run in zip(pairs, runs):
        local = e1_weights(run, max_gap, relative=True)
        if mode == "local":
            mats.append(local)
        elif mode == "hybrid":
            res = tail_results(model, pair, run, hybrid_jobs(run.num_steps), progress)
            xn = run.latents[-1].double()
            scale = max(float(xn.abs().mean()), 1e-12)
            glob = {j: float((v.double() - xn).abs().mean()) / scale for (i, j), v in res.items()}
            mats.append(hybrid_weights(local, glob))
        else:
            res = tail_results(model, pair, run, global_jobs(run.num_steps, max_gap), progress)
            mats.append(global_weights(run, res, max_gap, relative=True))
    return combine_weights(mats, normalize="median" if len(mats) > 1 else None)


# --- the whole calibration ----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CalibrationPair:
    """One calibration run's inputs: the sampler settings with this pair's prompt as ``positive``, its seed."""

    settings: SamplerSettings
    seed: int
    prompt: int = 0


def split_prompts(conditioning: Any) -> list[list]:
    """Every entry of a CONDITIONING as a prompt of its own (Conditioning (Combine) gathers several)."""
    if conditioning is None:
        return []
    if not isinstance(conditioning, (list, tuple)) or not all(isinstance(e, (list, tuple)) and len(e) == 2
                                                              for e in conditioning):
        raise CalibrationError("more_prompts must be a CONDITIONING (connect a text encoder, or several "
                               "through Conditioning (Combine))")
    return [[list(entry)] for entry in conditioning]


def calibration_pairs(s: SamplerSettings, seeds: list[int], prompts: list | None = None) -> list[CalibrationPair]:
    """The (prompt, seed) pairs of a calibration: ``s.positive`` then ``prompts``, each paired with its own seed.

    Seeds matter more than prompts: in the in-host benchmark the held-out error of a schedule split by seed,
    not by prompt. So with one seed given, prompt k gets seed + k; with several, pair k takes prompt
    k and seed k, the shorter list repeated, as many pairs as the longer list.
    """
    conds = [s.positive] + list(prompts or [])
    if len(seeds) == 1 and len(conds) > 1:
        seeds = [seeds[0] + k for k in range(len(conds))]
    count = max(len(conds), len(seeds))
    if count > MAX_SEEDS:
        raise CalibrationError(f"at most {MAX_SEEDS} calibration runs (prompts and seeds), got {count}")
    return [CalibrationPair(dataclasses.replace(s, positive=conds[k % len(conds)]), int(seeds[k % len(seeds)]),
                            k % len(conds)) for k in range(count)]


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


NODES = [Calibrate]
