"""Timing of the reference-schedule DP (not a test): every budget from one table.

Usage: python benchmarks/bench_graph.py [--repeats 15]

Prints the median (and min) wall time of ``reference_schedules`` for all budgets at
N = 50 (L = 7) and N = 100 (L = 15), for the leximax, additive and bottleneck objectives,
on two weight matrices: E1 weights of a synthetic curved run (ties are rare) and
quantised random weights (many ties). Targets (issue 2): N = 50 under 50 ms, N = 100 under 200 ms.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from otcache_engine.calibration.calibration_run import CalibrationRun  # noqa: E402
from otcache_engine.calibration.edge_errors import allowed_edges, e1_weights  # noqa: E402
from otcache_engine.schedules.graph_search import reference_schedules  # noqa: E402

TARGET_MS = {50: 50.0, 100: 200.0}


def synthetic_run(n: int, d: int = 256, seed: int = 0) -> CalibrationRun:
    """A curved flow-matching-like trajectory: v_n rotates and grows along the sigma grid."""
    g = torch.Generator().manual_seed(seed)
    s = np.linspace(1.0, 1.0 / n, n)
    sig = np.concatenate([np.e / (np.e + (1.0 / s - 1.0)), [0.0]])
    a, b = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    t = torch.tensor(1.0 - sig[:-1])
    v = torch.cos(2.5 * t)[:, None] * a + (1 + 3 * t ** 2)[:, None] * torch.sin(2.5 * t)[:, None] * b
    x = [torch.randn(d, generator=g, dtype=torch.float64)]
    for k in range(n):
        x.append(x[-1] + (sig[k + 1] - sig[k]) * v[k])
    return CalibrationRun(sig, torch.stack(x), v)


def tied_random(n: int, L: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ok = allowed_edges(n, L)
    w = np.where(ok, rng.integers(1, 20, size=ok.shape) / 10.0, np.inf)
    idx = np.arange(n - 1)
    w[idx, idx + 1] = 0.0
    return w


def bench(w: np.ndarray, L: int, objective: str, repeats: int) -> tuple[float, float, int]:
    times = []
    out = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = reference_schedules(w, max_gap=L, objective=objective)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), 1e3 * min(times), len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    print(f"reference_schedules, every budget from one DP table; median / min of {args.repeats} runs")
    print(f"{'N':>4} {'L':>3} {'weights':<8} {'objective':<10} {'budgets':>7} {'median ms':>10} {'min ms':>8}  target")
    for n, L in ((50, 7), (100, 15)):
        mats = {"E1": e1_weights(synthetic_run(n), L), "tied": tied_random(n, L)}
        for name, w in mats.items():
            for objective in ("leximax", "additive", "bottleneck"):
                med, best, count = bench(w, L, objective, args.repeats)
                ok = "ok" if med < TARGET_MS[n] else "SLOW"
                print(f"{n:>4} {L:>3} {name:<8} {objective:<10} {count:>7} {med:>10.2f} {best:>8.2f}  "
                      f"< {TARGET_MS[n]:.0f} ms {ok}")
    t0 = time.perf_counter()
    e1_weights(synthetic_run(50, d=4096 * 64), 7)
    print(f"E1 weights, N=50, L=7, FLUX-size latent (4096x64): {1e3 * (time.perf_counter() - t0):.0f} ms")


if __name__ == "__main__":
    main()
