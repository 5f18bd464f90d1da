"""OTCache Anchor Search: stage 2 of OTCache inside ComfyUI (method.md §4).

It takes a KSampler's inputs and a reference, and runs the anchor search (``measure.anchor``): Optuna
trials that sample the model with candidate schedules at an extreme low budget, judged against the
uncached output, in a resumable study; then the validation ladder over every budget up to the reference.
"""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..otcache_engine.errors import OTCacheError
from .measure.anchor import REUSE_CHOICES, anchor_search
from .measure import effort as effort_levels
from .measure.sampling import SamplerSettings
from .node_types import CalibrationType, ScheduleType, parse_seeds, sampler_inputs
from .preview import plot_payload, ui_output
from .runtime.operators import AUTO, DEFAULT

log = logging.getLogger("otcache")

TRIALS = 25   # the knee of the cost-fidelity curve: 25 found what 30 found in all 8 benchmark runs
TRIALS_TOOLTIP = ("Total finished trials of the study, counted across runs: running again with the same storage "
                  "continues up to this number. Each trial costs at most K model calls per pair (memoised "
                  f"repeats are free, losing trials are pruned). Default {TRIALS} (it found what 30 found in "
                  "every run of the benchmark; 20 fell short once); 100 was the default before (see the "
                  "README's cost table for what each setting buys).")
VALIDATE_SCOPES = ("auto", "every budget", "the two ends")   # the first is the default

class AnchorSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheAnchorSearch",
            display_name="OTCache Anchor Search",
            category="OTCache",
            description="Stage 2: searches the best schedule at an extreme low budget by actually sampling with "
                        "each candidate (Optuna, TPE) and comparing with the uncached result. Resumable: the "
                        "study is stored, so run it again to continue, or share a database between machines.",
            inputs=sampler_inputs() + _search_inputs(),
            outputs=[ScheduleType.Output("anchor", display_name="anchor")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, denoise,
                reference, calibration=None, vae=None, anchor_budget=0, trials=TRIALS, search_seeds="",
                search_seed=0, storage="", reuse=AUTO, gamma=0.5, max_gap=0, validate=True,
                validate_budgets=VALIDATE_SCOPES[0], effort=effort_levels.AS_SET) -> io.NodeOutput:
        s = SamplerSettings(steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise)
        try:
            chosen, level_note = effort_levels.anchor_inputs(effort, {
                "trials": trials, "validate": bool(validate), "validate_budgets": validate_budgets})
            trials, validate, validate_budgets = chosen["trials"], chosen["validate"], chosen["validate_budgets"]
            seeds = parse_seeds(search_seeds, seed)
            anchor, summary = anchor_search(model, s, reference, seeds=seeds, budget=anchor_budget, trials=trials,
                                            search_seed=search_seed, storage=storage, vae=vae,
                                            calibration=calibration, reuse=reuse, gamma=float(gamma),
                                            max_gap=max_gap, own_seeds=bool((search_seeds or "").strip()),
                                            validate=bool(validate),
                                            every_budget=None if validate_budgets == "auto"
                                            else validate_budgets == "every budget")
        except OTCacheError as e:
            raise ValueError(f"OTCache Anchor Search: {e}") from None
        note = (f"anchor K={anchor.budget} of N={anchor.num_steps}: best {summary['metric']} "
                f"{summary['best_score']:.4g} after {summary['trials']} trials on {summary['pairs']} pair(s) "
                f"({summary['judged_on']}); cost {summary['model_calls']} model calls = {summary['generations']:.1f} "
                f"uncached generations" + (f"; {summary['validation']}" if summary["validation"] else ""))
        note = f"{level_note}; {note}" if level_note else note
        warnings = [summary["warning"]] if summary["warning"] else []
        ui = ui_output(plot_payload(anchor, reference, None, label="anchor", note=note, warnings_=warnings))
        ui["otcache_anchor"] = [summary]
        return io.NodeOutput(anchor, ui=ui)


def _search_inputs() -> list:
    """Anchor Search's own inputs, after KSampler's."""
    return [
        ScheduleType.Input("reference", tooltip="The reference schedule (OTCache Calibrate): warm start "
                                                "and the upper end of the interpolation."),
        CalibrationType.Input("calibration", optional=True,
                              tooltip="Calibration data: adds the graph method's schedule at the anchor "
                                      "budget as a warm start (the anchor must beat it)."),
        io.Vae.Input("vae", optional=True,
                     tooltip="Decode outputs for a perceptual metric (LPIPS, or 1 - SSIM without LPIPS "
                             "weights). Without a VAE the final latents are compared (relative L1)."),
        io.Int.Input("anchor_budget", default=0, min=0, max=10000,
                     tooltip="Computed steps K of the anchor. 0 = auto (about N/5: 6 for 28 steps, "
                             "10 for 50)."),
        io.Int.Input("trials", default=TRIALS, min=1, max=100000,
                     tooltip=TRIALS_TOOLTIP),
        io.String.Input("search_seeds", default="",
                        tooltip="Empty: every trial is judged on the connected calibration's prompts and "
                                "seeds (or on 'seed' alone without one). Seeds here ('0, 1' or 'x2') "
                                "judge on this node's prompt with 'seed' and these instead. More pairs = a "
                                "more general anchor, proportionally slower trials."),
        io.Int.Input("search_seed", default=0, min=0, max=2**31 - 1,
                     tooltip="Seed of Optuna's TPE sampler (reproducible with one worker)."),
        io.String.Input("storage", default="",
                        tooltip="Empty: a journal file in ComfyUI's user folder "
                                "(user/otcache/anchor-<model>-<steps>-<K>.journal), resumed automatically. "
                                "A plain name: that journal file there. An Optuna URL "
                                "(sqlite:///path.db, postgresql://user:pass@host/db): shared by every "
                                "machine that uses it."),
        io.Combo.Input("reuse", options=[AUTO, *REUSE_CHOICES], default=AUTO,
                       tooltip="The reuse operator the anchor is searched (and later deployed) with. "
                               "auto: the one Calibrate measured for this model (stored in the "
                               f"reference), else {DEFAULT.label()}, as OTCache Apply's auto does."),
        io.Float.Input("gamma", default=0.5, min=0.0, max=1.5, step=0.05,
                       tooltip="omnicache chosen by hand only: 0 = plain reuse, 1 = linear "
                               "extrapolation."),
        io.Int.Input("max_gap", default=0, min=0, max=10000,
                     tooltip="Longest gap allowed in the anchor. 0 = auto (twice the uniform gap)."),
        io.Boolean.Input("validate", default=True,
                         tooltip="After the search, check the result on the same pairs against its "
                                 "rivals and against the free default (what Apply runs with nothing "
                                 "connected); Apply then runs whichever was better at each budget. "
                                 "Off: nothing is checked."),
        io.Combo.Input("validate_budgets", options=list(VALIDATE_SCOPES), default=VALIDATE_SCOPES[0],
                       tooltip="auto (default): every budget when the trials are judged on 2 or more pairs, "
                               "the two ends with one (on the benchmark, with one pair, validating every "
                               "budget cost 40-110 % more and gained nothing on average, -4.8 to +3.7 dB; with "
                               "four pairs it gained up to 5 dB). every budget: at each budget between the "
                               "anchor and the reference, the OT interpolation against the graph search's "
                               "schedule (the best kept) and the free default, and the free default at both "
                               "ends (about 3 x the sum of those budgets model calls per pair). the two ends: "
                               "the free default against the reference and the anchor only (about 2 x K_ref + "
                               "K_anc calls per pair); in between Apply follows the nearer end."),
        io.Combo.Input("effort", options=list(effort_levels.LEVELS), default=effort_levels.AS_SET,
                       tooltip=effort_levels.TOOLTIP),
    ]
