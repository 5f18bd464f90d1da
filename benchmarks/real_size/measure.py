"""Timed sampling runs of one model: unpatched, and through OTCache's patcher for every operator and N/K.

Why this shape: speed-ups are ratios of wall-clock runs of ComfyUI's own sampler (what a user waits for),
so every configuration runs the same sampler, steps, seed and CFG. A warm-up pass first (kernels, cuBLAS
handles, the allocator's pools, every operator's compute / store / reuse path), then ``repeats`` rounds of
every configuration in a rotating order, so a slow phase of the machine hits each one alike; the fastest
round of each is kept (others only ever add time). ``torch.cuda.synchronize`` brackets each run and the
peak allocated memory is reset before it. A forward pre-hook on the stack's first block counts the
transformer's passes (the NFE actually spent) and the batch each pass saw (CFG batched = 2).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

import sampling
import tiny_models as tm
from otcache_pack.nodes.runtime.patcher import PatchOptions, patch_model
from otcache_pack.otcache_engine import Schedule
from otcache_pack.otcache_engine.schedules.schedule import budget_for_speedup
from .device import synchronize
from .models import Bundle

SPEEDUPS = (2, 3, 4, 5)
WARMUP_STEPS = 3      # compute, reuse, compute: every path of every operator once
UNCACHED = "uncached"


@dataclass(frozen=True)
class Operator:
    """One row group of the table: a short key (``--operators``), a label and its ``PatchOptions`` fields."""

    key: str
    label: str
    options: tuple[tuple[str, object], ...]

    def patch_options(self) -> PatchOptions:
        return PatchOptions(**dict(self.options))


_OMNI_RES = (("reuse", "omnicache"), ("gamma", 1.0), ("space", "residual"))
_TAYLOR_RES = (("reuse", "taylor"), ("order", 1), ("space", "residual"))
_OFFLOAD = (("cache_device", "cpu offload"),)
OPERATORS = (
    Operator("output", "output", (("reuse", "output"),)),
    Operator("omni1-res", "omnicache g=1 residual", _OMNI_RES),
    Operator("taylor1-res", "taylor o=1 residual", _TAYLOR_RES),
    Operator("omni05-out", "omnicache g=0.5 output", (("reuse", "omnicache"), ("gamma", 0.5), ("space", "output"))),
    Operator("omni1-out", "omnicache g=1 output", (("reuse", "omnicache"), ("gamma", 1.0), ("space", "output"))),
    Operator("omni1-res-cpu", "omnicache g=1 residual, cpu offload", _OMNI_RES + _OFFLOAD),
    Operator("taylor1-res-cpu", "taylor o=1 residual, cpu offload", _TAYLOR_RES + _OFFLOAD),
)
BY_KEY = {op.key: op for op in OPERATORS}


@dataclass(frozen=True)
class Run:
    seconds: float
    passes: int
    peak: int | None          # bytes, torch.cuda.max_memory_allocated; None on the CPU


class PassCounter:
    """Counts the block stack's passes and the largest batch one saw, by a pre-hook on its first block."""

    def __init__(self, dm: torch.nn.Module) -> None:
        self.passes, self.batch = 0, 0
        self._handle = tm.stack_blocks(dm)[0][2].register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs) -> None:
        self.passes += 1
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is not None:
            self.batch = max(self.batch, int(first.shape[0]))

    def close(self) -> None:
        self._handle.remove()


def uniform(n: int, k: int) -> Schedule:
    """K computed steps spread evenly over N, the first and the last among them."""
    step = (n - 1) / (k - 1)
    return Schedule(n, tuple(int(round(i * step)) for i in range(k)))


def budget(steps: int, speedup: int) -> int:
    """K for N/K = ``speedup`` (the pack's one rounding; at least the first and the last step)."""
    return budget_for_speedup(steps, speedup, least=2)


def configurations(bundle: Bundle, steps: int, speedups: tuple[int, ...],
                   operators: tuple[Operator, ...]) -> dict[tuple[str, int], object]:
    """(operator label, N/K) -> the model to sample; ("uncached", 1) is the unpatched model itself."""
    models = {(UNCACHED, 1): bundle.patcher}
    for op in operators:
        for s in speedups:
            models[(op.label, s)] = patch_model(bundle.patcher, uniform(steps, budget(steps, s)), op.patch_options())
    return models


def timed_run(model, bundle: Bundle, steps: int, cfg: float, counter: PassCounter) -> Run:
    device = bundle.patcher.load_device
    counter.passes = 0
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(torch.device(device))
    t0 = time.perf_counter()
    sampling.run_sampler(model, bundle, steps, cfg)
    synchronize(torch.device(device))
    seconds = time.perf_counter() - t0
    return Run(seconds, counter.passes, torch.cuda.max_memory_allocated(device) if cuda else None)


def warm_up(bundle: Bundle, cfg: float, counter: PassCounter, operators: tuple[Operator, ...]) -> float:
    """One short run unpatched and one per operator (compute, reuse, compute); returns its wall time."""
    t0 = time.perf_counter()
    timed_run(bundle.patcher, bundle, WARMUP_STEPS, cfg, counter)
    for op in operators:
        model = patch_model(bundle.patcher, Schedule(WARMUP_STEPS, (0, WARMUP_STEPS - 1)), op.patch_options())
        timed_run(model, bundle, WARMUP_STEPS, cfg, counter)
    return time.perf_counter() - t0


Rounds = list[dict[tuple[str, int], Run]]


def measure(bundle: Bundle, steps: int, cfg: float, repeats: int, speedups: tuple[int, ...] = SPEEDUPS,
            operators: tuple[Operator, ...] = OPERATORS,
            on_round: Callable[[Rounds, int], None] | None = None,
            on_warm: Callable[[float], None] | None = None) -> tuple[Rounds, int]:
    """``repeats`` rounds of every configuration after the warm-up, CFG batched as ComfyUI batches it with
    ample free memory. Returns the rounds and the largest batch the transformer saw."""
    counter = PassCounter(bundle.diffusion_model)
    try:
        models = configurations(bundle, steps, speedups, operators)
        names = list(models)
        rounds: Rounds = []
        with sampling.forced_batched_cfg():
            warm = warm_up(bundle, cfg, counter, operators)
            if on_warm is not None:
                on_warm(warm)
            for i in range(repeats):
                order = names[i % len(names):] + names[:i % len(names)]
                done = {key: timed_run(models[key], bundle, steps, cfg, counter) for key in order}
                rounds.append({key: done[key] for key in names})
                if on_round is not None:
                    on_round(rounds, counter.batch)
        return rounds, counter.batch
    finally:
        counter.close()
