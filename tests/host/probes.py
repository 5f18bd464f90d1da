"""Counters the runtime tests read: diffusion-model calls, model evaluations and real block executions.

A ``ModelProbe`` attaches to a clone through ComfyUI's keyed wrappers (never touching the original patcher):
- ``DIFFUSION_MODEL`` wrapper: one record per call of the DiT's forward, with the sigmas, batch size,
  ``cond_or_uncond``, ``uuids`` and the sampler's ``sample_sigmas`` found in ``transformer_options``;
- ``CALC_COND_BATCH`` wrapper: one count per model evaluation (split CFG makes 2 calls per evaluation);
- a forward hook on the *last* block of the stack, registered only for the duration of each call of this
  clone, counts blocks that really ran: a cache that skips the stack never reaches the original last block.

Wrappers run in the order they were added (the first added is outermost): attach the probe before applying
OTCache to see every call the sampler makes, after it to see only the calls that reach the model.
The wrappers are closures, not bound methods, so ``copy.deepcopy`` of model options (ComfyUI v0.3.64's
``clone``) shares them instead of copying the counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from comfy_host import ensure_comfy_importable

ensure_comfy_importable()

import comfy.patcher_extension as pe  # noqa: E402

from tiny_models import stack_blocks  # noqa: E402

PROBE_KEY = "otcache_test_probe"


@dataclass
class CallRecord:
    """One diffusion-model call."""

    sigmas: list[float]
    batch: int
    cond_or_uncond: list[int]
    uuids: list
    sample_sigmas: list[float]
    block_runs: int = 0


@dataclass
class ModelProbe:
    """Call, evaluation and block-execution counts of one patched clone."""

    calls: list[CallRecord] = field(default_factory=list)
    evaluations: int = 0

    @property
    def n_calls(self) -> int:
        return len(self.calls)

    @property
    def block_runs(self) -> int:
        """Executions of the stack's last block, over all calls."""
        return sum(c.block_runs for c in self.calls)

    @property
    def call_sigmas(self) -> list[float]:
        """The sigma of each call (first row; every row of a call has the same sigma in ComfyUI)."""
        return [c.sigmas[0] for c in self.calls]

    def reset(self) -> None:
        self.calls.clear()
        self.evaluations = 0

    def attach(self, model_patcher, key: str = PROBE_KEY):
        """A clone of ``model_patcher`` with this probe's wrappers; the original is left unchanged."""
        clone = model_patcher.clone()
        clone.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, key, _diffusion_wrapper(self))
        clone.add_wrapper_with_key(pe.WrappersMP.CALC_COND_BATCH, key, _evaluation_wrapper(self))
        return clone


def find_transformer_options(args: tuple, kwargs: dict) -> dict:
    """``transformer_options`` by content: its position differs per family and per ComfyUI version."""
    opts = kwargs.get("transformer_options")
    if isinstance(opts, dict):
        return opts
    for arg in reversed(args):
        if isinstance(arg, dict) and "sigmas" in arg:
            return arg
    return {}


def _floats(value: Any) -> list[float]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.detach().flatten().cpu()]
    return [float(v) for v in value]


def _diffusion_wrapper(probe: ModelProbe):
    def wrapper(executor, *args, **kwargs):
        opts = find_transformer_options(args, kwargs)
        x = args[0] if args else kwargs.get("x")
        x = x[0] if isinstance(x, (list, tuple)) else x  # v0.33 may pass several latent streams
        record = CallRecord(sigmas=_floats(opts.get("sigmas")), batch=int(x.shape[0]),
                            cond_or_uncond=list(opts.get("cond_or_uncond", [])),
                            uuids=list(opts.get("uuids", [])), sample_sigmas=_floats(opts.get("sample_sigmas")))
        probe.calls.append(record)
        last = stack_blocks(executor.class_obj)[-1][2]

        def count(_module, _inputs, _output):
            record.block_runs += 1

        handle = last.register_forward_hook(count)
        try:
            return executor(*args, **kwargs)
        finally:
            handle.remove()

    return wrapper


def _evaluation_wrapper(probe: ModelProbe):
    def wrapper(executor, *args, **kwargs):
        probe.evaluations += 1
        return executor(*args, **kwargs)

    return wrapper


def attach_probe(model_patcher, key: str = PROBE_KEY):
    """Convenience: ``(probed clone, probe)``."""
    probe = ModelProbe()
    return probe.attach(model_patcher, key), probe
