"""Images <-> latents for the benchmark models, exactly and in ComfyUI's latent conventions.

No VAE can be trained or downloaded at a cost that fits here, and the benchmark needs to compare *pictures*.
So the latent is the picture itself, rearranged: a 32x32 RGB image in [-1, 1] becomes 12 channels of 16x16
by 2x2 space-to-depth, and 4 more channels that are always zero make the 16 channels Wan 2.1 and Flux expect.
That is the *internal* latent (what the diffusion model sees, after ComfyUI's ``process_latent_in``); the
external latent a LATENT carries is its ``process_latent_out``, so ComfyUI's own latent format of each
family sits between the two, as with a real VAE. Decoding is exact: PSNR and SSIM on decoded images are
the pixels a user would see, not a proxy.
"""
from __future__ import annotations

import torch

FACTOR = 2
IMAGE_CHANNELS = 3
LATENT_CHANNELS = 16
DATA_CHANNELS = IMAGE_CHANNELS * FACTOR * FACTOR


def encode_internal(images: torch.Tensor, video: bool) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> internal latent (B, 16, H/2, W/2), with a frame axis of 1 for video models."""
    packed = torch.nn.functional.pixel_unshuffle(images, FACTOR)
    pad = packed.new_zeros((packed.shape[0], LATENT_CHANNELS - DATA_CHANNELS) + packed.shape[2:])
    latent = torch.cat([packed, pad], dim=1)
    return latent.unsqueeze(2) if video else latent


def encode_clip(clips: torch.Tensor) -> torch.Tensor:
    """(B, frames, 3, H, W) in [-1, 1] -> a video model's internal latent (B, 16, frames, H/2, W/2)."""
    b, f = clips.shape[:2]
    flat = encode_internal(clips.reshape((b * f,) + tuple(clips.shape[2:])), video=False)
    return flat.reshape((b, f) + tuple(flat.shape[1:])).movedim(1, 2)


def decode_internal(latent: torch.Tensor) -> torch.Tensor:
    """Internal latent (4-D, or 5-D with frames) -> images (B*frames, H, W, 3) in [0, 1], ComfyUI's IMAGE layout."""
    if latent.ndim == 5:
        latent = latent.movedim(2, 1).reshape((-1,) + tuple(latent.shape[1:2]) + tuple(latent.shape[3:]))
    images = torch.nn.functional.pixel_shuffle(latent[:, :DATA_CHANNELS].float(), FACTOR)
    return ((images.clamp(-1, 1) + 1) / 2).movedim(1, -1)


def decode(model_patcher, latent: torch.Tensor) -> torch.Tensor:
    """A LATENT's samples (external) -> IMAGE, through the model's own latent format."""
    internal = model_patcher.model.process_latent_in(latent.float().cpu())
    return decode_internal(internal)
