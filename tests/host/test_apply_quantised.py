"""OTCache Apply on quantised weights, loaded the way users load them: fp8 through ComfyUI's UNETLoader
(``weight_dtype`` fp8_e4m3fn; on CPU ComfyUI computes with manual casts to float32) and GGUF Q8_0 through the
real ComfyUI-GGUF pack's Unet Loader (skipped with the reason when that pack is not installed; set
``COMFYUI_GGUF_PATH`` to its folder). LoRA-style weight patches: test_apply_compose.

Each on the tiny Wan file that ComfyUI's own detection loads: at full budget the cached run equals the same
quantised model unpatched (|diff| <= 1e-6), the block stack runs K times, and the cached run is as close to
the uncached one as on the full-precision model (relative error at most 1.5 times it; measured 4.7e-5 for
fp8 and 4.8e-5 for GGUF against 4.8e-5 at full precision, on both hosts).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from comfy_host import find_comfyui, require_comfy

COMFY_VERSION = require_comfy()

import folder_paths  # noqa: E402
import nodes as comfy_nodes  # noqa: E402  (ComfyUI's nodes.py; the path is set by require_comfy)
from safetensors.torch import save_file  # noqa: E402

import tiny_gguf  # noqa: E402
import tiny_models as tm  # noqa: E402
from apply_helpers import patched, probed_run, rel_err, run  # noqa: E402
from make_tiny_checkpoint import tiny_wan_state  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N = 6
SCHED = Schedule(N, (0, 1, 3, 5))
FULL = Schedule.full(N)
FILE = "otcache_tiny_wan"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A diffusion_models folder holding the tiny Wan file, known to ComfyUI for this module only."""
    folder = tmp_path_factory.mktemp("diffusion_models")
    save_file(tiny_wan_state(0), str(folder / f"{FILE}.safetensors"))
    paths = folder_paths.folder_names_and_paths["diffusion_models"][0]
    paths.append(str(folder))
    yield folder
    paths.remove(str(folder))


def as_bundle(patcher) -> tm.FamilyBundle:
    return tm.FamilyBundle("wan21", "tiny", 0, patcher, tm.make_conditioning("wan21", seed=1000),
                           tm.make_conditioning("wan21", seed=2000), tm.latent_shape("wan21"))


def unet_loader(weight_dtype: str):
    return comfy_nodes.UNETLoader().load_unet(f"{FILE}.safetensors", weight_dtype)[0]


def cache_error(model) -> float:
    """Full budget exact and K block runs on ``model``; the cached run's relative error to the uncached."""
    b = as_bundle(model)
    ref = run(model, b, N)
    assert torch.allclose(run(patched(model, FULL), b, N), ref, atol=1e-6, rtol=0)
    out, probe = probed_run(patched(model, SCHED), b, N)
    assert probe.block_runs == SCHED.budget
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    return rel_err(out, ref)


@pytest.fixture(scope="module")
def full_precision_error(model_dir) -> float:
    return cache_error(unet_loader("default"))


def block_weights(model) -> list:
    dm = model.get_model_object("diffusion_model")
    return [m.weight for m in dm.blocks.modules() if isinstance(m, torch.nn.Linear)]


def test_fp8_weights_from_unet_loader(model_dir, full_precision_error, batched_cfg):
    model = unet_loader("fp8_e4m3fn")
    assert all(w.dtype == torch.float8_e4m3fn for w in block_weights(model))
    b = as_bundle(model)
    assert not torch.allclose(run(model, b, N), run(unet_loader("default"), b, N), atol=1e-6)   # really fp8
    assert cache_error(model) <= 1.5 * full_precision_error


@pytest.fixture(scope="module")
def gguf_pack():
    pack, reason = tiny_gguf.find_gguf_pack(find_comfyui().path)
    if pack is None:
        pytest.skip(reason)
    return tiny_gguf.import_gguf_pack(pack)


def test_gguf_q8_weights_from_the_comfyui_gguf_pack(model_dir, gguf_pack, full_precision_error, batched_cfg):
    kinds = tiny_gguf.write_gguf(tiny_wan_state(0), model_dir / f"{FILE}.gguf")
    assert sum(k == "Q8_0" for k in kinds.values()) >= 8
    loader = gguf_pack.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]()
    model = loader.load_unet(f"{FILE}.gguf")[0]
    assert type(model).__name__ == "GGUFModelPatcher"
    quantised = [w for w in block_weights(model) if getattr(w, "tensor_type", None) is not None]
    assert quantised and all(w.tensor_type.name == "Q8_0" for w in quantised)
    assert cache_error(model) <= 1.5 * full_precision_error
