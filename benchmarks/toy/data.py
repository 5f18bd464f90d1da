"""Procedural training data for the bundled toy model: coloured shapes on a tinted background.

Why procedural: no data set can be downloaded here, and a recipe that is a few lines of
code lets anyone regenerate exactly the same stream of images (fixed seed) to retrain.

Recipe (32x32 RGB, values in [-1, 1]):
- class ``y = 3 * shape + colour`` with shapes (circle, square, triangle, cross) and colours
  (red, green, blue) -> 12 classes that differ visibly in both outline and hue;
- shape centre uniform in [14, 18] px on each axis, radius uniform in [7.5, 10] px (kept
  near the middle: a model trained for minutes on 2 CPU cores learns the outlines then);
- colour jittered by +-0.08 per channel; background a dark grey (level in [0.05, 0.35])
  with a random linear gradient of amplitude <= 0.12 and a faint tint;
- rendered at 2x resolution and box-filtered down (anti-aliased edges).
"""
from __future__ import annotations

import math

import torch

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (0.92, 0.16, 0.14), "green": (0.16, 0.78, 0.22), "blue": (0.18, 0.36, 0.96)}
NUM_CLASSES = len(SHAPES) * len(COLOURS)
IMAGE_SIZE = 32
_SUPERSAMPLE = 2


def class_name(y: int) -> str:
    """Human-readable label, e.g. 'red circle'."""
    shape, colour = divmod(int(y), len(COLOURS))
    return f"{list(COLOURS)[colour]} {SHAPES[shape]}"


def _shape_masks(px: torch.Tensor, py: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Coverage masks (4, B, H, W) of every shape at offsets (px, py) from the centre."""
    circle = px.square() + py.square() <= r.square()
    square = torch.maximum(px.abs(), py.abs()) <= 0.82 * r
    # upward equilateral triangle inscribed in the circle of radius r (image y axis points down)
    k, t = math.sqrt(3.0), 1.15 * r  # a triangle covers less of its circle: enlarge it
    top = py >= -t
    bottom = py <= 0.5 * t
    left = k * px - py <= t  # edges through the apex (0, -t) and base corners (+-t*sqrt3/2, t/2)
    right = -k * px - py <= t
    triangle = top & bottom & left & right
    arm = 0.38 * r
    cross = ((px.abs() <= arm) & (py.abs() <= r)) | ((py.abs() <= arm) & (px.abs() <= r))
    return torch.stack([circle, square, triangle, cross]).float()


def render(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images (B, 3, 32, 32) in [-1, 1] for integer class labels, drawn from ``generator``."""
    return _draw(labels, _scene(labels.shape[0], generator), torch.zeros(labels.shape[0], 2))


def render_clip(labels: torch.Tensor, generator: torch.Generator, frames: int) -> torch.Tensor:
    """Clips (B, frames, 3, 32, 32): one scene per label whose shape drifts by up to 1.5 px a frame (so the
    frames of a clip differ, as a video model's do, and a model trained on them learns the motion)."""
    b = labels.shape[0]
    scene = _scene(b, generator)
    velocity = 3.0 * (torch.rand(b, 2, generator=generator) - 0.5)
    middle = (frames - 1) / 2
    return torch.stack([_draw(labels, scene, (f - middle) * velocity) for f in range(frames)], dim=1)


def _scene(b: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Everything random about B images, drawn in one fixed order (the training stream depends on it)."""
    u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731 - local shorthand
    return {"centre": 14.0 + 4.0 * u(b, 2), "radius": 7.5 + 2.5 * u(b), "colour": u(b, 3), "level": u(b, 1, 1, 1),
            "tint": u(b, 3, 1, 1), "slope": u(b, 2)}


def _draw(labels: torch.Tensor, scene: dict[str, torch.Tensor], offset: torch.Tensor) -> torch.Tensor:
    """The images of ``scene`` with every shape moved by ``offset`` (B, 2) pixels."""
    b = labels.shape[0]
    s = IMAGE_SIZE * _SUPERSAMPLE
    centre = (scene["centre"] + offset) * _SUPERSAMPLE
    radius = scene["radius"] * _SUPERSAMPLE
    grid = torch.arange(s, dtype=torch.float32) + 0.5
    px = grid.view(1, 1, s) - centre[:, 0].view(b, 1, 1)
    py = grid.view(1, s, 1) - centre[:, 1].view(b, 1, 1)
    masks = _shape_masks(px, py, radius.view(b, 1, 1))            # (4, B, s, s)
    shape_id, colour_id = labels // len(COLOURS), labels % len(COLOURS)
    mask = masks[shape_id, torch.arange(b)].unsqueeze(1)          # (B, 1, s, s)

    palette = torch.tensor(list(COLOURS.values()))
    colour = (palette[colour_id] + 0.16 * (scene["colour"] - 0.5)).clamp(0, 1).view(b, 3, 1, 1)
    level = 0.05 + 0.30 * scene["level"]
    tint = 0.06 * (scene["tint"] - 0.5)
    slope = 0.12 * (scene["slope"] - 0.5)
    ramp = (slope[:, 0].view(b, 1, 1) * (grid.view(1, 1, s) / s - 0.5)
            + slope[:, 1].view(b, 1, 1) * (grid.view(1, s, 1) / s - 0.5)).unsqueeze(1)
    background = (level + tint + ramp).clamp(0, 1)
    image = mask * colour + (1 - mask) * background
    image = torch.nn.functional.avg_pool2d(image, _SUPERSAMPLE)
    return image * 2 - 1


def batch(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch: (images, labels) with labels uniform over the classes."""
    labels = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
    return render(labels, generator), labels
