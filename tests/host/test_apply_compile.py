"""OTCache Apply with ComfyUI's TorchCompileModel (inductor, CPU), placed before or after it.

The run compiles the block modules with TorchCompileModel's settings instead of the whole diffusion model, so
the per-step decision stays in Python: the output equals the uncompiled cached run (float32, inductor's fused
kernels reorder sums: |out - ref| <= 1e-5 + 1e-5 |ref|; measured 3e-7 relative), the stack runs K times,
dynamo compiles each block class once or twice during the first computed step (never per step) and a second run compiles nothing.
Compilation is slow on two cores: three tiny families (Lumina 2: the blocks TorchCompileModel sets by name
land in the stand-in for its block list), one test each order. A model on the whole-model
fallback has no block stack to compile apart from the decision: refused with one sentence.
"""
from __future__ import annotations

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import torch._dynamo  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from comfy_extras.nodes_torch_compile import TorchCompileModel  # noqa: E402

import comfy.patcher_extension as pe  # noqa: E402
import tiny_models as tm  # noqa: E402
from apply_helpers import bundle, patched, probed_run, run, unregistered  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402
from otcache_pack.otcache_engine.errors import OTCacheError  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))
ATOL = RTOL = 1e-5


def torch_compile_model(model):
    """ComfyUI's TorchCompileModel node, as a workflow runs it."""
    return TorchCompileModel.execute(model=model, backend="inductor").result[0]


def compiled_frames() -> int:
    """Frames dynamo has compiled since the last reset: a recompilation adds one."""
    return counters["frames"]["total"]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("family,order", [("flux", "before"), ("flux", "after"), ("wan21", "before"),
                                          ("lumina2", "before")])   # lumina2: compiled blocks in its list's stand-in
def test_compiled_blocks_give_the_cached_output_k_block_runs_and_no_recompilation(family, order, batched_cfg):
    b = bundle(family)
    ref, ref_probe = probed_run(patched(b.patcher, SCHED), b, N)
    if order == "before":
        model = patched(torch_compile_model(b.patcher), SCHED)
    else:
        model = torch_compile_model(patched(b.patcher, SCHED))
    whole = model.wrappers[pe.WrappersMP.APPLY_MODEL]["torch.compile"]
    out, probe = probed_run(model, b, N)
    assert torch.allclose(out, ref, atol=ATOL, rtol=RTOL)
    assert probe.block_runs == ref_probe.block_runs == SCHED.budget
    classes = {type(block) for _, _, block in tm.stack_blocks(b.diffusion_model)}
    # compiled during the first computed step, once per block class (a first block that gets its input in
    # another memory layout, as Wan's after its patch embedding on v0.33, once more): never per block or step
    assert len(classes) <= compiled_frames() <= 2 * len(classes)
    warm = compiled_frames()
    again, probe = probed_run(model, b, N + 2)          # another step count: other decisions per step
    assert compiled_frames() == warm                    # nothing compiled again, at no step
    assert probe.block_runs < N + 2 and torch.isfinite(again).all()
    assert model.wrappers[pe.WrappersMP.APPLY_MODEL]["torch.compile"] == whole   # the model is not changed
    compiled = torch._dynamo.eval_frame.OptimizedModule
    assert not any(isinstance(block, compiled) for _, _, block in tm.stack_blocks(b.diffusion_model))  # put back


def test_whole_model_fallback_with_torch_compile_is_refused_with_a_clear_message(batched_cfg, monkeypatch):
    b = bundle("lumina2")
    unregistered(monkeypatch, b)     # a diffusion transformer without a registry entry
    with pytest.raises(OTCacheError, match="TorchCompileModel only with a block-cached model"):
        patched(torch_compile_model(b.patcher), SCHED)
    late = torch_compile_model(patched(b.patcher, SCHED))
    with pytest.raises(OTCacheError, match="TorchCompileModel only with a block-cached model"):
        run(late, b, N)
    assert compiled_frames() == 0
