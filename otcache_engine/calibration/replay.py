"""The zero-call replay simulator: the Euler sampler re-run with a schedule from a recorded run.

Computed steps take the run's stored outputs, skipped steps a reuse rule, so no model call is made. It gives
the landing latent of a cached segment (where a tail re-run of the global and hybrid edge errors starts)
and the exact final error of output reuse on one segment (method.md Appendix A: the plain E1 weight of an
edge equals it).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .calibration_run import CalibrationRun
from ..errors import ScheduleError
from ..schedules.schedule import Schedule

EPS = 1e-12
REUSE_RULES = ("output", "transform")   # R0 output reuse, R2 transformation reuse (EasyCache)


def _mask_of(schedule: Schedule | Sequence[Any], num_steps: int) -> list[bool]:
    if isinstance(schedule, Schedule):
        if schedule.num_steps != num_steps:
            raise ScheduleError(f"the schedule has {schedule.num_steps} steps, the calibration run {num_steps}")
        return list(schedule.mask)
    mask = list(schedule)
    if len(mask) != num_steps or not all(m in (0, 1, True, False) for m in mask):
        raise ScheduleError(f"expected a Schedule or a 0/1 mask of length {num_steps}")
    mask = [bool(m) for m in mask]
    if not mask[0]:
        raise ScheduleError("step 0 must be computed (there is nothing to reuse before it)")
    return mask


def segment_mask(num_steps: int, i: int, j: int) -> list[bool]:
    """Mask that computes every step except ``i+1 .. j-1`` (the segment of edge ``(i -> j)``; ``j`` may be N)."""
    if not (0 <= i < j <= num_steps):
        raise ScheduleError(f"edge ({i} -> {j}) is out of range for {num_steps} steps")
    return [not (i < n < j) for n in range(num_steps)]


def replay(run: CalibrationRun, schedule: Schedule | Sequence[Any], reuse: str = "output",
           return_trajectory: bool = False) -> torch.Tensor:
    """Replay the Euler sampler with a schedule, without a model call.

    Computed steps take the stored output ``v_n`` of the run (exact for the steps before the first reuse,
    an approximation after it); a skipped step ``n`` with last compute ``c`` uses ``v_hat_n = v_c`` (R0,
    ``reuse="output"``) or ``v_hat_n = x_hat_n + (v_c - x_hat_c)`` (R2, ``reuse="transform"``).
    The deviation from the stored trajectory is integrated in float64 (``x_hat_n = x_n + d_n``), so an
    all-computed schedule returns ``x_N`` exactly. Returns the final latent (float64, the run's sample
    shape), or with ``return_trajectory`` the (N+1, *shape) latents ``x_hat_0 .. x_hat_N``.
    """
    if reuse not in REUSE_RULES:
        raise ScheduleError(f"unknown reuse rule {reuse!r}; expected one of {REUSE_RULES}")
    n = run.num_steps
    mask = _mask_of(schedule, n)
    x = run.x
    v = run.v
    sig = run.sigmas.double()
    d = torch.zeros(x.shape[1], dtype=torch.float64)
    traj = [x[0].double()] if return_trajectory else None
    c = 0
    base = None                                    # R2: v_c - x_hat_c
    for step in range(n):
        ds = float(sig[step + 1] - sig[step])
        if mask[step]:
            c = step
            if reuse == "transform":
                base = v[c].double() - (x[c].double() + d)
        else:
            if reuse == "output":
                d = d + ds * (v[c].double() - v[step].double())
            else:
                vhat = x[step].double() + d + base
                d = d + ds * (vhat - v[step].double())
        if traj is not None:
            traj.append(x[step + 1].double() + d)
    if traj is not None:
        return torch.stack(traj).reshape((n + 1,) + run.sample_shape)
    return (x[n].double() + d).reshape(run.sample_shape)


def final_error(run: CalibrationRun, schedule: Schedule | Sequence[Any], reuse: str = "output",
                relative: bool = False) -> float:
    """``||x_hat_N - x_N||_1`` of :func:`replay` (``/ ||x_N||_1`` when ``relative``)."""
    xn = run.latents[-1].double()
    err = float((replay(run, schedule, reuse) - xn).abs().mean())
    if relative:
        err /= max(float(xn.abs().mean()), EPS)
    return err


def landing_latent(run: CalibrationRun, i: int, j: int, reuse: str = "output") -> torch.Tensor:
    """``x_hat_j``: the latent the cached segment ``i -> j`` lands on (zero calls; float32, sample shape).

    This is the starting state of the tail re-run of a global edge and of a look-ahead call.
    """
    n = run.num_steps
    if not (0 <= i < j <= n):
        raise ScheduleError(f"edge ({i} -> {j}) is out of range for {n} steps")
    if reuse not in REUSE_RULES:
        raise ScheduleError(f"unknown reuse rule {reuse!r}; expected one of {REUSE_RULES}")
    x, v = run.x, run.v
    sig = run.sigmas.double()
    d = torch.zeros(x.shape[1], dtype=torch.float64)
    vi = v[i].double()
    base = vi - x[i].double()
    for step in range(i + 1, j):
        vhat = vi if reuse == "output" else x[step].double() + d + base
        d = d + float(sig[step + 1] - sig[step]) * (vhat - v[step].double())
    return (x[j].double() + d).float().reshape(run.sample_shape)
