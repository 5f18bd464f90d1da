"""OTCache Apply: MODEL (+ reference / anchor schedules + budget) -> MODEL that skips transformer work.

The node only gathers the user's choices into a ``BudgetRequest``; ``patcher.install`` resolves it once
(``resolver.resolve``) and does the work on a clone, handing back what it decided, which the UI output
(the schedule for the plot widget) is made from.
"""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..otcache_engine import Schedule
from ..otcache_engine.errors import OTCacheError
from ..otcache_engine.schedules.warp import retarget
from .node_types import ScheduleType
from .preview import plot_payload, ui_output
from .runtime.operators import AUTO, DEFAULT
from .runtime.patcher import CACHE_DEVICES, REUSE_NAMES, PatchOptions, install
from .runtime.provenance import check_model
from .runtime.resolver import MODES, BudgetRequest, Resolution, quality_line, transfer_note

log = logging.getLogger("otcache")

REUSE_TOOLTIP = (
    "What a skipped step reuses. auto: the operator measured best for this model at this budget (stored in "
    f"the schedules by Calibrate and Anchor Search), else {DEFAULT.label()} (the one operator never below "
    "the naive output skip on every cell of the in-host benchmark, CFG on and off). residual: the "
    "cached block residual on the step's own input, embedders and output head run; output: the whole cached "
    "model output (nothing runs); omnicache: the block residual extrapolated from the last two computed "
    "steps by gamma; taylor: the block residual (the whole output on models without block hooks) forecast "
    "from the last computed steps by a Taylor expansion in the noise level (TaylorSeer; order 2 chosen here, "
    "auto may measure order 1; plain reuse where a forecast blows up), keeping order + 1 cached residuals "
    "per CFG stream (FLUX.1-dev, 4096 image tokens x 3072 x bf16 = 24 MiB each: 72 MiB per stream at order "
    "2, 144 MiB with CFG; Wan 2.1 14B 480p x 81 frames, 32760 tokens x 5120 x bf16 = 320 MiB each). Which "
    "is best depends on the model: the benchmark measured 5-8 dB between them.")


class OTCacheApply(io.ComfyNode):
    """Patch a model so that sampling computes the transformer only on the schedule's steps."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheApply",
            display_name="OTCache Apply",
            category="OTCache",
            description="Speeds up sampling by running the diffusion transformer only on some steps and reusing "
                        "its cached work on the others. Connect a reference and an anchor schedule to choose "
                        "any budget between them, one schedule to use it as is, or nothing for a built-in "
                        "default. Works with split samplers, any step count, CFG batched or not.",
            inputs=[
                io.Model.Input("model"),
                ScheduleType.Input("reference", optional=True,
                                   tooltip="High-budget schedule (e.g. from OTCache Calibrate, or a preset)."),
                ScheduleType.Input("anchor", optional=True,
                                   tooltip="Low-budget schedule (e.g. from OTCache Anchor Search, or a preset)."),
                io.Combo.Input("budget_mode", options=list(MODES), default="speedup",
                               tooltip="speedup: steps / computed steps; compute steps: how many steps run the "
                                       "transformer (of the reference's steps, or of each run's without a "
                                       "schedule). Ignored when only one schedule is connected."),
                io.Float.Input("speedup", default=2.0, min=1.0, max=10.0, step=0.05,
                               display_mode=io.NumberDisplay.slider,
                               tooltip="Target N/K: 2.0 runs the transformer on half of the steps."),
                io.Int.Input("compute_steps", default=10, min=1, max=10000,
                             tooltip="Computed steps K in 'compute steps' mode."),
                io.Combo.Input("reuse", options=[AUTO] + list(REUSE_NAMES), default=AUTO, tooltip=REUSE_TOOLTIP),
                io.Float.Input("gamma", default=0.5, min=0.0, max=1.5, step=0.05,
                               tooltip="omnicache chosen by hand only: 0 = plain reuse, 1 = linear "
                                       "extrapolation ('auto' takes the measured gamma)."),
                io.Combo.Input("cache_device", options=list(CACHE_DEVICES), default="auto",
                               tooltip="Where cached tensors live: auto (offload to CPU in low-VRAM mode), the "
                                       "compute device, or CPU (saves VRAM, costs transfers)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with OTCache; the input model is not changed.")],
        )

    @classmethod
    def execute(cls, model, budget_mode: str = "speedup", speedup: float = 2.0, compute_steps: int = 10,
                reuse: str = AUTO, gamma: float = 0.5, cache_device: str = "auto",
                reference: Schedule | None = None, anchor: Schedule | None = None) -> io.NodeOutput:
        try:
            for name, value in (("reference", reference), ("anchor", anchor)):
                if value is not None and not isinstance(value, Schedule):
                    raise OTCacheError(f"the {name} input must be an OTCACHE_SCHEDULE, got {type(value).__name__}")
            request = BudgetRequest(reference, anchor, budget_mode, float(speedup), int(compute_steps), reuse,
                                    float(gamma))
            patched, cfg, res = install(model, request, PatchOptions(cache_device=cache_device))
        except OTCacheError as e:
            raise ValueError(f"OTCache Apply: {e}") from None
        warnings = _provenance_warnings(model, reference, anchor)
        for line in res.warnings:
            log.warning("OTCache Apply: %s", line)
            warnings.append(line)
        return io.NodeOutput(patched, ui=ui_output(_payload(cfg, res, request, warnings)))


def _provenance_warnings(model, *schedules: Schedule | None) -> list[str]:
    """Say so when a schedule is used away from the model it was calibrated on: it still works
    (it is retargeted), but a user should know the quality guarantee came from elsewhere."""
    found = []
    for s in schedules:
        if s is None:
            continue
        for line in check_model(s, model):
            if line not in found:
                found.append(line)
    for line in found:
        log.warning("OTCache Apply: %s", line)
    return found


def _payload(cfg, res: Resolution, request: BudgetRequest, warnings: list[str] | None = None) -> dict:
    target = res.schedule
    shown = {}
    for role in ("reference", "anchor"):
        s = getattr(request, role)
        if s is not None and s.num_steps != target.num_steps:
            shown[f"shown_{role}"] = retarget(s, target.num_steps)
    note = f"{cfg.family.describe()}; reuse {cfg.reuse.describe()} ({res.operator_origin}); {res.description}"
    if res.quality:
        note += f"; {quality_line(res.quality)}"
    if transfer_note(target):
        note += f"; {transfer_note(target)}"
    if request.per_run:
        note += f"; made for each run's step count (shown for {target.num_steps})"
    payload = plot_payload(target, request.reference, request.anchor, note=note,
                           label=None if request.connected else "default", warnings_=warnings, **shown)
    payload["kind"] = target.kind
    payload["quality"] = dict(res.quality) if res.quality else None
    return payload
