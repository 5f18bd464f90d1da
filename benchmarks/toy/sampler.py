"""Standalone adapter: sample the toy DiT with the same cache runtime as inside ComfyUI.

Euler flow matching (``x_{n+1} = x_n + (sigma_{n+1} - sigma_n) v_n``) with classifier-free
guidance, the conditional and unconditional branches being two cache *streams* of one
evaluation. Whether a step runs the block stack is asked of a ``CacheSession``
(``otcache_engine.runtime``): this module holds no decision logic of its own, only the
model-side plumbing the ComfyUI patcher does for real DiTs:

- residual reuse: embed and head always run, the block stack is replaced by ``h + r_c``;
- output / omnicache reuse: the whole evaluation is replaced by the session's prediction;
- EasyCache's transformation reuse and FBCache's always-run first block are the same
  plumbing with another cached quantity (``space``, ``front_blocks``).

``session=None`` runs every step (the uncached reference). A ``Probe`` can watch every
evaluation to record the signals the dynamic baselines use (see ``toy.calibrate``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from .model import ToyDiT

STREAMS = ("cond", "uncond")
SPACES = ("residual", "output", "transform")


def flow_sigmas(steps: int, shift: float) -> torch.Tensor:
    """N+1 noise levels 1 -> 0, time-shifted as in SD3/FLUX: sigma = shift*t / (1 + (shift-1)*t)."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...] = (3, 32, 32)) -> torch.Tensor:
    """One independent Gaussian per seed, so a sample depends on its own seed only."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


class Probe(Protocol):
    """Optional observer of one sampling run (used for calibration records)."""

    def on_evaluation(self, step: int, x: torch.Tensor, h_in: torch.Tensor, c: torch.Tensor,
                      model: ToyDiT) -> None: ...
    def on_blocks(self, step: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None: ...
    def on_velocity(self, step: int, v: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor) -> None: ...


@dataclass
class SampleResult:
    x: torch.Tensor                       # final latent = image in [-1, 1] (B, 3, 32, 32)
    block_runs: int = 0                   # block-stack executions (steps, both branches count once)
    trajectory: list[torch.Tensor] = field(default_factory=list)


def _guided(v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    v_cond, v_uncond = v.chunk(2)
    return v_uncond + scale * (v_cond - v_uncond), v_cond, v_uncond


class _Evaluator:
    """One model evaluation of both CFG branches, computing or reusing as the session decides.

    What is cached (the session's operator space, or ``space`` when given):
    ``residual`` -- Blocks[front:](h) - h of the image tokens, embed/head always run;
    ``output`` -- each branch's velocity (the whole network is skipped);
    ``transform`` -- EasyCache's transformation v - x, reused as x_n + (v_c - x_c).
    ``front`` blocks always run (FBCache runs its first block as a probe every step).
    """

    def __init__(self, model: ToyDiT, session, space: str, front: int, probe: Probe | None):
        self.model, self.session, self.space, self.front, self.probe = model, session, space, front, probe
        self.block_runs = 0

    def __call__(self, step: int, x2: torch.Tensor, sigma: float, y2: torch.Tensor) -> torch.Tensor:
        decision = self._decide(sigma)
        reuse = decision is not None and not decision.compute
        if reuse and self.space in ("output", "transform"):
            cached = self.session.predict_batch(STREAMS, decision)
            if cached is not None:
                self.session.note_call(False, d=decision)
                return x2 + cached if self.space == "transform" else cached
        h, c = self.model.embed(x2, torch.tensor(sigma), y2)
        if self.probe is not None:
            self.probe.on_evaluation(step, x2, h, c, self.model)
        h_front = self.model.run_blocks(h, c, 0, self.front) if self.front else h
        if reuse and self.space == "residual":
            residual = self.session.predict_batch(STREAMS, decision)
            if residual is not None:
                self.session.note_call(False, d=decision)
                return self.model.head(h_front + residual, c)
        h_out = self.model.run_blocks(h_front, c, self.front)
        self.block_runs += 1
        if self.probe is not None:
            self.probe.on_blocks(step, h, h_out)
        v = self.model.head(h_out, c)
        if decision is not None:
            self.session.note_call(True, forced=reuse, d=decision)
            self.session.store_batch(STREAMS, self._cached_value(h_front, h_out, v, x2), decision)
        return v

    def _cached_value(self, h_front: torch.Tensor, h_out: torch.Tensor, v: torch.Tensor,
                      x2: torch.Tensor) -> torch.Tensor:
        if self.space == "residual":
            return h_out - h_front
        return v - x2 if self.space == "transform" else v

    def _decide(self, sigma: float):
        if self.session is None:
            return None
        self.session.begin_evaluation()
        return self.session.decide(float(sigma))


@torch.no_grad()
def sample(model: ToyDiT, labels: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor,
           cfg_scale: float, session=None, space: str | None = None, front_blocks: int = 0,
           probe: Probe | None = None, keep_trajectory: bool = False,
           on_step: Callable[[int], None] | None = None) -> SampleResult:
    """Euler sampling from ``noise`` along ``sigmas`` (N+1 values, 1 -> 0) with CFG.

    ``session``: a ``runtime.CacheSession`` (None: every step computes). ``space``: what is
    cached -- default the session operator's space ("residual" or "output"); "transform"
    (EasyCache) needs an output-space operator. ``front_blocks``: blocks that run at every
    step, the cached residual then covering the blocks after them (FBCache).
    """
    space = space or (session.reuse.space if session is not None else "residual")
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if not 0 <= front_blocks < model.config.depth:
        raise ValueError(f"front_blocks must be in [0, {model.config.depth - 1}], got {front_blocks}")
    if front_blocks and space != "residual":
        raise ValueError("front_blocks needs residual caching (the front blocks feed the cached residual)")
    null = torch.full_like(labels, model.config.null_class)
    y2 = torch.cat([labels, null])
    evaluate = _Evaluator(model, session, space, front_blocks, probe)
    x = noise.clone().float()
    trajectory = [x.clone()] if keep_trajectory else []
    for n in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[n]), float(sigmas[n + 1])
        v, v_cond, v_uncond = _guided(evaluate(n, torch.cat([x, x]), sigma, y2), cfg_scale)
        if probe is not None:
            probe.on_velocity(n, v, v_cond, v_uncond)
        x = x + (sigma_next - sigma) * v
        if keep_trajectory:
            trajectory.append(x.clone())
        if on_step is not None:
            on_step(n)
    return SampleResult(x=x, block_runs=evaluate.block_runs, trajectory=trajectory)
