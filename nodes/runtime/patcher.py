"""Install OTCache on a ComfyUI model, through the model-patcher API only.

``patch_model`` works on ``model.clone()`` and adds keyed wrappers (``run``: OUTER_SAMPLE, CALC_COND_BATCH,
DIFFUSION_MODEL, and for whole-model reuse of models without block hooks or with several latent streams
APPLY_MODEL), a ``patches_replace["dit"]`` replacement
on every block index (``block_patch``; it wraps any replacement already on the clone, which is called on
computed steps, never dropped) and, for a family whose registry entry says so, a PatcherInjection that
trims the modulation network on reused steps (``modulation_trim``; ComfyUI ejects it whenever the clone is
detached). A family whose forward iterates its block lists itself (NextDiT, HiDream) gets no block
replacements but an object patch per block list (``stack_list``: the same blocks, iterated as the step's
decision says), which ComfyUI sets on the model only while the clone is loaded and takes off, back to its
own backup of the list, whenever the model unpatches or another clone loads; block lists beside the stack
whose work a reused step never reads (Kandinsky 5's text blocks, VACE's hints) get such a stand-in too
(``side_lists``). No model forward is copied, and nothing of ours is assigned on the shared diffusion
model outside ComfyUI's own patch / unpatch: the one forward the pack ever replaces (Chroma's modulation
network, by that injection) is put back whenever ComfyUI detaches the clone. The only thing in
``model_options`` is the immutable ``config.OTCacheConfig``.

``install`` asks the budget resolver once (``resolver.resolve``: the schedule, or the recipe for one per
run, and the reuse operator) and returns the clone, the config it made and that resolution, so a node keeps
what it built instead of reading it back from the model's options. Calibration and anchor-search nodes
sample with a given schedule through ``cached_model``.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from ...otcache_engine import Schedule
from ...otcache_engine.errors import OTCacheError
from ...otcache_engine.runtime import make_reuse
from ...otcache_engine.runtime.reuse import NAMES as REUSE_NAMES, with_space
from .block_patch import RUN_KEY, is_ours, make_block_patch, own_block, unwrap
from .compile_blocks import check_compile
from .config import CACHE_DEVICES, CONFIG_KEY, WRAPPER_KEY, OTCacheConfig, PatchOptions, patched_config
from .families import FamilySpec, detect_family
from .modulation_trim import add_trim, remove_trim
from .operators import DEFAULT
from .resolver import BudgetRequest, Resolution, resolve
from .run import apply_model_wrapper, calc_cond_batch_wrapper, diffusion_model_wrapper, outer_sample_wrapper
from .side_lists import add_side_lists
from .stack_list import add_stack_lists, remove_stack_lists, usable

log = logging.getLogger("otcache")


# ----------------------------------------------------------------------------------------- patching

def patch_model(model: Any, schedule_source: Schedule | BudgetRequest | None = None,
                options: PatchOptions | Mapping[str, Any] | None = None) -> Any:
    """A clone of ``model`` (a ComfyUI ModelPatcher) that samples with OTCache; ``model`` is untouched."""
    return install(model, schedule_source, options)[0]


def install(model: Any, schedule_source: Schedule | BudgetRequest | None = None,
            options: PatchOptions | Mapping[str, Any] | None = None) -> tuple[Any, OTCacheConfig, Resolution]:
    """The patched clone, the config installed on it and what the resolver decided.

    ``schedule_source``: one Schedule (used as is, with the options' reuse operator), a BudgetRequest
    (reference / anchor / budget / reuse choice: OTCache Apply's inputs), or None (the built-in default at
    2x). A model that already carries OTCache gets the new settings instead of the old ones.
    """
    opts = options if isinstance(options, PatchOptions) else PatchOptions(**dict(options or {}))
    request = _as_request(schedule_source, opts)
    m = model.clone()
    spec = usable(detect_family(m.get_model_object("diffusion_model")), m)
    check_compile(model.model_options, getattr(model, "wrappers", {}), spec)
    res = resolve(request, spec)
    op = res.operator
    reuse = make_reuse(op.reuse, op.gamma, space=op.space or None, order=op.order or None)
    if not spec.block_caching and reuse.space != "output":
        reuse = with_space(reuse, "output")
    blocks = spec.blocks if reuse.space == "residual" else ()
    _remove_previous(m)
    cfg = OTCacheConfig(request if request.per_run else res.schedule, res.description, spec, reuse, opts,
                        0 if spec.list_hook else len(blocks))
    cfg.base_dit = dict(m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {}))
    if not spec.whole_output_at_apply or reuse.space == "output":   # a run can take the free default instead
        cfg.free_reuse = make_reuse(DEFAULT.reuse, DEFAULT.gamma, space=DEFAULT.space)
    to = dict(m.model_options.get("transformer_options", {}))
    to[CONFIG_KEY] = cfg
    m.model_options["transformer_options"] = to
    _add_wrappers(m, apply_model=reuse.space == "output" and spec.whole_output_at_apply)
    if blocks and spec.list_hook:
        add_stack_lists(m, cfg.token, spec)
    else:
        _add_block_patches(m, cfg, spec, blocks)
    if blocks and spec.trim_modulation:
        add_trim(m)
    if blocks and (spec.side_input or spec.side_added):
        add_side_lists(m, cfg.token, spec)
    _announce(cfg, res.schedule)
    return m, cfg, res


def cached_model(model: Any, schedule: Schedule, reuse: str = "residual", **options: Any) -> Any:
    """Shorthand for other nodes (calibration, anchor search): ``model`` sampling with ``schedule`` as is;
    ``options`` are :class:`PatchOptions` fields (``gamma``, taylor's ``order``, ...)."""
    return patch_model(model, schedule, PatchOptions(reuse=reuse, **options))


def _as_request(source: Schedule | BudgetRequest | None, opts: PatchOptions) -> BudgetRequest:
    if isinstance(source, BudgetRequest):
        return source
    if source is None or isinstance(source, Schedule):
        return BudgetRequest(reference=source, reuse=opts.reuse, gamma=opts.gamma, order=opts.order,
                             space=opts.space)
    raise OTCacheError(f"schedule source must be a Schedule or BudgetRequest, got {type(source).__name__}")


def remove_otcache(m: Any) -> None:
    """Take OTCache off ``m`` in place (call it on a clone): wrappers, block patches, block-list stand-ins and
    config go, whatever our patches wrapped stays. For nodes that must sample a connected model uncached."""
    _remove_previous(m, quiet=True)


def _remove_previous(m: Any, quiet: bool = False) -> None:
    """Take off an earlier OTCache Apply's wrappers and block patches, keeping what they wrapped."""
    import comfy.patcher_extension as pe

    remove_stack_lists(m)
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


def _add_wrappers(m: Any, apply_model: bool) -> None:
    import comfy.patcher_extension as pe

    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
    m.add_wrapper_with_key(pe.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, calc_cond_batch_wrapper)
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, diffusion_model_wrapper)
    if apply_model:
        m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, WRAPPER_KEY, apply_model_wrapper)


def _add_block_patches(m: Any, cfg: OTCacheConfig, spec: FamilySpec, blocks: tuple) -> None:
    existing = m.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    last = len(blocks) - 1
    joint = next((j for j in range(1, len(blocks)) if blocks[j - 1][0] == "double_block"
                  and blocks[j][0] == "single_block"), None)
    dm, attr_of = m.get_model_object("diffusion_model"), spec.attr_of
    for j, (kind, i) in enumerate(blocks):
        original = (own_block(getattr(dm, attr_of[kind])[i], spec.block_args, spec.stream_key)
                    if spec.block_args else None)
        patch = make_block_patch(cfg.token, existing.get((kind, i)), first=j == 0, last=j == last,
                                 boundary=joint is not None and j == joint - 1,
                                 joint_first=joint is not None and j == joint, original=original)
        m.set_model_patch_replace(patch, "dit", kind, i)


def _announce(cfg: OTCacheConfig, s: Schedule) -> None:
    when = "per run" if cfg.schedule is None else f"{s.budget}/{s.num_steps} steps, {s.speedup:.2f}x"
    log.info(f"{cfg.label} Apply: {cfg.family.describe()}; reuse {cfg.reuse.describe()}; "
             f"schedule {cfg.description} ({when})")


__all__ = ["patch_model", "install", "cached_model", "remove_otcache", "PatchOptions", "BudgetRequest",
           "OTCacheConfig", "patched_config", "CONFIG_KEY", "RUN_KEY", "REUSE_NAMES",
           "CACHE_DEVICES"]
