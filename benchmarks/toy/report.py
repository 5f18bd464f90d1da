"""Tables, progress lines and pictures shared by the demo and the benchmark."""
from __future__ import annotations

import io
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from otcache_engine.schedules.schedule import Schedule
from .grid import tile, to_uint8

COLUMNS = ("method", "K", "NFE x", "wall x", "PSNR", "SSIM", "LPIPS")
NOISE_MARK = "*"
NOISE_NOTE = (f"{NOISE_MARK} wall x above NFE x = N/K is timing noise, not a speed-up: a skipped step still "
              "costs time, so the wall-clock ratio cannot exceed N/K (the machine was busy while the runs were "
              "timed; rerun with more --repeats on a quieter machine)")


def wall_is_noise(wall: float, nfe: float) -> bool:
    """Whether a wall-clock speed-up is impossible, hence noise: above N/K, the bound of a free reused step."""
    return math.isfinite(wall) and math.isfinite(nfe) and wall > nfe


def wall_cell(wall: float, nfe: float) -> str:
    """The wall x cell: the measured ratio, marked when it cannot be true (see ``NOISE_NOTE``)."""
    return f"{wall:.2f}{NOISE_MARK}" if wall_is_noise(wall, nfe) else f"{wall:.2f}"


@dataclass
class Row:
    method: str
    k: float
    nfe: float
    wall: float
    psnr: float
    ssim: float
    lpips: float
    extra: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[str]:
        k = f"{self.k:.0f}" if abs(self.k - round(self.k)) < 1e-9 else f"{self.k:.1f}"
        return [self.method, k, f"{self.nfe:.2f}", wall_cell(self.wall, self.nfe), _num(self.psnr, 2),
                _num(self.ssim, 4), _num(self.lpips, 4)]


def _num(value: float, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[Row], columns: Sequence[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines + _noise_note(rows, blank=True))


def _noise_note(rows: Sequence[Row], blank: bool = False) -> list[str]:
    """The note under a table, when one of its wall x cells is marked as noise."""
    if not any(wall_is_noise(r.wall, r.nfe) for r in rows):
        return []
    return ["", NOISE_NOTE] if blank else [NOISE_NOTE]


def text_table(rows: Sequence[Row], columns: Sequence[str] = COLUMNS) -> str:
    cells = [list(columns)] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    fmt = lambda c: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths)))  # noqa: E731
    lines = [fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(c) for c in cells[1:]]
    return "\n".join(lines + _noise_note(rows))


class Progress:
    """Timestamped progress lines on stderr ("[demo 1:23] ...")."""

    def __init__(self, name: str, quiet: bool = False):
        self.name, self.quiet, self.t0 = name, quiet, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        m, s = divmod(int(self.elapsed()), 60)
        print(f"[{self.name} {m}:{s:02d}] {message}", file=sys.stderr, flush=True)


def figure_to_array(fig: Any) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                      # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def labelled_grid(rows: Sequence[tuple[str, torch.Tensor]], scale: int = 3) -> np.ndarray:
    """One labelled row of samples per configuration (label on the left), as an RGB array."""
    from PIL import Image, ImageDraw
    font = _font(15)
    strips = []
    for _, x in rows:
        strip = tile(to_uint8(x), 1)
        strips.append(np.asarray(Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale),
                                                               Image.NEAREST)))
    label_w = int(max(font.getlength(name) for name, _ in rows)) + 16
    h, w = strips[0].shape[:2]
    canvas = Image.new("RGB", (label_w + w, h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, ((name, _), strip) in enumerate(zip(rows, strips)):
        canvas.paste(Image.fromarray(strip), (label_w, i * h))
        draw.text((label_w - 8, i * h + h // 2), name, fill=(0, 0, 0), font=font, anchor="rm")
    return np.asarray(canvas)


def stack_vertically(parts: Sequence[np.ndarray], path: Path) -> Path:
    from PIL import Image
    width = max(p.shape[1] for p in parts)
    canvas = Image.new("RGB", (width, sum(p.shape[0] for p in parts)), "white")
    y = 0
    for p in parts:
        canvas.paste(Image.fromarray(p), ((width - p.shape[1]) // 2, y))
        y += p.shape[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def schedule_figure(schedules: Sequence[Schedule], names: Sequence[str], title: str) -> np.ndarray:
    from otcache_engine.plotting import plot_schedules
    return figure_to_array(plot_schedules(schedules, names, title=title))
