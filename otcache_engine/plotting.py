"""Pictures of schedules: one row of cells per schedule, computed vs reused.

matplotlib is an optional extra (ComfyUI users do not need it to run
schedules), so it is imported only when a picture is asked for, and its absence
is one clear error instead of an ImportError at start-up.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .errors import OTCacheError
from .schedules.schedule import Schedule

COMPUTED = "#1f5fa8"
REUSED = "#e3e8ef"


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise OTCacheError("plotting needs matplotlib: pip install matplotlib") from None
    return Figure


def row_label(schedule: Schedule, name: str | None = None) -> str:
    """'name  K=26/50  1.92x': what a reader compares between rows."""
    head = f"{name}  " if name else ""
    return f"{head}K={schedule.budget}/{schedule.num_steps}  {schedule.speedup:.2f}x"


def plot_schedules(schedules: Sequence[Schedule], names: Sequence[str] | None = None,
                   title: str | None = None, show_sigmas: bool = True) -> Any:
    """A matplotlib Figure with one row per schedule (row 0 on top).

    With ``show_sigmas`` and at least one schedule carrying its sigma grid, a
    panel above the rows shows sigma against the step index.
    """
    if not schedules:
        raise OTCacheError("nothing to plot: give at least one schedule")
    names = list(names) if names is not None else [None] * len(schedules)
    sigma_source = next((s for s in schedules if s.sigmas is not None), None) if show_sigmas else None
    fig = _new_figure(len(schedules), max(s.num_steps for s in schedules), sigma_source is not None)
    axes = fig.subplots(2 if sigma_source else 1, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [1, max(1.0, len(schedules) / 2)]} if sigma_source else None)
    rows = axes[-1][0]
    _draw_rows(rows, schedules, names)
    if sigma_source is not None:
        _draw_sigmas(axes[0][0], sigma_source)
    if title:
        fig.suptitle(title)
    return fig


def save_plot(schedules: Sequence[Schedule], path: str | os.PathLike, names: Sequence[str] | None = None,
              title: str | None = None, show_sigmas: bool = True) -> Path:
    fig = plot_schedules(schedules, names, title, show_sigmas)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _new_figure(rows: int, steps: int, with_sigmas: bool) -> Any:
    width = min(16.0, 4.0 + 0.16 * steps)
    height = 0.9 + 0.38 * rows + (1.6 if with_sigmas else 0.0)
    return _figure_class()(figsize=(width, height), layout="constrained")


def _draw_rows(ax: Any, schedules: Sequence[Schedule], names: Sequence[str | None]) -> None:
    from matplotlib.patches import Rectangle
    for row, (s, name) in enumerate(zip(schedules, names)):
        y = len(schedules) - 1 - row
        for n, computed in enumerate(s.mask):
            ax.add_patch(Rectangle((n, y + 0.1), 0.92, 0.8, color=COMPUTED if computed else REUSED, lw=0))
    ax.set_xlim(0, max(s.num_steps for s in schedules))
    ax.set_ylim(0, len(schedules))
    ax.set_yticks([len(schedules) - 1 - r + 0.5 for r in range(len(schedules))])
    ax.set_yticklabels([row_label(s, n) for s, n in zip(schedules, names)], fontsize=8)
    ax.set_xlabel("sampling step (dark: transformer computed, light: cache reused)")
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def _draw_sigmas(ax: Any, schedule: Schedule) -> None:
    sig = schedule.sigmas
    ax.plot([n + 0.46 for n in range(len(sig))], sig, color="#444444", lw=1.2)
    ax.set_ylabel("sigma", fontsize=8)
    ax.grid(alpha=0.3)
