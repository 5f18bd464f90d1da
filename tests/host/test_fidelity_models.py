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
from benchmarks.fidelity.train import training_batch  # noqa: E402
from benchmarks.fidelity.transfer import other_sizes  # noqa: E402
from otcache_pack.benchmarks.toy import data  # noqa: E402
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
    for size in [setup] + [other for _, _, other in other_sizes(setup)]:   # every size it was trained at
        red, blue = images(model, size, [Pair(0, 3), Pair(2, 3)], STEPS)[::size.frames]   # red / blue circle
        assert (red[..., 0] - red[..., 2]).mean() > (blue[..., 0] - blue[..., 2]).mean() + 0.2
    again = images(model, setup, [Pair(0, 3)], STEPS)[0]
    first = images(model, setup, [Pair(0, 3), Pair(2, 3)], STEPS)[0]
    assert torch.allclose(first, again, atol=1e-4)           # alone or batched: the same picture


def test_the_codec_is_exact():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for video in (False, True):
        assert torch.allclose(codec.decode_internal(codec.encode_internal(x, video)), ((x + 1) / 2).movedim(1, -1))
    clips = torch.rand(2, 3, 3, 32, 32) * 2 - 1              # (batch, frames, RGB, H, W)
    latent = codec.encode_clip(clips)
    assert latent.shape == (2, 16, 3, 16, 16)
    assert torch.allclose(codec.decode_internal(latent), ((clips.flatten(0, 1) + 1) / 2).movedim(1, -1))


def test_multi_size_models_train_on_each_size_and_the_others_on_their_old_stream():
    g = torch.Generator().manual_seed(0)
    seen = {tuple(training_batch(setups.FLUX_SIZES, 2, g)[0].shape) for _ in range(12)}
    assert seen == {(2, 16, 16, 16), (2, 16, 8, 8)}
    seen = {tuple(training_batch(setups.WAN21_FRAMES, 2, g)[0].shape) for _ in range(12)}
    assert seen == {(2, 16, 3, 16, 16), (2, 16, 1, 16, 16)}
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    x0, labels = training_batch(setups.FLUX, 4, a)                  # one size: exactly the images of before
    assert torch.equal(x0, codec.encode_internal(data.render(torch.randint(0, data.NUM_CLASSES, (4,), generator=b),
                                                             b), False))
    clip = data.render_clip(torch.tensor([0, 4]), torch.Generator().manual_seed(1), 3)
    assert (clip[:, 0] - clip[:, -1]).abs().mean() > 1e-3           # a clip's frames differ: its shape moves


def test_the_pack_caches_the_loaded_model_with_exact_block_runs(loaded):
    setup, model = loaded
    with PassCounter(model) as runs:
        out = sample(cached_model(model, uniform_k(STEPS, 3)), setup, [Pair(1, 0), Pair(5, 1)], STEPS)
    assert runs.passes == 3 and torch.isfinite(out).all()


def test_the_transfer_benchmark_runs_each_multi_size_model_at_its_other_size():
    (what, share, small), = other_sizes(setups.FLUX_SIZES)
    assert (what, share, small.side, small.frames) == ("16 px", "0.25", 16, 1)
    (what, share, short), = other_sizes(setups.WAN21_FRAMES)
    assert (what, share, short.side, short.frames) == ("1 latent frame", "0.33", 32, 1)
    assert short.empty_latent().shape == (1, 16, 1, 16, 16) and setups.WAN21_FRAMES.empty_latent().shape[2] == 3
    assert other_sizes(setups.FLUX) == [] and other_sizes(setups.WAN21) == []
