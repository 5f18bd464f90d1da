"""OTCache Calibrate: stage 1 of OTCache inside ComfyUI (method.md §2-3, §10).

It takes a KSampler's inputs (so converting a workflow is one move) and runs the calibration pipeline
(``measure.calibrate``): uncached runs recorded on a clone, edge weights, the reference schedule, and with
``measure`` the reuse operator and the reference checked end to end.
"""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..otcache_engine.errors import OTCacheError
from ..otcache_engine.schedules.graph_search import OBJECTIVES
from .measure.calibrate import ERROR_MODE_TOOLTIP, ERROR_MODES, MEASURE_TOOLTIP, calibrate
from .measure.calibration_record import split_prompts
from .measure import effort as effort_levels
from .measure.sampling import SamplerSettings
from .node_types import CalibrationType, ScheduleType, parse_seeds, sampler_inputs
from .preview import plot_payload, ui_output

log = logging.getLogger("otcache")


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
                io.Combo.Input("effort", options=list(effort_levels.LEVELS), default=effort_levels.AS_SET,
                               tooltip=effort_levels.TOOLTIP),
            ],
            outputs=[ScheduleType.Output("reference", display_name="reference"),
                     CalibrationType.Output("calibration", display_name="calibration")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, denoise,
                calibration_seeds="", error_mode="hybrid", max_gap=0, reference_budget=0,
                objective="leximax", measure=True, more_prompts=None,
                effort=effort_levels.AS_SET) -> io.NodeOutput:
        s = SamplerSettings(steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise)
        try:
            chosen, level_note = effort_levels.calibrate_inputs(effort, {
                "calibration_seeds": calibration_seeds, "error_mode": error_mode, "measure": bool(measure),
                "more_prompts": more_prompts})
            error_mode = chosen["error_mode"]
            seeds = parse_seeds(chosen["calibration_seeds"], seed)
            reference, data = calibrate(model, s, seeds, error_mode, max_gap, reference_budget, objective,
                                        prompts=split_prompts(more_prompts), measure=chosen["measure"])
        except OTCacheError as e:
            raise ValueError(f"OTCache Calibrate: {e}") from None
        p = reference.provenance
        note = (f"reference K={reference.budget} of N={reference.num_steps} ({error_mode} error, "
                f"{len(data.runs)} run(s) over {data.settings['prompts']} prompt(s), {data.settings['model_calls']} "
                f"model calls = {data.settings['model_calls'] / reference.num_steps:.1f} uncached generations); "
                f"replay error {p['calibrated_error']:.4g} vs uniform {p['uniform_error']:.4g}")
        note = f"{level_note}; {note}" if level_note else note
        log.info("[OTCache] Calibrate: %s; %s", reference.mask_string(), note)
        ui = ui_output(plot_payload(reference, label="reference", note=note))
        ui["otcache_calibration"] = [data.summary() | {"calibrated_error": p["calibrated_error"],
                                                       "uniform_error": p["uniform_error"]}]
        return io.NodeOutput(reference, data, ui=ui)
