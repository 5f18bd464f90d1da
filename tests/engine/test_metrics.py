"""Metrics: closed-form checks of PSNR/SSIM/L1, the LPIPS plumbing without any download, the loud fallback."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from otcache_engine import metrics as M


def images(seed: int = 0, shape=(2, 24, 32, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g)
    b = (a + 0.05 * torch.randn(shape, generator=g)).clamp(0, 1)
    return a, b


def test_psnr_matches_its_definition():
    a = torch.zeros(1, 8, 8, 3)
    b = torch.full((1, 8, 8, 3), 0.1)
    assert M.psnr(a, b) == pytest.approx(20.0, abs=1e-4)     # 10 log10(1 / 0.01)
    assert M.psnr(a, a) == 100.0


def test_ssim_identity_symmetry_and_order():
    a, b = images()
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    assert M.ssim(a, b) == pytest.approx(M.ssim(b, a), abs=1e-6)
    _, worse = images(seed=0)
    worse = (a + 0.3 * torch.randn_like(a)).clamp(0, 1)
    assert M.ssim(a, worse) < M.ssim(a, b) < 1.0


def test_ssim_of_a_constant_shift_follows_the_luminance_term():
    a = torch.full((1, 16, 16, 1), 0.5)
    b = torch.full((1, 16, 16, 1), 0.6)
    c1 = 0.01 ** 2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5 ** 2 + 0.6 ** 2 + c1)  # zero variance: only luminance remains
    assert M.ssim(a, b) == pytest.approx(expected, rel=1e-4)


def test_video_is_the_mean_over_frames():
    a, b = images(shape=(1, 3, 16, 16, 3))
    per_frame = [M.ssim(a[:, t], b[:, t]) for t in range(3)]
    assert M.ssim(a, b) == pytest.approx(sum(per_frame) / 3, rel=1e-5)
    assert M.psnr(a, b) == pytest.approx(sum(M.psnr(a[:, t], b[:, t]) for t in range(3)) / 3, rel=1e-5)


def test_latent_relative_l1():
    ref = torch.tensor([1.0, -2.0, 3.0, -4.0])
    out = ref + torch.tensor([0.5, 0.5, -0.5, 0.5])
    assert M.latent_rel_l1(out, ref) == pytest.approx(0.5 / 2.5)
    assert M.latent_rel_l1(ref, ref) == 0.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="different shapes"):
        M.ssim(torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 9, 3))


def test_lpips_plumbing_with_a_random_backbone():
    net = M.LPIPS(pnet_rand=True)
    a, b = images(shape=(2, 40, 48, 3))
    assert net(a, a) == pytest.approx(0.0, abs=1e-6)
    assert net(a, b) > 0
    video = torch.stack([a, b], dim=1)             # [B, T, H, W, C]
    assert net(video, video) == pytest.approx(0.0, abs=1e-6)
    big = torch.rand(1, 40, 600, 3)
    assert math.isfinite(net(big, big.flip(1)))    # downsampled to <= 512 px, still a score


def test_lpips_loads_a_backbone_file_without_download(tmp_path):
    from torchvision.models import alexnet
    torch.manual_seed(0)
    path = tmp_path / M.ALEXNET_FILE
    torch.save(alexnet(weights=None).state_dict(), path)
    net = M.LPIPS(weights=path)
    first_conv = dict(net.net.net.named_parameters())["slice1.0.weight"]
    assert torch.equal(first_conv, torch.load(path, weights_only=True)["features.0.weight"])
    metric = M.perceptual_metric(True, weights=path)
    assert metric.name == "lpips-alex" and metric.warning is None and metric.on == "image"


def test_missing_backbone_falls_back_loudly_and_says_how_to_fix(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    calls = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: calls.append(a))
    assert M.alexnet_weights_path() == tmp_path / "empty-hub" / "hub" / "checkpoints" / M.ALEXNET_FILE
    with caplog.at_level(logging.WARNING, logger="otcache"):
        metric = M.perceptual_metric(True)
    assert metric.name == "1-ssim" and metric.on == "image"
    assert M.ALEXNET_URL in metric.warning and str(M.alexnet_weights_path()) in metric.warning
    assert "LPIPS unavailable" in caplog.text
    a, b = images()
    assert metric(a, b) == pytest.approx(1 - M.ssim(a, b))
    assert calls == []                                       # nothing tried to download
    with pytest.raises(FileNotFoundError, match="alexnet-owt"):
        M.LPIPS()


def test_without_a_decoder_the_metric_is_the_latent_l1():
    metric = M.perceptual_metric(False)
    assert metric.name == "latent-rel-l1" and metric.on == "latent" and "VAE" in metric.warning
    ref = torch.randn(1, 4, 8, 8)
    assert metric(ref * 1.1, ref) == pytest.approx(0.1, rel=1e-5)


def test_nan_scores_become_inf():
    metric = M.Perceptual("bad", "latent", lambda a, b: float("nan"))
    assert metric(torch.zeros(1), torch.zeros(1)) == math.inf


def test_a_wrong_weights_file_falls_back_instead_of_failing(tmp_path):
    path = tmp_path / "not-alexnet.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, path)
    metric = M.perceptual_metric(True, weights=path)
    assert metric.name == "1-ssim" and "loading LPIPS failed" in metric.warning
