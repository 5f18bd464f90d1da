"""Image, video and latent distances used to judge a cached output against the uncached one.

Images follow ComfyUI's IMAGE layout: channel-last floats in [0, 1], shaped
``[H, W, C]``, ``[B, H, W, C]`` or, for video, ``[B, T, H, W, C]``; every
leading axis is treated as a frame and scores are the mean over frames.

LPIPS needs torchvision's ImageNet AlexNet backbone. :func:`perceptual_metric` looks
for it in the folders the caller names (inside ComfyUI: a models folder) and in the
torch hub cache, and otherwise downloads it once into the first folder
(checksum-verified, see ``weights_download``; ``OTCACHE_NO_DOWNLOAD=1`` turns that off).
Without a folder, with downloads off, or offline, it falls back, loudly, to
``1 - SSIM`` (or to the latent relative L1 when no decoder is available), with a
one-line warning that names the file and where to put it.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .weights_download import DownloadError, ProgressFn, RemoteFile, downloads_disabled, fetch

log = logging.getLogger("otcache")

EPS = 1e-12
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_FILE = ALEXNET_URL.rsplit("/", 1)[-1]
# torchvision's AlexNet_Weights.IMAGENET1K_V1; its meta gives the size (233.087 MB), its name the SHA-256 prefix
ALEXNET = RemoteFile(ALEXNET_URL, size_mb=233.1)


# --- layout helpers ---------------------------------------------------------

def _frames(img: torch.Tensor) -> torch.Tensor:
    """[..., H, W, C] channel-last -> [F, C, H, W] float32 frames."""
    if not isinstance(img, torch.Tensor):
        img = torch.as_tensor(img)
    if img.ndim < 3:
        raise ValueError(f"an image must be [H, W, C] (or have leading batch/frame axes), got shape {tuple(img.shape)}")
    h, w, c = img.shape[-3:]
    return img.detach().reshape(-1, h, w, c).permute(0, 3, 1, 2).float()


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"cannot compare outputs of different shapes {tuple(a.shape)} and {tuple(b.shape)}")


# --- PSNR, SSIM, latent L1 ---------------------------------------------------

def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, averaged over frames (inf for identical frames is capped at 100)."""
    _check_pair(a, b)
    fa, fb = _frames(a), _frames(b)
    mse = ((fa - fb) ** 2).flatten(1).mean(1).clamp_min(1e-10 * data_range ** 2)
    return float((10.0 * torch.log10(data_range ** 2 / mse)).clamp_max(100.0).mean())


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2)).double()
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004, gaussian window 11 / 1.5), mean over channels and frames.

    The window shrinks for images smaller than 11 px so tiny test outputs still get a score.
    """
    _check_pair(a, b)
    fa, fb = _frames(a).double(), _frames(b).double()   # variances are differences of squares: keep digits
    c = fa.shape[1]
    size = max(1, min(window, fa.shape[-1], fa.shape[-2]))
    w = _gaussian_window(size, sigma, c, fa.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_a, mu_b = blur(fa), blur(fb)
    var_a = blur(fa * fa) - mu_a ** 2
    var_b = blur(fb * fb) - mu_b ** 2
    cov = blur(fa * fb) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return float((num / den).mean())


def latent_rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b||_1 / ||b||_1 with mean absolute values (b = the uncached reference latent)."""
    _check_pair(a, b)
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().mean() / b.abs().mean().clamp_min(EPS))


# --- LPIPS -----------------------------------------------------------------------

def alexnet_weights_path(name: str = ALEXNET_FILE) -> Path:
    """Where torchvision looks for (and would download) the AlexNet backbone LPIPS needs."""
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _lpips_missing() -> str | None:
    try:
        import lpips  # noqa: F401
    except ImportError:
        return "the 'lpips' package is not installed (pip install lpips)"
    return None


def lpips_unavailable_reason(weights: str | os.PathLike | None = None) -> str | None:
    """None when LPIPS can be built without any download; else one sentence saying how to get it."""
    missing = _lpips_missing()
    if missing:
        return missing
    path = Path(weights) if weights else alexnet_weights_path()
    if not path.is_file():
        return (f"torchvision's AlexNet weights are missing: download {ALEXNET_URL} and save it as {path} "
                f"(or set TORCH_HOME to a folder whose checkpoints/ holds {ALEXNET_FILE})")
    return None


def lpips_backbone(folders: Sequence[str | os.PathLike] = (), progress: ProgressFn | None = None,
                   remote: RemoteFile = ALEXNET) -> tuple[Path | None, str | None]:
    """``(file, None)`` or ``(None, why not)``: the backbone found in ``folders`` or the torch hub cache,
    else downloaded once into ``folders[0]``. Without folders nothing is downloaded (the engine's CLI)."""
    missing = _lpips_missing()
    if missing:
        return None, missing
    places = [Path(f) for f in folders]
    for path in [p / remote.name for p in places] + [alexnet_weights_path(remote.name)]:
        if path.is_file():
            return path, None
    if not places:
        return None, lpips_unavailable_reason(alexnet_weights_path(remote.name))
    dest = places[0] / remote.name
    if not downloads_disabled():
        size = f"about {remote.size_mb:.0f} MB, " if remote.size_mb else ""
        log.info("[OTCache] downloading the LPIPS backbone %s (%sonce) into %s", remote.url, size, places[0])
    try:
        return fetch(remote, places[0], progress), None
    except DownloadError as e:
        return None, f"{e}; to use LPIPS offline, save {remote.url} as {dest}"


class LPIPS:
    """LPIPS (AlexNet, v0.1 linear heads) on channel-last images in [0, 1]; mean over frames.

    Built without torchvision's download path: the backbone is loaded from ``weights``
    (default: the torch hub cache file) with ``torch.load(weights_only=True)``.
    ``pnet_rand=True`` keeps a random backbone -- only for testing the plumbing.
    Frames larger than ``max_side`` are area-downsampled first (method.md §8.1).
    """

    name = "lpips-alex"

    def __init__(self, weights: str | os.PathLike | None = None, pnet_rand: bool = False,
                 device: str | torch.device = "cpu", max_side: int = 512):
        import warnings

        import lpips
        if not pnet_rand:
            reason = lpips_unavailable_reason(weights)
            if reason:
                raise FileNotFoundError(f"LPIPS unavailable: {reason}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        if not pnet_rand:
            _load_alexnet_backbone(net, Path(weights) if weights else alexnet_weights_path())
        self.net = net.eval().to(device)
        self.device = torch.device(device)
        self.max_side = max_side
        if pnet_rand:
            self.name = "lpips-alex-random-backbone"

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> float:
        _check_pair(a, b)
        fa, fb = (self._prepare(_frames(t)) for t in (a, b))
        return float(self.net(fa, fb).mean())

    def _prepare(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.device)
        if frames.shape[1] == 1:
            frames = frames.expand(-1, 3, -1, -1)
        frames = frames[:, :3]
        side = max(frames.shape[-2:])
        if side > self.max_side:
            scale = self.max_side / side
            size = (max(1, round(frames.shape[-2] * scale)), max(1, round(frames.shape[-1] * scale)))
            frames = F.interpolate(frames, size=size, mode="area")
        if min(frames.shape[-2:]) < 32:  # AlexNet's strided convs need some room
            frames = F.interpolate(frames, size=(max(32, frames.shape[-2]), max(32, frames.shape[-1])),
                                   mode="bilinear", align_corners=False)
        return frames.clamp(0, 1) * 2 - 1


def _load_alexnet_backbone(net: torch.nn.Module, path: Path) -> None:
    """Copy torchvision's ``features.<i>.*`` tensors into lpips' slices (which reuse the indices as names)."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    loaded = 0
    for part in net.net.children():
        for name, layer in part.named_children():
            own = layer.state_dict()
            if not own:
                continue
            layer.load_state_dict({k: state[f"features.{name}.{k}"] for k in own})
            loaded += 1
    if loaded != 5:
        raise ValueError(f"{path} does not hold AlexNet's 5 convolution layers (found {loaded})")


# --- the objective factory -------------------------------------------------------------

@dataclass(frozen=True)
class Perceptual:
    """A distance between a cached and an uncached output; lower is better.

    ``on`` says what it compares: ``"image"`` (decoded, channel-last in [0, 1]) or
    ``"latent"``. ``warning`` is set when a weaker metric replaced LPIPS.
    """

    name: str
    on: str
    fn: Callable[[torch.Tensor, torch.Tensor], float] = field(repr=False)
    warning: str | None = None

    def __call__(self, out: torch.Tensor, ref: torch.Tensor) -> float:
        value = float(self.fn(out, ref))
        return value if math.isfinite(value) else math.inf


def one_minus_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    return 1.0 - ssim(a, b)


def perceptual_metric(has_decoder: bool, *, use_lpips: bool = True, weights: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu", pnet_rand: bool = False,
                      folders: Sequence[str | os.PathLike] = (), progress: ProgressFn | None = None,
                      remote: RemoteFile = ALEXNET) -> Perceptual:
    """The anchor search's objective: LPIPS when possible, else a loud fallback.

    With a decoder: LPIPS (AlexNet) if its backbone is ``weights``, in ``folders`` or the torch hub
    cache, or can be downloaded into ``folders[0]`` (see :func:`lpips_backbone`); else ``1 - SSIM``
    with a one-line warning. Without one: the latent relative L1 (LeMiCa's global-error metric).
    """
    if not has_decoder:
        return Perceptual("latent-rel-l1", "latent", latent_rel_l1,
                          "no VAE given: the anchor search compares final latents (relative L1); "
                          "connect a VAE to optimise a perceptual image metric")
    if not use_lpips:
        return Perceptual("1-ssim", "image", one_minus_ssim)
    reason = None
    if weights is None and not pnet_rand:
        weights, reason = lpips_backbone(folders, progress, remote)
    elif not pnet_rand:
        reason = lpips_unavailable_reason(weights)
    if reason is None:
        try:
            net = LPIPS(weights=weights, device=device, pnet_rand=pnet_rand)
            return Perceptual(net.name, "image", net)
        except Exception as e:  # noqa: BLE001 - a corrupt weights file must not stop the search
            reason = f"loading LPIPS failed ({type(e).__name__}: {e})"
    warning = " ".join(f"LPIPS unavailable, using 1 - SSIM instead: {reason}".split())   # one line
    log.warning("[OTCache] %s", warning)
    return Perceptual("1-ssim", "image", one_minus_ssim, warning)


def image_report(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """PSNR and SSIM of decoded outputs, kept next to the optimised score (not optimised)."""
    return {"psnr": psnr(out, ref), "ssim": ssim(out, ref)}
