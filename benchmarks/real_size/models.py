"""The benchmark's models built with ComfyUI's own classes, directly on the device in bf16, seeded there.

Why not ``tiny_models.build``: it builds in fp32 on the CPU and seeds from CPU generators, which at real size
would mean a 48 GB (Flux) or 57 GB (Wan 14B) fp32 model in host memory before a copy to the GPU. Here the
``unet_config`` is matched by ComfyUI's ``model_config_from_unet_config`` (as ``tiny_models`` does, with its
``fit_to_host`` for the two hosts' argument differences), the inference dtype is bf16, so ComfyUI's
``pick_operations`` gives ``disable_weight_init`` layers whose parameters are allocated empty in bf16 on the
device, and every parameter is then drawn in place there from a generator seeded by (seed, parameter name):
nothing is duplicated and nothing passes through fp32. Weights are untrained (speed does not depend on
them): matrices normal(0, 0.02), norm gains 1, biases normal(0, 0.02), which keeps activations finite
through 57 or 40 blocks (checked at real width with one block repeated to full depth: block outputs stay
below a few hundred). The same build on PyTorch's meta device counts parameters and bytes for free; every
weight is bf16 except Wan's patch embedding (0.3 M parameters), which ComfyUI itself makes in fp32.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import torch

import tiny_models as tm
from .specs import GUIDANCE, TEXT_WIDTH, ModelSpec

import comfy.model_detection  # noqa: E402
import comfy.model_management as mm  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402

DTYPE = torch.bfloat16
STD = 0.02


@dataclass
class Bundle:
    """What ``tests/host/sampling.run_sampler`` reads of a model: its patcher, conditioning, empty latent."""

    spec: ModelSpec
    size: str
    patcher: Any
    positive: list
    negative: list

    @property
    def diffusion_model(self) -> torch.nn.Module:
        return self.patcher.get_model_object("diffusion_model")

    def empty_latent(self, batch: int = 1) -> torch.Tensor:
        shape = (batch,) + self.spec.latent_shape(self.size)[1:]
        return comfy.sample.fix_empty_latent_channels(self.patcher, torch.zeros(shape))


def model_config(spec: ModelSpec, size: str):
    """ComfyUI's model config for the spec at ``size``, matched by ComfyUI itself, inference in bf16."""
    unet_config = tm.fit_to_host(spec.unet_config(spec.sizes[size]))
    config = comfy.model_detection.model_config_from_unet_config(unet_config)
    if config is None or type(config).__name__ != spec.config_name:
        raise RuntimeError(f"{spec.name}: ComfyUI matched {type(config).__name__}, not {spec.config_name}")
    config.set_inference_dtype(DTYPE, None)
    return config


def weight_bytes(spec: ModelSpec, size: str) -> tuple[int, int]:
    """(parameters, bytes) of the diffusion model, from a build on the meta device (no memory used)."""
    model = model_config(spec, size).get_model({}, "", device=torch.device("meta"))
    params = list(model.diffusion_model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


@torch.no_grad()
def seed_weights(module: torch.nn.Module, seed: int) -> None:
    """Draw every parameter in place on its own device from a generator seeded by (seed, canonical name)."""
    for name, param in module.named_parameters():
        key = tm.canonical_name(name)
        gen = torch.Generator(device=param.device)
        gen.manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**62))
        if param.ndim == 1 and key.endswith(".weight"):
            param.fill_(1.0)                           # norm gains
        else:
            param.normal_(0.0, STD, generator=gen)     # matrices, biases, modulation vectors


def _randn(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def conditioning(spec: ModelSpec, size: str, seed: int) -> list:
    """Seeded ``[[context, extras]]`` shaped like the text encoder's output (T5-XXL / umT5-XXL, 4096 wide)."""
    d = spec.sizes[size]
    extras: dict[str, Any] = {}
    if spec.config_name == "Flux":
        extras = {"pooled_output": _randn((1, 768), seed + 7919), "guidance": GUIDANCE}
    return [[_randn((1, d.text_tokens, TEXT_WIDTH), seed), extras]]


def build(spec: ModelSpec, size: str, seed: int = 0) -> Bundle:
    """The model on ComfyUI's torch device in bf16, wrapped in a ModelPatcher as a loader would return it."""
    device = mm.get_torch_device()
    model = model_config(spec, size).get_model({}, "", device=device)
    seed_weights(model.diffusion_model, seed)
    model.diffusion_model.eval()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device())
    return Bundle(spec, size, patcher, positive=conditioning(spec, size, 1000 + seed),
                  negative=conditioning(spec, size, 2000 + seed))


def release(bundle: Bundle | None) -> None:
    """Give the model's memory back before the next model (ComfyUI's loaded-model list holds it too)."""
    import gc

    mm.unload_all_models()
    if bundle is not None:
        bundle.patcher = None
    gc.collect()
    mm.soft_empty_cache()
