"""Chroma's modulation network on reused steps: only the output layer's rows run, the result does not change.

A reused step computes 2 of the 344 rows; a step that was to reuse but finds no cache (the second sampler
of a split run starts with none) computes the other rows before the first block reads them. Either way the
output equals that of the same schedule with the whole network run, and the shared model keeps no trace.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import node_helpers  # noqa: E402

from apply_helpers import bundle, patched, rel_err, run  # noqa: E402
from otcache_pack.nodes.runtime import modulation_trim, patcher as P  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))          # steps 2 and 4 reuse
ROWS = 344


@contextlib.contextmanager
def rows_seen(b) -> Iterator[list[int]]:
    """Rows per sample entering the shared modulation network, call by call."""
    seen: list[int] = []
    layer = b.diffusion_model.distilled_guidance_layer
    handle = layer.in_proj.register_forward_pre_hook(lambda mod, args: seen.append(int(args[0].shape[1])))
    try:
        yield seen
    finally:
        handle.remove()


def untrimmed(model, schedule, monkeypatch):
    with monkeypatch.context() as mp:
        mp.setattr(P, "add_trim", lambda m, *rest: False)
        return patched(model, schedule)


def no_override_left(b) -> bool:
    return "forward" not in vars(b.diffusion_model.distilled_guidance_layer)


@pytest.mark.parametrize("batch", [1, 3])
def test_reused_steps_run_two_rows_and_give_the_same_output(batch, batched_cfg, monkeypatch):
    b = bundle("chroma")
    full = run(untrimmed(b.patcher, SCHED, monkeypatch), b, N, batch=batch)
    with rows_seen(b) as seen:
        out = run(patched(b.patcher, SCHED), b, N, batch=batch)
    reused = N - SCHED.budget
    assert sorted(seen) == sorted([ROWS] * SCHED.budget + [modulation_trim.FINAL_ROWS] * reused)
    assert rel_err(out, full) < 1e-6, rel_err(out, full)
    run(b.patcher, b, N, batch=batch)           # another clone of the model loads: ours is ejected
    assert no_override_left(b)


def test_split_cfg_trims_each_call(split_cfg):
    b = bundle("chroma")
    with rows_seen(b) as seen:
        run(patched(b.patcher, SCHED), b, N)
    assert seen.count(modulation_trim.FINAL_ROWS) == 2 * (N - SCHED.budget)


def test_a_forced_compute_fills_the_skipped_rows_first(batched_cfg, monkeypatch):
    """A second prompt that starts half-way (ConditioningSetTimestepRange) joins the batch on a reuse step
    with no cache of its own, so that step computes after all, modulations included."""
    b = bundle("chroma")
    sched = Schedule(N, (0, 1, 2, 5))
    late = b.positive + node_helpers.conditioning_set_values(b.positive, {"start_percent": 0.5, "end_percent": 1.0})
    full = run(untrimmed(b.patcher, sched, monkeypatch), b, N, positive=late)
    with rows_seen(b) as seen:
        out = run(patched(b.patcher, sched), b, N, positive=late)
    assert ROWS - modulation_trim.FINAL_ROWS in seen, seen          # the fill ran
    assert rel_err(out, full) < 1e-6, rel_err(out, full)


def test_other_callers_of_the_network_get_all_rows(batched_cfg):
    b = bundle("chroma")
    pm = patched(b.patcher, SCHED)
    run(pm, b, N)                                # pm is now the loaded clone, its injection in place
    layer = b.diffusion_model.distilled_guidance_layer
    x = torch.randn(1, ROWS, layer.in_proj.in_features)
    assert not no_override_left(b)
    assert torch.equal(layer(x), type(layer).forward(layer, x))
    run(b.patcher, b, N)
    assert no_override_left(b)


def test_reapply_and_remove_take_the_injection_off(batched_cfg):
    b = bundle("chroma")
    pm = patched(b.patcher, SCHED)
    assert pm.get_injections(modulation_trim.INJECTION_KEY)
    assert b.patcher.get_injections(modulation_trim.INJECTION_KEY) is None
    off = pm.clone()
    P.remove_otcache(off)
    assert off.get_injections(modulation_trim.INJECTION_KEY) is None
    other = patched(bundle("flux").patcher, SCHED)
    assert other.get_injections(modulation_trim.INJECTION_KEY) is None
