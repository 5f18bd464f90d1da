"""Sample grids of the toy model (one column per class), to check that classes are visible."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import data


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def tile(images: np.ndarray, rows: int, pad: int = 1) -> np.ndarray:
    """Tile (B, H, W, 3) row-major into one image with ``pad``-pixel separators."""
    b, h, w, _ = images.shape
    cols = -(-b // rows)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return out


def save_class_grid(weights: Path, path: Path, rows: int = 4, steps: int = 50, seed0: int = 1000) -> Path:
    """rows x classes samples (uncached, default sampler settings), upscaled 4x, as PNG."""
    from PIL import Image
    from .sampler import flow_sigmas, initial_noise, sample
    from .weights_io import load_meta, load_model
    model, meta = load_model(weights), load_meta(weights)
    labels = torch.arange(data.NUM_CLASSES).repeat(rows)
    noise = initial_noise(range(seed0, seed0 + len(labels)))
    sig = flow_sigmas(steps, meta["sampler"]["shift"])
    x = sample(model, labels, noise, sig, meta["sampler"]["cfg_scale"]).x
    grid = tile(to_uint8(x), rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(path)
    return path
