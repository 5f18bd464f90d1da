"""Calibration records of the toy model: one ``CalibrationRun`` per (class, seed) pair.

A ``Recorder`` watches an uncached ``sampler.sample`` call (as its probe) and keeps, per
sample, what method.md §2.1 asks for: x_0..x_N, v_0..v_{N-1} (after CFG), per-token
block-stack residual norms of both CFG streams, and the scalar signals of the dynamic
baselines -- TeaCache's rel-L1 change of the block-0 modulated input, FBCache's rel-L1
change of the first-block residual, MagCache's residual-norm ratio (with its std and
cosine distance), plus the signals derived from x and v (EasyCache k, curvature). One
batched run records many pairs at once; every quantity is reduced per sample.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from otcache_engine.calibration.calibration_run import EPS, CalibrationRun
from .model import ToyDiT
from .sampler import STREAMS, SampleResult, sample


def _per_sample_rel_l1(now: torch.Tensor, before: torch.Tensor, batch: int) -> torch.Tensor:
    """mean|now - before| / mean|before| per sample, both CFG rows of a sample pooled."""
    diff = (now - before).abs().view(2, batch, -1).mean(dim=(0, 2))
    base = before.abs().view(2, batch, -1).mean(dim=(0, 2))
    return diff / base.clamp_min(EPS)


class Recorder:
    """Probe that accumulates per-step signals of one batched uncached run."""

    def __init__(self, batch: int):
        self.batch = batch
        self.prev_mod: torch.Tensor | None = None
        self.prev_first: torch.Tensor | None = None
        self.prev_res: torch.Tensor | None = None
        self.teacache: list[torch.Tensor] = []
        self.fbcache: list[torch.Tensor] = []
        self.mag_ratio: list[torch.Tensor] = []
        self.mag_std: list[torch.Tensor] = []
        self.mag_cos: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []             # (2B, T) per step
        self.outputs: list[torch.Tensor] = []
        self.step_times: list[float] = []
        self._t0 = time.perf_counter()

    def _change(self, prev: torch.Tensor | None, now: torch.Tensor) -> torch.Tensor:
        if prev is None:
            return torch.zeros(self.batch)
        return _per_sample_rel_l1(now, prev, self.batch)

    def on_evaluation(self, step: int, x: torch.Tensor, h_in: torch.Tensor, c: torch.Tensor,
                      model: ToyDiT) -> None:
        mod = model.blocks[0].modulated_input(h_in, c)
        first = model.blocks[0](h_in, c) - h_in
        self.teacache.append(self._change(self.prev_mod, mod))
        self.fbcache.append(self._change(self.prev_first, first))
        self.prev_mod, self.prev_first = mod, first

    def on_blocks(self, step: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        r = h_out - h_in
        norms = r.norm(dim=-1)                              # (2B, T): per-token L2 norm
        b = self.batch
        if self.prev_res is None:
            ones, zeros = torch.ones(b), torch.zeros(b)
            self.mag_ratio.append(ones), self.mag_std.append(zeros), self.mag_cos.append(zeros)
        else:
            ratio = (norms / self.prev_res.norm(dim=-1).clamp_min(EPS)).view(2, b, -1)
            cos = torch.nn.functional.cosine_similarity(r, self.prev_res, dim=-1).view(2, b, -1)
            self.mag_ratio.append(ratio.mean(dim=(0, 2)))
            self.mag_std.append(ratio.std(dim=2).mean(dim=0))
            self.mag_cos.append((1 - cos).mean(dim=(0, 2)))
        self.prev_res = r
        self.norms.append(norms)

    def on_velocity(self, step: int, v: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor) -> None:
        self.outputs.append(v.clone())
        now = time.perf_counter()
        self.step_times.append(now - self._t0)
        self._t0 = now

    def runs(self, result: SampleResult, sigmas: torch.Tensor, labels: Sequence[int], seeds: Sequence[int],
             meta: dict) -> list[CalibrationRun]:
        """Split the batched record into one CalibrationRun per sample."""
        latents = torch.stack(result.trajectory, dim=1)      # (B, N+1, C, H, W)
        outputs = torch.stack(self.outputs, dim=1)           # (B, N, C, H, W)
        norms = torch.stack(self.norms, dim=1)               # (2B, N, T)
        per_step = lambda xs: torch.stack(xs, dim=1).double().numpy()  # noqa: E731 - (B, N)
        tea, fb = per_step(self.teacache), per_step(self.fbcache)
        ratio, std, cos = per_step(self.mag_ratio), per_step(self.mag_std), per_step(self.mag_cos)
        times = np.asarray(self.step_times) / self.batch
        out = []
        for i, (label, seed) in enumerate(zip(labels, seeds)):
            signals = {"teacache_rel_l1": tea[i], "fbcache_rel_l1": fb[i], "magcache_ratio": ratio[i],
                       "magcache_std": std[i], "magcache_cos": cos[i], "step_time": times}
            streams = {name: norms[k * self.batch + i] for k, name in enumerate(STREAMS)}
            run = CalibrationRun(sigmas=sigmas.double(), latents=latents[i], outputs=outputs[i],
                                 residual_norms=streams, signals=signals,
                                 meta={**meta, "prompt_id": f"class{int(label)}", "seed": int(seed),
                                       "steps": len(sigmas) - 1})
            out.append(run.with_derived_signals())
        return out


@torch.no_grad()
def record_runs(model: ToyDiT, labels: Sequence[int], seeds: Sequence[int], sigmas: torch.Tensor,
                cfg_scale: float, meta: dict | None = None) -> list[CalibrationRun]:
    """Uncached runs of every (label, seed) pair, recorded (one batched sampling call)."""
    from .sampler import initial_noise
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    recorder = Recorder(len(labels_t))
    result = sample(model, labels_t, initial_noise(seeds), sigmas, cfg_scale, probe=recorder,
                    keep_trajectory=True)
    base = {"model_family": "toy-dit", "sampler": "euler", "scheduler": "flow-shift", "cfg": cfg_scale,
            "resolution": [32, 32], **(meta or {})}
    return recorder.runs(result, sigmas, list(labels), list(seeds), base)
