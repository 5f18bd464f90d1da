"""Time the interpolation stage: one OT interpolation at N=50, retargeting, and the projection alone.

Prints figures; asserts nothing (the issue's target: one interpolation under 1 ms).
Run: .venv/bin/python benchmarks/bench_transport.py
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otcache_engine.schedules import schedule_io  # noqa: E402
from otcache_engine.schedules.projection import project  # noqa: E402
from otcache_engine.schedules.transport import interpolate  # noqa: E402
from otcache_engine.schedules.warp import retarget  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def per_call_ms(fn, calls: int) -> float:
    """Best of 5 repeats of ``calls`` calls, in ms per call (best-of filters out noise from other processes)."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3


def flux_sigmas(n: int, mu: float) -> list[float]:
    s = np.linspace(1.0, 1.0 / n, n)
    return list(np.exp(mu) / (np.exp(mu) + (1.0 / s - 1.0))) + [0.0]


def main() -> None:
    ref = schedule_io.load(DATA / "lemica_flux1_dev_b26.json")
    anc = schedule_io.load(DATA / "lemica_flux1_dev_b10.json")
    budgets = range(anc.budget, ref.budget + 1)
    rows = [
        ("interpolate N=50, every K in 10..26 (ms per interpolation)",
         lambda: [interpolate(ref, anc, k) for k in budgets], len(budgets)),
        ("interpolate N=50, K=15 (ms)", lambda: interpolate(ref, anc, 15), 1),
        ("interpolate N=50, K=15, sigma coordinate (ms)",
         lambda: interpolate(ref.replace(sigmas=sig50), anc.replace(sigmas=sig50), 15, coord="sigma"), 1),
        ("retarget K=26 N=50 -> N=30 (ms)", lambda: retarget(ref, 30), 1),
        ("retarget K=26 N=50 -> N=100 (ms)", lambda: retarget(ref, 100), 1),
        ("retarget K=26 N=50 -> sigma grid mu=0.5 (ms)",
         lambda: retarget(ref.replace(sigmas=sig50), 50, sigmas=sig50_512), 1),
        ("project K=15 on N=50, L=7, DP path (ms)", lambda: project(y_bad, 50, 7), 1),
        ("project K=250 on N=1000, L=15, DP path (ms)", lambda: project(y_big, 1000, 15), 1),
    ]
    for label, fn, per in rows:
        print(f"{label:<62} {per_call_ms(fn, 200 // per if per > 1 else 200) / per:8.4f}")


sig50 = flux_sigmas(50, 1.15)
sig50_512 = flux_sigmas(50, 0.5)
y_bad = 49 * np.linspace(0, 1, 15) ** 2.5  # crowded head, last gap > 7: rounding fails, the DP runs
y_big = 999 * np.linspace(0, 1, 250) ** 2.5

if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main()
