"""The per-call run of OTCache: what the installed wrappers do while a sampler runs.

``OUTER_SAMPLE`` makes a fresh ``CacheSession`` for every sampling run (and closes it in ``finally``: errors
and interrupts included); ``CALC_COND_BATCH`` starts a model evaluation and takes its one decision from
sigma; ``DIFFUSION_MODEL`` sets up each call; ``APPLY_MODEL`` is the last resort for models whose forward
runs no diffusion-model wrapper. Everything per run lives on a :class:`RunState`, found by the wrappers in
a clone of the guider's options for the duration of the run, so nothing survives the run and nothing is
stored on the shared model.

Two reuse spaces, two paths: block residuals go through the block replacements (``block_patch``), the whole
model output through :meth:`RunState.whole_output`, the one predict-or-compute-and-store path of both
wrappers that cache outputs. Every call that cannot be cached runs uncached with its reason counted, all
decided in one place (:meth:`RunState.bypass_reason`).
"""
from __future__ import annotations

import logging
from types import FunctionType
from typing import Any, Callable, Mapping

import torch

from ...otcache_engine import Schedule
from ...otcache_engine.runtime import CacheSession, StepPlan
from ...otcache_engine.runtime.trajectory import TAP_KEY
from . import streams
from .block_patch import RUN_KEY, CallState, current_call, is_ours, unwrap
from .compile_blocks import compile_blocks_for_run
from .config import CONFIG_KEY, OTCacheConfig
from .families import IMG_FIRST, TXT_FIRST
from .resolver import plan_run

_BLOCK_PATCH_KEYS = ("double_block", "single_block")

log = logging.getLogger("otcache")


class RunState:
    """One sampling run: its session, the current call, and what was learned about the model."""

    def __init__(self, cfg: OTCacheConfig, session: CacheSession) -> None:
        self.cfg, self.session = cfg, session
        self.token, self.num_patches = cfg.token, cfg.num_patches
        self.output_space = session.reuse.space == "output"     # the run's operator (the free default's too)
        self.between = cfg.family.between_blocks
        self.key = cfg.family.stream_key     # where a block finds its stream ("img"; Kandinsky 5: "x")
        self.joint_order = cfg.family.joint_order
        self.trust_img_slice = True
        self.layout_checked = not cfg.family.last_is_single
        self.broken = False
        self.layout_mismatch = 0
        self.dm_seen = False

    # --- the two wrappers that cache --------------------------------------------------
    def diffusion_call(self, executor: Any, args: tuple, kwargs: dict, to: dict) -> Any:
        x = args[0] if args else kwargs.get("x")
        if self.output_space and not torch.is_tensor(x) and self.cfg.family.whole_output_at_apply:
            # several latent streams (LTX-2): their whole output is cached at APPLY_MODEL, where ComfyUI
            # hands the model one latent that packs them
            return executor(*args, **kwargs)
        s = self.session
        d = s.decision
        if d is None:  # a call outside a sampler evaluation: take the step from its own sigma
            if to.get("sigmas") is None:
                s.note_bypass("no sigma")
                return executor(*args, **kwargs)
            d = s.decide(first_float(to["sigmas"]))
        self.dm_seen = True
        uuids = to.get("uuids")
        reason = self.bypass_reason(x, uuids, to, args, kwargs)
        if reason is not None:
            s.note_bypass(reason, d)
            return executor(*args, **kwargs)
        if self.output_space:
            return self.whole_output(d, uuids, x, lambda: executor(*args, **kwargs))
        return self._block_call(executor, args, kwargs, d, uuids)

    def apply_call(self, executor: Any, args: tuple, kwargs: dict, to: dict) -> Any:
        """Models whose forward runs no DIFFUSION_MODEL wrapper: cache eps = (x - denoised) / sigma."""
        if self.dm_seen:
            return executor(*args, **kwargs)
        s = self.session
        x, t = args[0], args[1]
        d = s.decision or s.decide(first_float(t))
        uuids = to.get("uuids")
        reason = self.bypass_reason(x, uuids, to, args, kwargs)
        if reason is not None:
            out = executor(*args, **kwargs)
            if not self.dm_seen:
                s.note_bypass(reason, d)
            return out
        sigma = t.reshape((-1,) + (1,) * (x.ndim - 1)).to(x.dtype)
        # a DIFFUSION_MODEL wrapper reached inside this call caches it (and counts it) itself
        return self.whole_output(d, uuids, x, lambda: executor(*args, **kwargs),
                                 to_cache=lambda out: (x - out) / sigma, from_cache=lambda eps: x - sigma * eps,
                                 taken_inside=lambda: self.dm_seen)

    # --- the one whole-output path and the one bypass rule ----------------------------
    def whole_output(self, d: Any, uuids: list, x: torch.Tensor, compute: Callable[[], Any],
                     to_cache: Callable[[Any], torch.Tensor] = lambda out: out,
                     from_cache: Callable[[torch.Tensor], Any] = lambda v: v.clone(),
                     taken_inside: Callable[[], bool] = lambda: False) -> Any:
        """Reuse the cached output of these streams, or compute it and keep it (in the cache's own space)."""
        s, sig, forced = self.session, tuple(x.shape), False
        if not d.compute:
            cached = s.predict_batch(uuids, d, sig, x.device)
            if cached is not None:
                s.note_call(False, d=d)
                return from_cache(cached)
            forced = True
        out = compute()
        if taken_inside():
            return out
        if torch.is_tensor(out) and out.shape[0] == x.shape[0]:
            s.store_batch(uuids, to_cache(out), d, sig)
        s.note_call(True, forced, d)
        return out

    def bypass_reason(self, x: Any, uuids: Any, to: dict, args: tuple, kwargs: dict) -> str | None:
        """Why this call must run uncached, or None. Output reuse needs one latent that splits by stream and
        the model's own block replacements; block reuse also the token layout and no other per-block work."""
        lead = streams.lead(x)
        if lead is None or (self.output_space and lead is not x):
            return "several latent streams"
        if not uuids or lead.shape[0] % len(uuids):
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
        if self.cfg.family.list_hook:   # its forward never reads block replacements (stack_list)
            return None
        dit = to.get("patches_replace", {}).get("dit", {})
        if len(dit) != self.num_patches or not all(is_ours(f, self.token) for f in dit.values()):
            return "another node's block patches"
        return None

    # --- block reuse ------------------------------------------------------------------
    def _block_call(self, executor: Any, args: tuple, kwargs: dict, d: Any, uuids: list) -> Any:
        s = self.session
        call = CallState(self, d, uuids)
        token = current_call.set(call)
        try:
            out = executor(*args, **kwargs)
        finally:
            current_call.reset(token)
        if call.reached:
            s.note_call(call.compute, call.forced, d)
        else:
            s.note_bypass("block hooks not reached", d)
        return out

    def _foreign_dit(self, to: dict) -> bool:
        """Whole-model reuse: block replacements other than those present at Apply time (e.g. Skip Layer
        Guidance's extra evaluation) change what the model computes, so such a call must run uncached."""
        dit = {k: unwrap(f) if is_ours(f, self.token) else f
               for k, f in to.get("patches_replace", {}).get("dit", {}).items()}
        dit = {k: f for k, f in dit.items() if f is not None}   # our own block patches pass through here
        base = self.cfg.base_dit
        if len(dit) != len(base):
            return True
        for key, fn in dit.items():
            old = base.get(key)
            # 0.3.64 deep-copies callable objects on clone(): accept the copy, never another function
            if fn is not old and (old is None or isinstance(fn, FunctionType) or type(fn) is not type(old)):
                return True
        return False

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
        if self.layout_mismatch:
            self.session.bypassed["token layout changed"] += self.layout_mismatch
        log.info(self.session.summary_line())
        self._warn_if_nothing_cached()
        self.session.close()

    def _warn_if_nothing_cached(self) -> None:
        """Never a silent no-op: a run whose schedule reuses steps but that reused none says so, and why."""
        s = self.session
        planned = sum(1 for n in s.steps_seen if not s.plan.compute[n])
        if not s.enabled or not planned or s.steps_seen - s.steps_computed:
            return
        why = "; ".join(f"{n} calls: {reason}" for reason, n in sorted(s.bypassed.items())) or "no usable cache"
        log.warning(f"{self.cfg.label}: nothing was cached in this run although its schedule reuses {planned} "
                    f"step(s), so it ran as fast as the uncached model ({why})")


def first_float(t: Any) -> float:
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
    sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
    run = _start_run(cfg, guider, orig, sigmas)
    _warn_away_from_calibration(cfg, guider, run.session.plan, args[1] if len(args) > 1 else kwargs.get("latent_image"))
    import comfy.model_patcher

    guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
    try:
        compile_blocks_for_run(guider.model_options, guider.model_patcher, cfg.family)
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
            run.session.decide(first_float(t))
    return executor(*args, **kwargs)


def _call_wrapper(method: str) -> Callable[..., Any]:
    """A wrapper handing each call to the run's ``method``; outside a cached run the call is left alone."""
    def wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
        to = _find_options(args, kwargs)
        run = to.get(RUN_KEY) if to is not None else None
        if run is None:
            return executor(*args, **kwargs)
        return getattr(run, method)(executor, args, kwargs, to)
    wrapper.__name__ = f"{method}_wrapper"
    return wrapper


diffusion_model_wrapper = _call_wrapper("diffusion_call")
apply_model_wrapper = _call_wrapper("apply_call")


# ------------------------------------------------------------------------------------ run set-up

def _start_run(cfg: OTCacheConfig, guider: Any, model_options: Mapping[str, Any], sigmas: Any) -> RunState:
    run_sigmas = [float(v) for v in sigmas.detach().reshape(-1).float().cpu().tolist()]
    tap = model_options.get("transformer_options", {}).get(TAP_KEY)   # a measurement run (measure/judge)
    if tap is not None:
        run_sigmas = tap.plan_sigmas(run_sigmas)
    _, plan, free = plan_run(cfg.planned, cfg.family, run_sigmas, lambda s: _reference_grid(guider, s),
                             may_switch=cfg.free_reuse is not None)
    reuse = cfg.free_reuse if free else cfg.reuse
    if free:
        log.info(f"{cfg.label}: this run has {plan.num_steps} steps, fewer than the calibration's "
                 f"{cfg.schedule.num_steps}, at a speed-up beyond its anchor's: it runs the free default "
                 f"({reuse.describe()}, uniform {plan.budget}/{plan.num_steps}), measured better there")
    session = CacheSession(plan, reuse, _cache_device(cfg.cache_device, guider), label=cfg.label,
                           always_on=cfg.always_on)
    if model_options.get("context_handler") is not None:
        session.disable("context windows split each step into several calls")
    elif plan.mapping == "unordered":
        session.disable("the sampler's sigmas do not decrease")
    if tap is not None:
        tap.attach(session)
    return RunState(cfg, session)


def _warn_away_from_calibration(cfg: OTCacheConfig, guider: Any, plan: StepPlan, latent: Any) -> None:
    """A schedule keeps working away from its calibration (it is retargeted), but the user should know
    that its quality was measured for another step count or resolution. Never stops a run."""
    if cfg.schedule is None or not cfg.schedule.provenance.get("steps"):
        return  # made for this run, or a built-in or hand-made schedule: nothing was calibrated
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
