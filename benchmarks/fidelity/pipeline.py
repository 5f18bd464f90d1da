"""The user's pipeline, through the pack's own nodes: Calibrate -> Anchor Search -> Apply, and core caches.

Every stage is the node's ``execute`` (what ComfyUI runs when a workflow executes), with the node's defaults
unless the benchmark varies that input on purpose. Prompts reach the nodes as CONDITIONING, the way a text
encoder's output would: the first calibration prompt as ``positive``, the others as the entries of
``more_prompts`` (what Conditioning (Combine) makes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import setups
from .sampling import Pair


@dataclass(frozen=True)
class Stage:
    """Settings shared by the stages of one benchmark cell."""

    setup: setups.Setup
    steps: int
    calibration: tuple[Pair, ...]     # prompt k with seed (first seed + k), as Calibrate pairs them

    @property
    def seed(self) -> int:
        return self.calibration[0].seed

    def sampler_inputs(self) -> dict[str, Any]:
        s = self.setup
        return {"positive": s.conditioning([self.calibration[0].prompt]), "negative": s.negative(1),
                "latent_image": {"samples": s.empty_latent(1)}, "seed": self.seed, "steps": self.steps,
                "cfg": s.cfg, "sampler_name": s.sampler, "scheduler": s.scheduler, "denoise": 1.0}

    def more_prompts(self) -> list | None:
        entries = [self.setup.conditioning([p.prompt])[0] for p in self.calibration[1:]]
        return entries or None


def calibrate(model: Any, stage: Stage, **inputs: Any) -> tuple[Any, Any]:
    """OTCache Calibrate on the calibration prompts: (reference, calibration)."""
    from otcache_pack.nodes.calibrate_node import Calibrate

    out = Calibrate.execute(model, **stage.sampler_inputs(), more_prompts=stage.more_prompts(), **inputs)
    return out.args[0], out.args[1]


def anchor_search(model: Any, stage: Stage, reference: Any, calibration: Any, **inputs: Any) -> Any:
    """OTCache Anchor Search, judged on the calibration's pairs (its default when a calibration is connected)."""
    from otcache_pack.nodes.anchor_node import AnchorSearch

    out = AnchorSearch.execute(model, **stage.sampler_inputs(), reference=reference, calibration=calibration,
                               **inputs)
    return out.args[0]


def apply(model: Any, **inputs: Any) -> Any:
    """OTCache Apply: the patched clone."""
    from otcache_pack.nodes.apply_node import OTCacheApply

    return OTCacheApply.execute(model, **inputs).args[0]


def core_cache(model: Any, kind: str, threshold: float) -> Any:
    """ComfyUI's EasyCache or LazyCache node with its default window, at ``threshold``.

    EasyCache adds its cached difference to the diffusion model's input *in place*. With float32 weights
    (CPU, as here) that input is the sampler's own latent -- ComfyUI casts it to the weight dtype, which
    copies only when the dtypes differ -- so the skipped step corrupts the state it continues from (7 dB
    instead of 33 dB measured on one pair). With the bf16 / fp16 weights users run on a GPU, the model gets
    a copy. The benchmark hands EasyCache a copy too, so it is judged as users meet it.
    """
    import comfy.patcher_extension as pe
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode

    node = {"easycache": EasyCacheNode, "lazycache": LazyCacheNode}[kind]
    defaults = {i.id: i.default for i in node.define_schema().inputs if getattr(i, "default", None) is not None}
    base = model.clone()
    base.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "fidelity_bench_copy", _copy_input)
    return node.execute(base, reuse_threshold=threshold, start_percent=defaults.get("start_percent", 0.15),
                        end_percent=defaults.get("end_percent", 0.95), verbose=False).args[0]


def _copy_input(executor: Any, *args: Any, **kwargs: Any) -> Any:
    return executor(args[0].clone(), *args[1:], **kwargs)


class PassCounter:
    """Counts transformer passes (the first block's forward calls) while in use."""

    def __init__(self, model: Any):
        from tiny_models import stack_blocks   # tests/host: the block stack of every family

        self.block: torch.nn.Module = stack_blocks(model.get_model_object("diffusion_model"))[0][2]
        self.passes = 0
        self._handle = None

    def __enter__(self) -> "PassCounter":
        self.passes = 0
        self._handle = self.block.register_forward_pre_hook(self._count)
        return self

    def _count(self, *_: Any) -> None:
        self.passes += 1

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()

