"""Patch a ComfyUI model for OTCache, through the model-patcher API only.

``patch_model`` works on ``model.clone()`` and adds:

- keyed wrappers: ``OUTER_SAMPLE`` makes a fresh ``CacheSession`` for every
  sampling run (and closes it in ``finally``: errors and interrupts included),
  ``CALC_COND_BATCH`` starts a model evaluation and takes its one decision from
  sigma, ``DIFFUSION_MODEL`` sets up each call (streams, bail-outs), and for
  models without block hooks ``APPLY_MODEL`` as the last-resort fallback;
- a ``patches_replace["dit"]`` replacement on every block index, wrapping any
  replacement already on the clone (it is called on computed steps, never
  dropped).
- for Chroma, a PatcherInjection that trims its modulation network on reused
  steps (``modulation_trim``); ComfyUI ejects it whenever the clone is detached.

No model forward is copied, nothing is monkey-patched, nothing is stored on the
shared diffusion model: the only thing in ``model_options`` is an immutable
``OTCacheConfig`` under ``transformer_options["otcache"]``; per-run state lives
in a clone of the guider's options for the duration of the run.

Calibration and anchor-search nodes run cached sampling with a given schedule
by calling ``patch_model(model, schedule, options)`` and then ComfyUI's own
sampling on the returned patcher (``cached_model`` is a shorthand).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import FunctionType
from typing import Any, Mapping

import torch

from ..otcache_engine import Schedule
from ..otcache_engine.errors import OTCacheError
from ..otcache_engine.runtime import CacheSession, StepPlan, make_reuse
from ..otcache_engine.runtime.reuse import NAMES as REUSE_NAMES, ReuseOperator, with_space
from .block_patch import RUN_KEY, CallState, is_ours, make_block_patch, unwrap
from .families import IMG_FIRST, TXT_FIRST, FamilySpec, detect_family
from .modulation_trim import add_trim, current_call, remove_trim
from .schedule_source import ScheduleSource

CONFIG_KEY = "otcache"
WRAPPER_KEY = "otcache"
CACHE_DEVICES = ("auto", "compute device", "cpu offload")
_COMPILE_KEY = "torch.compile"
_BLOCK_PATCH_KEYS = ("double_block", "single_block")

log = logging.getLogger("otcache")


@dataclass(frozen=True)
class PatchOptions:
    """How to cache: reuse operator (and omnicache's gamma), where caches live, the log label."""

    reuse: str = "residual"
    gamma: float | tuple[float, ...] = 0.5
    cache_device: str = "auto"
    label: str = "OTCache"
    always_on: bool = False   # keep caching on when every step computes (benchmarks, tests)

    def __post_init__(self) -> None:
        if self.reuse not in REUSE_NAMES:
            raise OTCacheError(f"unknown reuse operator {self.reuse!r}; choose one of {list(REUSE_NAMES)}")
        if self.cache_device not in CACHE_DEVICES:
            raise OTCacheError(f"unknown cache device {self.cache_device!r}; choose one of {list(CACHE_DEVICES)}")


class OTCacheConfig:
    """What one OTCache Apply decided; immutable, shared by every copy of the model options.

    ComfyUI v0.3.64 deep-copies ``model_options`` on ``clone()``; copying returns the object
    itself, so every clone of the patched model refers to the same config (and its token).
    """

    __slots__ = ("token", "source", "schedule", "description", "family", "reuse", "cache_device",
                 "label", "num_patches", "always_on", "base_dit")

    def __init__(self, source: ScheduleSource, schedule: Schedule, description: str, family: FamilySpec,
                 reuse: ReuseOperator, opts: PatchOptions, num_patches: int) -> None:
        self.token = object()
        self.source, self.schedule, self.description = source, schedule, description
        self.family, self.reuse, self.cache_device = family, reuse, opts.cache_device
        self.label, self.num_patches, self.always_on = opts.label, num_patches, opts.always_on
        self.base_dit: dict = {}   # block replacements already on the model (whole-model reuse keeps them)

    def __copy__(self) -> "OTCacheConfig":
        return self

    def __deepcopy__(self, memo: dict) -> "OTCacheConfig":
        return self

    def schedule_for_run(self, run_steps: int) -> Schedule:
        if self.source.per_run:
            return self.source.resolve(self.family, run_steps)[0]
        return self.schedule


# ----------------------------------------------------------------------------------------- patching

def patch_model(model: Any, schedule_source: Schedule | ScheduleSource | None = None,
                options: PatchOptions | Mapping[str, Any] | None = None) -> Any:
    """A clone of ``model`` (a ComfyUI ModelPatcher) that samples with OTCache; ``model`` is untouched.

    ``schedule_source``: one Schedule (used as is), a ScheduleSource (reference / anchor / budget), or
    None (the built-in default at 2x). A model that already carries OTCache gets the new settings
    instead of the old ones.
    """
    opts = options if isinstance(options, PatchOptions) else PatchOptions(**dict(options or {}))
    refuse_compiled(model.model_options, getattr(model, "wrappers", {}))
    source = _as_source(schedule_source)
    m = model.clone()
    spec = detect_family(m.get_model_object("diffusion_model"))
    schedule, description = source.resolve(spec)
    reuse = make_reuse(opts.reuse, opts.gamma)
    if not spec.block_caching and reuse.space != "output":
        reuse = with_space(reuse, "output")
    blocks = spec.blocks if reuse.space == "residual" else ()
    _remove_previous(m)
    cfg = OTCacheConfig(source, schedule, description, spec, reuse, opts, len(blocks))
    cfg.base_dit = dict(m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {}))
    to = dict(m.model_options.get("transformer_options", {}))
    to[CONFIG_KEY] = cfg
    m.model_options["transformer_options"] = to
    _add_wrappers(m, generic=not spec.block_caching)
    _add_block_patches(m, cfg, spec, blocks)
    if blocks and spec.trim_modulation:
        add_trim(m)
    _announce(cfg)
    return m


def cached_model(model: Any, schedule: Schedule, reuse: str = "residual", **options: Any) -> Any:
    """Shorthand for other nodes (calibration, anchor search): ``model`` sampling with ``schedule`` as is."""
    return patch_model(model, schedule, PatchOptions(reuse=reuse, **options))


def _as_source(source: Schedule | ScheduleSource | None) -> ScheduleSource:
    if source is None:
        return ScheduleSource()
    if isinstance(source, Schedule):
        return ScheduleSource(reference=source)
    if isinstance(source, ScheduleSource):
        return source
    raise OTCacheError(f"schedule source must be a Schedule or ScheduleSource, got {type(source).__name__}")


def refuse_compiled(model_options: Mapping[str, Any], wrappers: Mapping[str, Any]) -> None:
    """TorchCompileModel compiles the whole diffusion model, freezing per-step Python decisions: refuse."""
    import comfy.patcher_extension as pe

    in_options = model_options.get("transformer_options", {}).get("wrappers", {}).get(pe.WrappersMP.APPLY_MODEL, {})
    if (model_options.get("torch_compile_kwargs") is not None or _COMPILE_KEY in in_options
            or _COMPILE_KEY in wrappers.get(pe.WrappersMP.APPLY_MODEL, {})):
        raise OTCacheError("OTCache Apply cannot cache a model compiled by TorchCompileModel (the compiled graph "
                           "would freeze its per-step decisions); remove TorchCompileModel or OTCache Apply")


def remove_otcache(m: Any) -> None:
    """Take OTCache off ``m`` in place (call it on a clone): wrappers, block patches and config go,
    whatever our patches wrapped stays. For nodes that must sample a connected model uncached."""
    _remove_previous(m, quiet=True)


def _remove_previous(m: Any, quiet: bool = False) -> None:
    """Take off an earlier OTCache Apply's wrappers and block patches, keeping what they wrapped."""
    import comfy.patcher_extension as pe

    to = m.model_options.get("transformer_options", {})
    if CONFIG_KEY not in to:
        return
    for kind in (pe.WrappersMP.OUTER_SAMPLE, pe.WrappersMP.CALC_COND_BATCH, pe.WrappersMP.DIFFUSION_MODEL,
                 pe.WrappersMP.APPLY_MODEL):
        m.remove_wrappers_with_key(kind, WRAPPER_KEY)
    remove_trim(m)
    to = dict(to)
    to.pop(CONFIG_KEY, None)
    pr = dict(to.get("patches_replace", {}))
    dit = dict(pr.get("dit", {}))
    for key, fn in list(dit.items()):
        if is_ours(fn):
            inner = unwrap(fn)
            if inner is None:
                del dit[key]
            else:
                dit[key] = inner
    pr["dit"] = dit
    to["patches_replace"] = pr
    m.model_options["transformer_options"] = to
    if not quiet:
        log.info("OTCache Apply: this model already had OTCache; the new settings replace the old ones")


def _add_wrappers(m: Any, generic: bool) -> None:
    import comfy.patcher_extension as pe

    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
    m.add_wrapper_with_key(pe.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, calc_cond_batch_wrapper)
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, diffusion_model_wrapper)
    if generic:
        m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, WRAPPER_KEY, apply_model_wrapper)


def _add_block_patches(m: Any, cfg: OTCacheConfig, spec: FamilySpec, blocks: tuple) -> None:
    existing = m.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    last = len(blocks) - 1
    joint = next((j for j in range(1, len(blocks)) if blocks[j - 1][0] == "double_block"
                  and blocks[j][0] == "single_block"), None)
    for j, (kind, i) in enumerate(blocks):
        patch = make_block_patch(cfg.token, existing.get((kind, i)), first=j == 0, last=j == last,
                                 boundary=joint is not None and j == joint - 1,
                                 joint_first=joint is not None and j == joint)
        m.set_model_patch_replace(patch, "dit", kind, i)


def _announce(cfg: OTCacheConfig) -> None:
    s = cfg.schedule
    when = "per run" if cfg.source.per_run else f"{s.budget}/{s.num_steps} steps, {s.speedup:.2f}x"
    log.info(f"{cfg.label} Apply: {cfg.family.describe()}; reuse {cfg.reuse.describe()}; "
             f"schedule {cfg.description} ({when})")


# --------------------------------------------------------------------------------------- the run

class RunState:
    """One sampling run: its session, the current call, and what was learned about the model."""

    def __init__(self, cfg: OTCacheConfig, session: CacheSession) -> None:
        self.cfg, self.session = cfg, session
        self.token, self.num_patches = cfg.token, cfg.num_patches
        self.output_space = cfg.reuse.space == "output"
        self.call: CallState | None = None
        self.joint_order = cfg.family.joint_order
        self.trust_img_slice = True
        self.layout_checked = not cfg.family.last_is_single
        self.broken = False
        self.layout_mismatch = 0
        self.dm_seen = False

    # --- DIFFUSION_MODEL ---------------------------------------------------------
    def diffusion_call(self, executor: Any, args: tuple, kwargs: dict, to: dict) -> Any:
        s = self.session
        d = s.decision
        if d is None:  # a call outside a sampler evaluation: take the step from its own sigma
            if to.get("sigmas") is None:
                s.note_bypass("no sigma")
                return executor(*args, **kwargs)
            d = s.decide(_first_float(to["sigmas"]))
        self.dm_seen = True
        x = args[0] if args else kwargs.get("x")
        uuids = to.get("uuids")
        reason = self._bypass_reason(x, uuids, args, kwargs, to)
        if reason is not None:
            s.note_bypass(reason, d)
            return executor(*args, **kwargs)
        if self.output_space:
            return self._output_call(executor, args, kwargs, x, uuids, d)
        call = self.call = CallState(d, uuids, reuse=not d.compute)
        token = current_call.set(call)
        try:
            out = executor(*args, **kwargs)
        finally:
            current_call.reset(token)
            self.call = None
        if call.reached:
            s.note_call(not call.reuse, call.forced, d)
        else:
            s.note_bypass("block hooks not reached", d)
        return out

    def _bypass_reason(self, x: Any, uuids: Any, args: tuple, kwargs: dict, to: dict) -> str | None:
        if not torch.is_tensor(x):
            return "several latent streams"
        if not uuids or x.shape[0] % len(uuids):
            return "batch does not split by conditioning"
        if to.get("multigpu_thread_device") is not None:
            return "multi-GPU"
        if self.output_space:
            return "another node's block patches" if self._foreign_dit(to) else None
        if self.broken:
            return "unknown token layout"
        if _control_of(args, kwargs, to) is not None:
            return "ControlNet"
        patches = to.get("patches")
        if patches and any(k in patches for k in _BLOCK_PATCH_KEYS):
            return "per-block patches"
        dit = to.get("patches_replace", {}).get("dit", {})
        if len(dit) != self.num_patches or not all(is_ours(f, self.token) for f in dit.values()):
            return "another node's block patches"
        return None

    def _foreign_dit(self, to: dict) -> bool:
        """Whole-model reuse: block replacements other than those present at Apply time (e.g. Skip Layer
        Guidance's extra evaluation) change what the model computes, so such a call must run uncached."""
        dit = to.get("patches_replace", {}).get("dit", {})
        base = self.cfg.base_dit
        if len(dit) != len(base):
            return True
        for key, fn in dit.items():
            old = base.get(key)
            # 0.3.64 deep-copies callable objects on clone(): accept the copy, never another function
            if fn is not old and (old is None or isinstance(fn, FunctionType) or type(fn) is not type(old)):
                return True
        return False

    def _output_call(self, executor: Any, args: tuple, kwargs: dict, x: torch.Tensor, uuids: list,
                     d: Any) -> Any:
        s, sig, forced = self.session, tuple(x.shape), False
        if not d.compute:
            v = s.predict_batch(uuids, d, sig, x.device)
            if v is not None:
                s.note_call(False, d=d)
                return v.clone()
            forced = True
        out = executor(*args, **kwargs)
        if torch.is_tensor(out) and out.shape[0] == x.shape[0]:
            s.store_batch(uuids, out, d, sig)
        s.note_call(True, forced, d)
        return out

    # --- APPLY_MODEL (models whose forward runs no DIFFUSION_MODEL wrapper) -------------
    def apply_call(self, executor: Any, args: tuple, kwargs: dict, to: dict) -> Any:
        if self.dm_seen:
            return executor(*args, **kwargs)
        s = self.session
        x, t = args[0], args[1]
        d = s.decision or s.decide(_first_float(t))
        uuids = to.get("uuids")
        reason = None
        if not torch.is_tensor(x) or "latent_shapes" in kwargs:
            reason = "several latent streams"
        elif not uuids or x.shape[0] % len(uuids):
            reason = "batch does not split by conditioning"
        elif self._foreign_dit(to):
            reason = "another node's block patches"
        if reason is not None:
            out = executor(*args, **kwargs)
            if not self.dm_seen:
                s.note_bypass(reason, d)
            return out
        sigma = t.reshape((-1,) + (1,) * (x.ndim - 1)).to(x.dtype)
        sig, forced = tuple(x.shape), False
        if not d.compute:
            eps = s.predict_batch(uuids, d, sig, x.device)
            if eps is not None:
                s.note_call(False, d=d)
                return x - sigma * eps
            forced = True
        out = executor(*args, **kwargs)
        if not self.dm_seen:  # else the DIFFUSION_MODEL wrapper took this call
            s.store_batch(uuids, (x - out) / sigma, d, sig)
            s.note_call(True, forced, d)
        return out

    # --- joint stream layout -------------------------------------------------------------
    def check_layout(self, args: dict, call: CallState) -> None:
        """Once per run: find the image tokens in the joint stream by comparing with the last double block."""
        b, x = call.boundary, args["img"]
        call.boundary = None
        self.layout_checked = True
        length, total = b.shape[1], x.shape[1]
        sl = args["transformer_options"].get("img_slice")
        candidates = [("slice", int(sl[0]))] if sl is not None else []
        own = total - length if self.joint_order == TXT_FIRST else 0
        other = 0 if self.joint_order == TXT_FIRST else total - length
        candidates += [(self.joint_order, own), (IMG_FIRST if self.joint_order == TXT_FIRST else TXT_FIRST, other)]
        for name, a in candidates:
            if 0 <= a and a + length <= total and x.shape[0] == b.shape[0] and torch.equal(x[:, a:a + length], b):
                self.trust_img_slice = name == "slice"
                if name != "slice":
                    self.joint_order = name
                return
        self.broken = True
        log.warning(f"{self.cfg.label}: cannot find the image tokens in the joint stream of "
                    f"{self.cfg.family.class_name}; caching is off for this run")

    def finish(self) -> None:
        self.call = None
        if self.layout_mismatch:
            self.session.bypassed["token layout changed"] += self.layout_mismatch
        log.info(self.session.summary_line())
        self.session.close()


def _first_float(t: Any) -> float:
    if torch.is_tensor(t):
        return float(t.reshape(-1)[0])
    return float(t[0] if isinstance(t, (list, tuple)) else t)


def _control_of(args: tuple, kwargs: dict, to: dict) -> Any:
    c = kwargs.get("control")
    if c is not None:
        return c
    for a in args:
        if isinstance(a, dict) and a is not to and ("input" in a or "output" in a or "middle" in a):
            return a
    return None


def _find_options(args: tuple, kwargs: dict) -> dict | None:
    """``transformer_options`` by content: its position differs by family and ComfyUI version."""
    to = kwargs.get("transformer_options")
    if isinstance(to, dict):
        return to
    for a in reversed(args):
        if isinstance(a, dict) and ("uuids" in a or RUN_KEY in a or CONFIG_KEY in a):
            return a
    return None


# ------------------------------------------------------------------------------------- wrappers

def outer_sample_wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
    """One sampling run: fresh session in a clone of the guider's options, closed whatever happens."""
    guider = executor.class_obj
    orig = guider.model_options
    cfg = orig.get("transformer_options", {}).get(CONFIG_KEY)
    if not isinstance(cfg, OTCacheConfig):
        return executor(*args, **kwargs)
    refuse_compiled(orig, getattr(guider.model_patcher, "wrappers", {}))
    sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
    run = _start_run(cfg, guider, orig, sigmas)
    _warn_away_from_calibration(cfg, guider, run.session.plan, args[1] if len(args) > 1 else kwargs.get("latent_image"))
    import comfy.model_patcher

    guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
    try:
        if run.session.enabled:
            guider.model_options["transformer_options"][RUN_KEY] = run
        return executor(*args, **kwargs)
    finally:
        guider.model_options = orig
        run.finish()


def calc_cond_batch_wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
    """A model evaluation starts: one decision, from its sigma, for every call it makes."""
    mo = kwargs.get("model_options")
    if mo is None:
        mo = next((a for a in reversed(args) if isinstance(a, dict)), None)
    run = mo.get("transformer_options", {}).get(RUN_KEY) if mo is not None else None
    if run is not None:
        run.session.begin_evaluation()
        t = kwargs.get("timestep", args[3] if len(args) > 3 else None)
        if t is not None:
            run.session.decide(_first_float(t))
    return executor(*args, **kwargs)


def diffusion_model_wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
    to = _find_options(args, kwargs)
    run = to.get(RUN_KEY) if to is not None else None
    if run is None:
        return executor(*args, **kwargs)
    return run.diffusion_call(executor, args, kwargs, to)


def apply_model_wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
    to = _find_options(args, kwargs)
    run = to.get(RUN_KEY) if to is not None else None
    if run is None:
        return executor(*args, **kwargs)
    return run.apply_call(executor, args, kwargs, to)


# ------------------------------------------------------------------------------------ run set-up

def _start_run(cfg: OTCacheConfig, guider: Any, model_options: Mapping[str, Any], sigmas: Any) -> RunState:
    run_sigmas = [float(v) for v in sigmas.detach().reshape(-1).float().cpu().tolist()]
    schedule = cfg.schedule_for_run(len(run_sigmas) - 1)
    reference = _reference_grid(guider, schedule) if schedule.sigmas is None else None
    plan = StepPlan.build(schedule, run_sigmas, reference)
    session = CacheSession(plan, cfg.reuse, _cache_device(cfg.cache_device, guider), label=cfg.label,
                           always_on=cfg.always_on)
    if model_options.get("context_handler") is not None:
        session.disable("context windows split each step into several calls")
    elif plan.mapping == "unordered":
        session.disable("the sampler's sigmas do not decrease")
    return RunState(cfg, session)


def _warn_away_from_calibration(cfg: OTCacheConfig, guider: Any, plan: StepPlan, latent: Any) -> None:
    """A schedule keeps working away from its calibration (it is retargeted), but the user should know
    that its quality was measured for another step count or resolution. Never stops a run."""
    if not cfg.schedule.provenance.get("steps"):
        return  # a built-in or hand-made schedule: nothing was calibrated
    try:
        from .provenance import check_run, latent_resolution

        run: dict[str, Any] = {}
        if plan.mapping != "slice":  # a stage of a split run has fewer steps by design
            run["steps"] = plan.num_steps
        if getattr(latent, "shape", None) is not None:
            run["resolution"] = latent_resolution(guider.model_patcher, latent.shape)
        for line in check_run(cfg.schedule, **run):
            log.warning("OTCache: %s", line)
    except Exception as e:  # noqa: BLE001 - a check must never break sampling
        log.debug(f"OTCache: calibration check skipped ({e})")


def _reference_grid(guider: Any, schedule: Schedule) -> list[float] | None:
    """The grid a schedule without sigmas is assumed to live on: this model's scheduler for N steps."""
    try:
        import comfy.samplers

        names = getattr(comfy.samplers, "SCHEDULER_NAMES", None) or comfy.samplers.KSampler.SCHEDULERS
        name = schedule.provenance.get("scheduler")
        name = name if isinstance(name, str) and name in names else "simple"
        ms = guider.model_patcher.get_model_object("model_sampling")
        return [float(v) for v in comfy.samplers.calculate_sigmas(ms, name, schedule.num_steps).cpu().tolist()]
    except Exception as e:  # a model sampling that cannot make a grid: the plan maps by index
        log.debug(f"OTCache: no reference grid ({e})")
        return None


def _cache_device(choice: str, guider: Any) -> str | None:
    if choice == "cpu offload":
        return "cpu"
    if choice == "compute device":
        return None
    import comfy.model_management as mm

    device = getattr(guider.model_patcher, "load_device", None)
    if device is not None and torch.device(device).type == "cpu":
        return None
    low = {getattr(mm.VRAMState, n) for n in ("LOW_VRAM", "NO_VRAM") if hasattr(mm.VRAMState, n)}
    return "cpu" if getattr(mm, "vram_state", None) in low else None


def patched_config(model: Any) -> OTCacheConfig | None:
    """The OTCache config a model carries, if any (for tests and other nodes)."""
    cfg = model.model_options.get("transformer_options", {}).get(CONFIG_KEY)
    return cfg if isinstance(cfg, OTCacheConfig) else None


__all__ = ["patch_model", "cached_model", "remove_otcache", "PatchOptions", "ScheduleSource", "OTCacheConfig", "patched_config",
           "refuse_compiled", "CONFIG_KEY", "RUN_KEY"]
