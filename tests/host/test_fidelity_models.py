"""The in-host benchmark's trained models: real ComfyUI classes, loaded by ComfyUI's own loader, small,
conditioned on the prompt, and sampled through the pack on both hosts."""
from __future__ import annotations

import pytest
import torch

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import benchmarks.fidelity  # noqa: E402,F401
from benchmarks.fidelity import codec, setups  # noqa: E402
from benchmarks.fidelity.pipeline import PassCounter  # noqa: E402
from benchmarks.fidelity.sampling import Pair, images, sample  # noqa: E402
from otcache_pack.nodes.runtime.patcher import cached_model  # noqa: E402
from otcache_pack.otcache_engine.schedules.baselines import uniform_k  # noqa: E402

STEPS = 6


@pytest.fixture(scope="module", params=sorted(setups.SETUPS))
def loaded(request):
    setup = setups.SETUPS[request.param]
    return setup, setups.load(setup)


def test_the_file_is_small_and_loads_as_its_comfyui_family(loaded):
    setup, model = loaded
    assert setup.weights.stat().st_size <= 5 * 2**20
    assert type(model.model.model_config).__name__ == setup.config_name
    dm = model.get_model_object("diffusion_model")
    assert type(dm).__module__.startswith("comfy.ldm.")
    assert setup.record.is_file() and setup.weights.with_suffix(".png").is_file()


def test_the_picture_depends_on_the_prompt_and_only_on_its_inputs(loaded):
    setup, model = loaded
    red, blue = images(model, setup, [Pair(0, 3), Pair(2, 3)], STEPS)   # red circle, blue circle, same seed
    assert (red[..., 0] - red[..., 2]).mean() > (blue[..., 0] - blue[..., 2]).mean() + 0.2
    again = images(model, setup, [Pair(0, 3)], STEPS)[0]
    assert torch.allclose(red, again, atol=1e-4)           # alone or batched: the same picture


def test_the_codec_is_exact():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for video in (False, True):
        assert torch.allclose(codec.decode_internal(codec.encode_internal(x, video)), ((x + 1) / 2).movedim(1, -1))


def test_the_pack_caches_the_loaded_model_with_exact_block_runs(loaded):
    setup, model = loaded
    with PassCounter(model) as runs:
        out = sample(cached_model(model, uniform_k(STEPS, 3)), setup, [Pair(1, 0), Pair(5, 1)], STEPS)
    assert runs.passes == 3 and torch.isfinite(out).all()
