"""A sample grid of a benchmark model (one column per prompt, one row per seed), to see what it learned."""
from __future__ import annotations

from pathlib import Path

import torch

from . import prompts, setups
from .sampling import Pair, images

ROWS = 3


def save_grid(setup: setups.Setup, path: Path | None = None, steps: int = 30, scale: int = 3) -> Path:
    from PIL import Image

    model = setups.load(setup)
    pairs = [Pair(p, 100 + r) for r in range(ROWS) for p in range(prompts.NUM_PROMPTS)]
    with torch.no_grad():
        imgs = images(model, setup, pairs, steps)[::setup.frames]   # a clip's first frame
    side = imgs.shape[1]
    cols = prompts.NUM_PROMPTS
    sheet = torch.zeros((ROWS * side, cols * side, 3))
    for k, img in enumerate(imgs):
        r, c = divmod(k, cols)
        sheet[r * side:(r + 1) * side, c * side:(c + 1) * side] = img
    picture = Image.fromarray((sheet.numpy() * 255).round().astype("uint8"))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = path or setup.weights.with_suffix(".png")
    picture.save(path)
    return path
