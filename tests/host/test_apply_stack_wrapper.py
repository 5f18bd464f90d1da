"""Block caching for the forwards that iterate their block lists themselves: NextDiT (Lumina 2, Z-Image) and HiDream.

OTCache reaches their blocks through a stand-in for each block list, an object patch on the clone
(``nodes/runtime/stack_list.py``). Checked on tiny models of ComfyUI's own classes: the path is announced as
block caching, a full budget is the uncached run, the stack runs K times (2K with split CFG) at batch 1 and 3,
a smaller budget changes the output, and nothing of the stand-in stays on the shared diffusion model once
OTCache comes off (remove_otcache, a re-Apply, another clone loading, the model unloading): the original
ModuleList is back (identity) and a plain run is bit-identical to one before OTCache. A family this host's
ComfyUI lacks (Z-Image before 0.33) skips with the reason.
"""
from __future__ import annotations

import logging

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import comfy.model_management  # noqa: E402
import comfy.patcher_extension as pe  # noqa: E402

from apply_helpers import bundle, patched, probed_run, run  # noqa: E402
from otcache_pack.nodes.runtime.families import detect_family  # noqa: E402
from otcache_pack.nodes.runtime.patcher import patched_config, remove_otcache  # noqa: E402
from otcache_pack.nodes.runtime.stack_list import _HOOK, StackList  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))          # K = 4 of 6
K = SCHED.budget
FAMILIES = ("lumina2", "z_image", "hidream")
LISTS = {"lumina2": ("layers",), "z_image": ("layers",), "hidream": ("double_stream_blocks", "single_stream_blocks")}


def lists_of(b) -> dict[str, torch.nn.ModuleList]:
    """The model's own block lists, as its patcher knows them (ComfyUI's backup while a clone's object patch is
    set: an OTCache clone sampled by an earlier test may still be the loaded patcher of this shared model)."""
    return {attr: b.patcher.get_model_object(f"diffusion_model.{attr}") for attr in LISTS[b.family]}


def stand_ins(m) -> dict[str, StackList]:
    return {k: v for k, v in m.object_patches.items() if isinstance(v, StackList)}


def seen_lists(m, attrs):
    """A clone of ``m`` that records the type of each block list the forward finds, per diffusion-model call."""
    seen: list[tuple[type, ...]] = []

    def wrapper(executor, *args, **kwargs):
        seen.append(tuple(type(getattr(executor.class_obj, a)) for a in attrs))
        return executor(*args, **kwargs)

    c = m.clone()
    c.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "otcache_test_seen", wrapper)
    return c, seen


@pytest.mark.parametrize("family", FAMILIES)
def test_announced_as_block_caching_with_a_stand_in_per_list(family, caplog):
    b = bundle(family)
    dm = b.diffusion_model
    spec = detect_family(dm)
    assert spec.block_caching and spec.list_hook and spec.name in ("nextdit", "hidream")
    with caplog.at_level(logging.INFO, logger="otcache"):
        m = patched(b.patcher, SCHED)
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{spec.name} ({type(dm).__name__}, {len(spec.blocks)} blocks, block-residual cache)" in said
    assert "whole-model output reuse" not in said
    assert patched_config(m).reuse.space == "residual"
    assert not m.model_options["transformer_options"].get("patches_replace", {}).get("dit")
    originals = lists_of(b)
    made = stand_ins(m)
    assert set(made) == {f"diffusion_model.{a}" for a in originals}
    for attr, lst in originals.items():
        s = made[f"diffusion_model.{attr}"]
        assert list(s._modules.items()) == list(lst._modules.items())     # the same blocks, the same names
        assert list(s) == list(lst)                                        # outside a cached call: the list
    assert not stand_ins(b.patcher)                                        # the user's model has none


@pytest.mark.parametrize("family", FAMILIES)
def test_full_budget_reproduces_the_unpatched_output(family, batched_cfg):
    b = bundle(family)
    ref = run(b.patcher, b, N)
    forced = run(patched(b.patcher, Schedule.full(N), always_on=True), b, N)   # every step computes and stores
    assert float((forced - ref).abs().max()) <= 1e-5
    assert float((run(patched(b.patcher, Schedule.full(N)), b, N) - ref).abs().max()) <= 1e-5


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_block_stack_runs_k_times_batched_cfg(family, batch, batched_cfg):
    b = bundle(family)
    out, probe = probed_run(patched(b.patcher, SCHED), b, N, batch=batch)
    assert probe.n_calls == N and all(c.batch == 2 * batch for c in probe.calls)
    assert probe.block_runs == K
    assert torch.isfinite(out).all() and not torch.equal(out, run(b.patcher, b, N, batch=batch))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_block_stack_runs_k_times_split_cfg(family, batch, split_cfg):
    b = bundle(family)
    out, probe = probed_run(patched(b.patcher, SCHED), b, N, batch=batch)
    assert probe.evaluations == N and all(c.batch == batch for c in probe.calls)
    assert probe.block_runs == 2 * K                     # cond and uncond: one call each per computed step
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_nothing_stays_on_the_shared_model_once_otcache_comes_off(family, batched_cfg):
    b = bundle(family)
    originals = lists_of(b)
    ref = run(b.patcher, b, N)
    pm = patched(b.patcher, SCHED)
    probe_clone, seen = seen_lists(pm, tuple(originals))
    run(probe_clone, b, N)
    assert seen and all(t == (StackList,) * len(originals) for t in seen)   # the stand-ins ran the stack
    off = pm.clone()
    remove_otcache(off)
    assert not stand_ins(off) and patched_config(off) is None
    assert torch.equal(run(off, b, N), ref)
    assert all(getattr(b.diffusion_model, a) is lst for a, lst in originals.items())
    run(pm, b, N)                                                            # OTCache loaded again ...
    assert torch.equal(run(b.patcher.clone(), b, N), ref)                  # ... then a fresh clone of the original
    assert all(getattr(b.diffusion_model, a) is lst for a, lst in originals.items())
    run(pm, b, N)
    comfy.model_management.unload_all_models()                               # ComfyUI unpatching the clone
    assert all(getattr(b.diffusion_model, a) is lst for a, lst in originals.items())
    again = patched(pm, Schedule(N, (0, 2, 5)))                              # a re-Apply wraps the original
    assert all(s.__dict__[_HOOK].inner is originals[k.split(".")[-1]] for k, s in stand_ins(again).items())
    assert torch.equal(run(b.patcher, b, N), ref)


def test_another_nodes_list_is_wrapped_and_given_back(batched_cfg, caplog):
    """A list another node put on the clone (here: the last layer pruned) is what the stand-in runs and what
    remove_otcache gives back; a list of another kind (its own iteration) sends the model to the fallback."""
    b = bundle("lumina2")
    layers = b.diffusion_model.layers
    pruned = b.patcher.clone()
    shorter = torch.nn.ModuleList(list(layers)[:-1])
    pruned.add_object_patch("diffusion_model.layers", shorter)
    m = patched(pruned, SCHED)
    assert list(m.object_patches["diffusion_model.layers"]) == list(shorter)
    assert torch.equal(run(patched(pruned, Schedule.full(N), always_on=True), b, N), run(pruned, b, N))
    remove_otcache(m)
    assert m.object_patches["diffusion_model.layers"] is shorter

    class OwnList(torch.nn.ModuleList):
        pass

    foreign = b.patcher.clone()
    foreign.add_object_patch("diffusion_model.layers", OwnList(list(layers)))
    with caplog.at_level(logging.INFO, logger="otcache"):
        fb = patched(foreign, SCHED)
    assert not patched_config(fb).family.block_caching and not stand_ins(fb)
    assert "another node replaced its block list 'layers'" in "\n".join(r.getMessage() for r in caplog.records)


def test_block_replacements_of_other_nodes_do_not_stop_the_cache(batched_cfg):
    """NextDiT's forward never reads ``patches_replace``: another node's block replacement changes nothing
    there, so it is no reason to run uncached (on a hooked family it would be)."""
    b = bundle("lumina2")
    late = patched(b.patcher, SCHED).clone()
    late.set_model_patch_replace(lambda args, extra: extra["original_block"](args), "dit", "double_block", 0)
    _, probe = probed_run(late, b, N)
    assert probe.block_runs == K
