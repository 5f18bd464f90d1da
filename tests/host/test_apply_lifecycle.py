"""State: the user's model is never changed, each run starts clean and leaves nothing behind.

- the original ModelPatcher (options, wrappers, weight patches, callbacks) and the shared diffusion model are
  unchanged by patching and by sampling;
- an interrupted run (InterruptProcessingException from a sampler callback) does not leak into the next;
- no cached tensor, session or run state is reachable after a run;
- two OTCache Apply nodes on one model do not interfere, and a second Apply on an OTCache model replaces it.
"""
from __future__ import annotations

import gc
import weakref

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import comfy.model_management  # noqa: E402

from apply_helpers import bundle, patched, probed_run, run, sample_with_callback  # noqa: E402
from otcache_pack.nodes.runtime import block_patch, patcher as P  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402
from otcache_pack.otcache_engine.runtime import CacheSession  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))
OTHER = Schedule(N, (0, 2, 5))


def structure(obj):
    """Deep shape of nested options: dicts and lists by content, leaves by identity."""
    if isinstance(obj, dict):
        return {repr(k): structure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [structure(v) for v in obj]
    return (type(obj).__name__, id(obj))


def snapshot(p) -> dict:
    dm = p.get_model_object("diffusion_model")
    return {
        "model_options": structure(p.model_options),
        "wrappers": {k: {kk: [id(f) for f in v] for kk, v in d.items()} for k, d in p.wrappers.items()},
        "callbacks": {k: {kk: [id(f) for f in v] for kk, v in d.items()} for k, d in p.callbacks.items()},
        "patches": {k: len(v) for k, v in p.patches.items()},
        "object_patches": {k: id(v) for k, v in p.object_patches.items()},
        "patches_uuid": p.patches_uuid,
        "model_attrs": sorted(vars(p.model)),
        "dm_attrs": sorted(vars(dm)),
        "dm_modules": sorted(dm._modules),
    }


@pytest.mark.parametrize("family", ["flux", "wan21", "lumina2"])
def test_original_model_is_unchanged_by_patching_and_sampling(family, batched_cfg):
    b = bundle(family)
    base = b.patcher.clone()                  # a "user" model with its own options
    base.model_options["transformer_options"]["user_marker"] = {"keep": [1, 2]}
    before = snapshot(base)
    pm = patched(base, SCHED)
    assert snapshot(base) == before
    assert P.patched_config(base) is None and P.patched_config(pm) is not None
    run(pm, b, N)
    run(base, b, N)
    assert snapshot(base) == before
    assert P.RUN_KEY not in pm.model_options["transformer_options"]


@pytest.mark.parametrize("family", ["flux", "hunyuan_video", "wan21", "lumina2"])
def test_interrupted_run_does_not_leak_into_the_next(family, batched_cfg):
    b = bundle(family)
    pm = patched(b.patcher, SCHED)
    clean = run(patched(b.patcher, SCHED), b, N)

    def interrupt(step, x0, x, total):
        if step == 2:
            raise comfy.model_management.InterruptProcessingException()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        sample_with_callback(pm, b, N, interrupt)
    assert torch.equal(run(pm, b, N), clean)
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is CacheSession and not o.closed]


@pytest.mark.parametrize("family", ["flux", "qwen_image", "wan21", "lumina2"])
@pytest.mark.parametrize("reuse", ["residual", "omnicache"])
def test_no_cache_tensor_is_reachable_after_a_run(family, reuse, batched_cfg, monkeypatch):
    b = bundle(family)
    kept: list[weakref.ref] = []
    sessions: list[weakref.ref] = []
    original_keep, original_init = CacheSession._keep, CacheSession.__init__

    def keep(self, value):
        out = original_keep(self, value)
        kept.append(weakref.ref(out))
        return out

    def init(self, *a, **kw):
        original_init(self, *a, **kw)
        sessions.append(weakref.ref(self))

    monkeypatch.setattr(CacheSession, "_keep", keep)
    monkeypatch.setattr(CacheSession, "__init__", init)
    pm = patched(b.patcher, SCHED, reuse=reuse)
    run(pm, b, N)
    gc.collect()
    assert kept and sessions
    assert all(r() is None for r in kept), "a cached tensor outlived its run"
    assert all(r() is None for r in sessions), "a session outlived its run"


@pytest.mark.parametrize("family", ["flux", "wan21", "lumina2"])
def test_two_apply_nodes_on_one_model_do_not_interfere(family, batched_cfg):
    b = bundle(family)
    m1, m2 = patched(b.patcher, SCHED), patched(b.patcher, OTHER)
    out1, p1 = probed_run(m1, b, N)
    out2, p2 = probed_run(m2, b, N)
    again1, q1 = probed_run(m1, b, N)
    assert p1.block_runs == q1.block_runs == SCHED.budget and p2.block_runs == OTHER.budget
    assert torch.equal(out1, again1) and not torch.equal(out1, out2)
    assert torch.equal(out2, run(patched(b.patcher, OTHER), b, N))
    # Apply on an OTCache model: the new settings replace the old ones, the first model keeps its own
    chained = patched(m1, OTHER)
    out_c, pc = probed_run(chained, b, N)
    assert pc.block_runs == OTHER.budget and torch.equal(out_c, out2)
    assert torch.equal(run(m1, b, N), out1)
    dit = chained.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    assert all(block_patch.unwrap(f) is None for f in dit.values())   # no OTCache patch wraps another OTCache patch
