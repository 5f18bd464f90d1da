"""The whole-model fallback for models without block hooks, announced, and its APPLY_MODEL route."""
from __future__ import annotations

import logging

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import comfy.patcher_extension as pe  # noqa: E402

from apply_helpers import bundle, patched, probed_run, run  # noqa: E402
from otcache_pack.nodes.families import detect_family  # noqa: E402
from otcache_pack.nodes.patcher import WRAPPER_KEY, patched_config  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))


def test_unhookable_model_gets_whole_model_reuse_announced(caplog):
    b = bundle("lumina2")
    with caplog.at_level(logging.INFO, logger="otcache"):
        m = patched(b.patcher, SCHED)
    cfg = patched_config(m)
    assert not cfg.family.block_caching and cfg.reuse.space == "output"
    assert any("whole-model output reuse" in r.getMessage() for r in caplog.records)
    assert "dit" not in m.model_options["transformer_options"].get("patches_replace", {})


def test_family_detection_by_class():
    names = {f: detect_family(bundle(f).diffusion_model).name for f in ("flux", "chroma", "qwen_image",
                                                                         "hunyuan_video", "wan21", "ltxv")}
    assert names == {"flux": "flux", "chroma": "chroma", "qwen_image": "qwen_image",
                     "hunyuan_video": "hunyuan_video", "wan21": "wan", "ltxv": "ltxv"}
    spec = detect_family(bundle("flux").diffusion_model)
    assert spec.blocks[0] == ("double_block", 0) and spec.blocks[-1][0] == "single_block" and spec.last_is_single


@pytest.mark.parametrize("family", ["lumina2", "flux"])
def test_apply_model_route_matches_the_diffusion_model_route(family, batched_cfg):
    """A model whose forward runs no DIFFUSION_MODEL wrapper is cached at APPLY_MODEL, in x - sigma*eps
    space: for flow and eps models that is exactly output reuse, so both routes give the same result."""
    b = bundle(family)
    direct = run(patched(b.patcher, SCHED, reuse="output"), b, N)
    m = patched(b.patcher, SCHED, reuse="output")
    if family != "lumina2":   # block families get APPLY_MODEL only when they fall back; add it as the fallback does
        from otcache_pack.nodes.patcher import apply_model_wrapper
        m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, WRAPPER_KEY, apply_model_wrapper)
    m.remove_wrappers_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)   # as if the forward had no hook
    out, probe = probed_run(m, b, N)
    assert probe.n_calls == probe.block_runs == SCHED.budget
    assert torch.allclose(out, direct, atol=1e-4, rtol=1e-4)
