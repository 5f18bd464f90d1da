"""Synthetic calibration data for the engine tests (no model weights needed).

``MixtureModel`` is the exact flow-matching velocity of an element-wise two-component Gaussian
mixture target (x_sigma = (1 - sigma) x_data + sigma * eps, v = E[eps - x_data | x_sigma]), so runs
have real, curved trajectories and the "model" can be called at perturbed latents (tail re-runs,
look-ahead) like a host would.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from otcache_engine.calibration.calibration_run import CalibrationRun


def flux_sigmas(n: int, mu: float = 1.15) -> np.ndarray:
    """FLUX-style shifted sigma grid (method.md §1.1), N+1 values ending in 0."""
    s = np.linspace(1.0, 1.0 / n, n)
    sig = math.exp(mu) / (math.exp(mu) + (1.0 / s - 1.0))
    return np.concatenate([sig, [0.0]])


class MixtureModel:
    def __init__(self, shape=(3, 8), seed: int = 0, spread: float = 1.5, std: float = 0.3):
        g = torch.Generator().manual_seed(seed)
        d = int(np.prod(shape))
        self.shape = tuple(shape)
        self.mu = torch.randn(2, d, generator=g, dtype=torch.float64) * spread
        self.s2 = std ** 2
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.calls += 1
        y = x.reshape(-1).double()
        a = 1.0 - sigma
        var = a * a * self.s2 + sigma * sigma
        vs, logp = [], []
        for k in range(2):
            m = a * self.mu[k]
            r = y - m
            vs.append((sigma - a * self.s2) * r / var - self.mu[k])
            logp.append(-0.5 * r * r / var)
        lp = torch.stack(logp)
        w = torch.softmax(lp, dim=0)
        v = w[0] * vs[0] + w[1] * vs[1]
        return v.reshape(self.shape)


def sample(model, x0: torch.Tensor, sigmas, mask=None, start: int = 0, x_start=None) -> tuple[list, list]:
    """Euler sampler with output reuse (R0) on skipped steps; returns (latents, outputs)."""
    n = len(sigmas) - 1
    x = (x0 if x_start is None else x_start).double()
    xs, vs = [x], []
    cached = None
    for step in range(start, n):
        if mask is None or mask[step] or cached is None:
            cached = model(x, float(sigmas[step]))
        vs.append(cached)
        x = x + (float(sigmas[step + 1]) - float(sigmas[step])) * cached
        xs.append(x)
    return xs, vs


def make_run(n: int = 12, shape=(3, 8), seed: int = 0, model: MixtureModel | None = None,
             meta: dict | None = None) -> CalibrationRun:
    model = model or MixtureModel(shape, seed)
    g = torch.Generator().manual_seed(1000 + seed)
    x0 = torch.randn(model.shape, generator=g, dtype=torch.float64)
    sig = flux_sigmas(n)
    xs, vs = sample(model, x0, sig)
    return CalibrationRun(sigmas=sig, latents=torch.stack(xs).float(), outputs=torch.stack(vs).float(),
                          meta=meta if meta is not None else {"model_family": "toy", "steps": n, "seed": seed})
