"""torch.compile next to OTCache: the blocks are compiled, the per-step decision stays in eager Python.

ComfyUI's TorchCompileModel (``comfy_api.torch_helpers.set_torch_compile_wrapper``) compiles the whole
diffusion model and swaps it in for every ``apply_model`` call through an APPLY_MODEL wrapper keyed
"torch.compile", keeping its settings in ``model_options["torch_compile_kwargs"]``. Compiled whole, the
model's forward would take OTCache's DIFFUSION_MODEL wrapper and block replacements into the graph, where
dynamo either guards on the per-step decision (a recompilation per decision) or, with ComfyUI's guard filter
on ``transformer_options``, freezes it. So a run of an OTCache model that carries that wrapper, whether
TorchCompileModel came before or after OTCache Apply, puts in its place, in the run's own copy of the
options, the same helper's wrapper over the *block modules* of the stack, compiled with the same settings.
The block replacements, our wrappers and the decision run in Python; each computed block runs compiled code.

The compiled blocks are made once per TorchCompileModel output (keyed weakly by its wrapper function) and
reused by every later run, so a second run compiles nothing. Families on the whole-model fallback have no
block stack to compile apart from the decision: they are refused with one sentence, as before.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Mapping

from ...otcache_engine.errors import OTCacheError
from .families import FamilySpec

COMPILE_KEY = "torch.compile"          # the key of TorchCompileModel's APPLY_MODEL wrapper
KWARGS_KEY = "torch_compile_kwargs"     # where it keeps its settings in model_options

# TorchCompileModel's wrapper function -> (its diffusion model, our wrapper over that model's compiled blocks)
_BLOCKWISE: "weakref.WeakKeyDictionary[Callable, tuple[weakref.ref, Callable]]" = weakref.WeakKeyDictionary()


def check_compile(model_options: Mapping[str, Any], wrappers: Mapping[str, Any] | None, spec: FamilySpec) -> None:
    """A compiled model is cached with its blocks compiled; without a block stack that cannot be done."""
    if spec.block_caching:
        return
    import comfy.patcher_extension as pe

    in_options = model_options.get("transformer_options", {}).get("wrappers", {})
    compiled = model_options.get(KWARGS_KEY) is not None or any(
        where.get(pe.WrappersMP.APPLY_MODEL, {}).get(COMPILE_KEY) for where in (wrappers or {}, in_options))
    if compiled:
        raise _refusal(spec)


def _refusal(spec: FamilySpec) -> OTCacheError:
    return OTCacheError(f"OTCache Apply can combine TorchCompileModel only with a block-cached model: "
                        f"{spec.class_name} uses whole-model output reuse ({spec.reason}), and a model "
                        "compiled whole would freeze the per-step decision; remove TorchCompileModel or "
                        "OTCache Apply")


def block_keys(spec: FamilySpec) -> list[str]:
    """``get_model_object`` keys of the blocks the stack runs, e.g. ``diffusion_model.double_blocks.0``."""
    return [f"diffusion_model.{spec.attr_of[kind]}.{i}" for kind, i in spec.blocks]


def compile_blocks_for_run(run_options: dict, patcher: Any, spec: FamilySpec) -> bool:
    """Swap TorchCompileModel's whole-model wrapper for one over the compiled blocks, in ``run_options``
    (the run's own copy of the guider's options, never the model's). True when a swap was made."""
    import comfy.patcher_extension as pe

    by_key = run_options.get("transformer_options", {}).get("wrappers", {}).get(pe.WrappersMP.APPLY_MODEL, {})
    whole = by_key.get(COMPILE_KEY)
    if not whole:
        return False
    if not spec.block_caching:
        raise _refusal(spec)
    by_key[COMPILE_KEY] = [_blockwise(w, patcher, spec, run_options.get(KWARGS_KEY)) for w in whole]
    return True


def _blockwise(whole: Callable, patcher: Any, spec: FamilySpec, kwargs: Mapping[str, Any] | None) -> Callable:
    """Our wrapper for one TorchCompileModel wrapper: made on the first run, the same one after that."""
    dm = patcher.get_model_object("diffusion_model")
    known = _BLOCKWISE.get(whole)
    if known is not None and known[0]() is dm:
        return known[1]
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    import comfy.patcher_extension as pe

    scratch = patcher.clone()   # ComfyUI's own helper compiles the blocks; it writes only on this clone
    settings = dict(kwargs) if kwargs else {"backend": "inductor"}
    set_torch_compile_wrapper(model=scratch, keys=block_keys(spec), **settings)
    made = scratch.wrappers[pe.WrappersMP.APPLY_MODEL][COMPILE_KEY][0]
    _BLOCKWISE[whole] = (weakref.ref(dm), made)
    return made
