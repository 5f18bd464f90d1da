"""The bundled toy model and its sampler adapter: shapes, determinism, exactness of the
uncached path through the runtime, block counts, and the calibration record."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from otcache_engine.runtime import CacheSession, StepPlan, make_reuse
from otcache_engine.schedules.schedule import Schedule
from benchmarks.toy import data
from benchmarks.toy.model import ToyDiT, ToyDiTConfig
from benchmarks.toy.record import record_runs
from benchmarks.toy.sampler import flow_sigmas, initial_noise, sample
from benchmarks.toy.weights_io import BUNDLED, load_meta, load_model

TINY = ToyDiTConfig(dim=32, depth=3, heads=2)
STEPS = 10
CACHED = Schedule(STEPS, (0, 1, 2, 4, 6, 9))


@pytest.fixture(scope="module")
def tiny() -> ToyDiT:
    torch.manual_seed(0)
    model = ToyDiT(TINY).eval().requires_grad_(False)
    for p in model.parameters():          # leave adaLN-Zero's identity start: every block must matter
        p.normal_(0.0, 0.08)
    return model


@pytest.fixture(scope="module")
def bundled() -> ToyDiT:
    return load_model(BUNDLED)


def session(schedule: Schedule, sigmas: torch.Tensor, reuse: str = "residual", gamma=None) -> CacheSession:
    space = "output" if reuse == "omnicache" else None
    return CacheSession(StepPlan.build(schedule, sigmas.tolist()), make_reuse(reuse, gamma=gamma, space=space))


def run(model, schedule=None, reuse="residual", steps=STEPS, labels=(1, 7), seeds=(3, 4), **kw):
    sig = flow_sigmas(steps, 2.0)
    sess = session(schedule, sig, reuse) if schedule is not None else None
    return sample(model, torch.tensor(labels), initial_noise(seeds), sig, 3.0, session=sess, **kw), sess


# --- model and data ------------------------------------------------------------------

def test_model_shapes_and_stages(tiny):
    x = torch.randn(3, 3, 32, 32)
    y = torch.tensor([0, 5, TINY.null_class])
    h, c = tiny.embed(x, torch.tensor(0.4), y)
    assert h.shape == (3, TINY.tokens, TINY.dim) and c.shape == (3, TINY.dim)
    out = tiny(x, torch.tensor(0.4), y)
    assert out.shape == x.shape
    assert torch.equal(out, tiny.head(tiny.run_blocks(h, c), c))


def test_fresh_model_starts_as_zero_velocity():
    """adaLN-Zero: blocks start as identity and the output layer at zero (DiT initialisation)."""
    model = ToyDiT(TINY)
    out = model(torch.randn(2, 3, 32, 32), torch.tensor([0.3, 0.9]), torch.tensor([1, 2]))
    assert torch.count_nonzero(out) == 0


def test_initialisation_and_noise_are_seeded():
    torch.manual_seed(5)
    a = ToyDiT(TINY).state_dict()
    torch.manual_seed(5)
    b = ToyDiT(TINY).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(initial_noise([7, 8])[1], initial_noise([8])[0])   # a sample depends on its own seed only
    assert not torch.equal(initial_noise([7])[0], initial_noise([8])[0])


def test_data_classes_have_their_colour():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(data.NUM_CLASSES)
    images = data.render(labels, g)
    assert images.shape == (12, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    for y, img in zip(labels.tolist(), images):
        colour = torch.tensor(list(data.COLOURS.values())[y % 3]) * 2 - 1
        # the pixel closest to the class colour is within the +-0.08 jitter of it
        dist = (img.permute(1, 2, 0) - colour).abs().amax(-1).min()
        assert dist < 0.2, data.class_name(y)


def test_sampling_is_deterministic(tiny):
    a, _ = run(tiny)
    b, _ = run(tiny)
    assert torch.equal(a.x, b.x)


# --- adapter through the runtime -------------------------------------------------------

@pytest.mark.parametrize("reuse", ["residual", "output", "omnicache"])
def test_full_schedule_equals_uncached_sampling_exactly(tiny, reuse):
    ref, _ = run(tiny)
    out, sess = run(tiny, Schedule.full(STEPS), reuse)
    assert torch.equal(out.x, ref.x)
    assert out.block_runs == STEPS == ref.block_runs
    assert not sess.enabled


@pytest.mark.parametrize("reuse,kw", [("residual", {}), ("output", {}), ("omnicache", {}),
                                      ("output", {"space": "transform"}), ("residual", {"front_blocks": 1})])
def test_cached_run_executes_k_block_stacks_and_differs(tiny, reuse, kw):
    ref, _ = run(tiny)
    out, sess = run(tiny, CACHED, reuse, **kw)
    assert out.block_runs == CACHED.budget
    summary = sess.summary()
    assert summary["computed_steps"] == CACHED.budget and summary["reused_steps"] == STEPS - CACHED.budget
    assert not torch.equal(out.x, ref.x)


def test_front_block_split_is_exact_when_every_step_computes(tiny):
    ref, _ = run(tiny)
    out, _ = run(tiny, Schedule.full(STEPS), "residual", front_blocks=1)
    assert torch.equal(out.x, ref.x)


def test_cached_output_of_the_bundled_model_stays_close(bundled):
    """K ~ N/2 on the trained model: much closer to the uncached image than another seed's image is,
    and above 25 dB PSNR."""
    steps = 20
    sched = Schedule(steps, (0, 1, 2, 3, 4, 5, 7, 9, 11, 13, 15, 17, 19))
    ref, _ = run(bundled, steps=steps, labels=(0, 6), seeds=(11, 12))
    out, _ = run(bundled, sched, steps=steps, labels=(0, 6), seeds=(11, 12))
    other, _ = run(bundled, steps=steps, labels=(0, 6), seeds=(13, 14))
    cached_err = (out.x - ref.x).abs().mean()
    seed_err = (other.x - ref.x).abs().mean()
    assert 0 < cached_err < seed_err / 3
    mse = ((out.x - ref.x) / 2).square().mean()          # images in [-1, 1] -> [0, 1]
    assert 10 * torch.log10(1 / mse) > 25


def test_bundled_weights_match_their_config():
    meta = load_meta(BUNDLED)
    assert BUNDLED.stat().st_size <= 5 * 2**20
    assert meta["model"]["num_classes"] == data.NUM_CLASSES
    assert meta["training"]["steps_done"] == meta["training"]["steps_planned"]
    assert set(meta["sampler"]) >= {"shift", "cfg_scale"}


# --- calibration record ----------------------------------------------------------------

def test_calibration_record_matches_the_sampling_run(tiny):
    labels, seeds = (2, 9), (21, 22)
    sig = flow_sigmas(STEPS, 2.0)
    runs = record_runs(tiny, labels, seeds, sig, 3.0)
    plain = sample(tiny, torch.tensor(labels), initial_noise(seeds), sig, 3.0)
    assert len(runs) == 2
    for i, r in enumerate(runs):
        assert r.num_steps == STEPS and r.meta["seed"] == seeds[i]
        assert torch.equal(r.latents[0], initial_noise([seeds[i]])[0])
        assert torch.equal(r.final_latent, plain.x[i])
        assert r.check_euler_consistency() < 1e-5
        assert r.residual_norms["cond"].shape == (STEPS, TINY.tokens)
        for name in ("teacache_rel_l1", "fbcache_rel_l1", "magcache_ratio", "easycache_k", "output_rel_l1"):
            sig_n = r.signal(name)
            assert sig_n.shape == (STEPS,) and np.isfinite(sig_n).all()
        assert r.signal("teacache_rel_l1")[0] == 0 and r.signal("magcache_ratio")[0] == 1


def test_recorded_signals_are_what_the_baselines_define(tiny):
    """TeaCache's signal at step 1 recomputed by hand from the model's block-0 modulated input."""
    sig = flow_sigmas(STEPS, 2.0)
    r = record_runs(tiny, (4,), (31,), sig, 3.0)[0]
    y2 = torch.tensor([4, TINY.null_class])
    mods = []
    for n in (0, 1):
        x2 = torch.cat([r.latents[n][None]] * 2)
        h, c = tiny.embed(x2, sig[n], y2)
        mods.append(tiny.blocks[0].modulated_input(h, c))
    want = (mods[1] - mods[0]).abs().mean() / mods[0].abs().mean()
    assert r.signal("teacache_rel_l1")[1] == pytest.approx(float(want), rel=1e-5)
    v = r.outputs
    want_k = (v[2] - v[1]).abs().mean() / (r.latents[2] - r.latents[1]).abs().mean()
    assert r.signal("easycache_k")[2] == pytest.approx(float(want_k), rel=1e-5)
