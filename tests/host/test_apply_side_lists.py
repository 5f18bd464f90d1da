"""Block lists beside the stack that a reused step does not need: Kandinsky 5's text blocks, Wan VACE's hints.

On a reused step their work is never read (the text only feeds the skipped blocks; a hint added between blocks
is replaced when the stack's output is rebuilt from its input), so they run only on computed steps: K times
with batched CFG, 2K split. The output is bit-identical to the same model with that work kept (the registry
entry without it), and a reused step that finds no cache and computes after all runs the skipped text blocks
first (a run that never finds a cache is the uncached model, exactly). A VACE model that adds a hint after
the stack's last block (the harness's dense one) keeps its hints on every step. Kandinsky 5 needs ComfyUI 0.33.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

from apply_helpers import bundle, patched, run  # noqa: E402
from otcache_pack.nodes.runtime import families  # noqa: E402
from otcache_pack.nodes.runtime.patcher import remove_otcache  # noqa: E402
from otcache_pack.nodes.runtime.side_lists import AddedList, InputList  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402
from otcache_pack.otcache_engine.runtime import CacheSession  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))          # K = 4 of 6
K = SCHED.budget
# (tiny family, the list beside the stack, its stand-in, whether a reused step skips it)
CASES = [("kandinsky5", "text_transformer_blocks", InputList, True),
         ("wan21_vace_sparse", "vace_blocks", AddedList, True),
         ("wan21_vace", "vace_blocks", AddedList, False)]


def counted(b, attr: str, model, **kw) -> tuple[torch.Tensor, int]:
    """A run of ``model`` and how often the first block of the list ``attr`` ran in it."""
    block = b.patcher.get_model_object(f"diffusion_model.{attr}")[0]
    runs = []
    handle = block.register_forward_hook(lambda *_: runs.append(1))
    try:
        return run(model, b, N, **kw), len(runs)
    finally:
        handle.remove()


def without_side_work(monkeypatch, b) -> None:
    """For one test, the family's registry entry keeps the work beside the stack on every step."""
    key = (type(b.diffusion_model).__module__, type(b.diffusion_model).__name__)
    entry = families._BY_CLASS[key]
    monkeypatch.setitem(families._BY_CLASS, key, dataclasses.replace(entry, side_input=(), side_added=()))


@pytest.mark.parametrize("family,attr,kind,skips", CASES)
def test_side_work_runs_on_computed_steps_only_and_changes_nothing(family, attr, kind, skips, batched_cfg,
                                                                    monkeypatch):
    b = bundle(family)
    m = patched(b.patcher, SCHED)
    assert isinstance(m.object_patches.get(f"diffusion_model.{attr}"), kind) == skips
    out, runs = counted(b, attr, m)
    assert runs == (K if skips else N)
    without_side_work(monkeypatch, b)
    kept, kept_runs = counted(b, attr, patched(b.patcher, SCHED))
    assert kept_runs == N and torch.equal(out, kept)
    remove_otcache(m)
    assert f"diffusion_model.{attr}" not in m.object_patches


@pytest.mark.parametrize("family,attr,kind,skips", CASES[:2])
def test_split_cfg_runs_the_side_work_once_per_stream_and_computed_step(family, attr, kind, skips, split_cfg):
    b = bundle(family)
    _, runs = counted(b, attr, patched(b.patcher, SCHED))
    assert runs == 2 * K


@pytest.mark.parametrize("family,attr,kind,skips", CASES[:2])
def test_a_reused_step_without_a_cache_computes_the_full_model(family, attr, kind, skips, batched_cfg, monkeypatch):
    """No cache ever fits: every planned reuse computes after all (text blocks run late, before the stack)."""
    b = bundle(family)
    ref = run(b.patcher, b, N)
    monkeypatch.setattr(CacheSession, "predict_batch", lambda *a, **k: None)
    out, runs = counted(b, attr, patched(b.patcher, SCHED))
    assert runs == N and torch.equal(out, ref)
