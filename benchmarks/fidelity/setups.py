"""The two benchmark families: their ComfyUI configs, how a user samples them, and how they are loaded.

Each setup is a small model of a real ComfyUI class, sized to stay under 5 MiB in float16 and to train in
minutes on 2 CPU cores:

- ``wan21``: ComfyUI's ``WanModel`` (detected as ``WAN21_T2V``), dim 128 (one 128-wide head, as ComfyUI's
  detection assumes), 6 blocks; ComfyUI's Wan defaults: shift 8 (most steps at high noise), euler / simple,
  true CFG 3 with an empty negative prompt.
- ``flux``: ComfyUI's ``Flux`` without guidance embedding (detected as ``FluxSchnell``, shift 1.0), hidden
  128 (one head of 128 = the axes [16, 56, 56]), 2 double + 2 single blocks; sampled like FLUX: euler /
  simple, cfg 1 (no negative pass).

Loading goes through ``comfy.sd.load_diffusion_model`` (what UNETLoader calls). ComfyUI v0.33 detects both
from the tensors alone. v0.3.64 hard-codes Flux's width (3072, 24 heads, context 4096), so on that host the
loader runs with :func:`narrow_flux_detection`, which corrects only the widths that disagree with the
tensors and changes nothing for a full-size FLUX checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from . import codec, prompts

WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class Setup:
    """One benchmark family: model config, latent layout, and the sampler settings a user would pick."""

    name: str
    config_name: str                 # the ComfyUI model config the file must be detected as
    unet_config: dict[str, Any]
    video: bool                      # 5-D latents (B, C, frames, H, W)
    pooled: bool                     # conditioning carries a pooled vector (Flux's ``y``)
    cfg: float
    sampler: str = "euler"
    scheduler: str = "simple"
    steps: tuple[int, ...] = (30, 50)
    train_noise: str = "shifted"     # training noise levels: through the model's shift, or "plain" sigma
    side: int = 32                   # image side in pixels of the runs
    frames: int = 1                  # latent frames of the runs (video models)
    train_sides: tuple[int, ...] = (32,)    # what the model was trained on: every batch takes one side and
    train_frames: tuple[int, ...] = (1,)    # one frame count of these (so a transfer to the other means something)

    @property
    def weights(self) -> Path:
        return WEIGHTS / f"{self.name}_shapes.safetensors"

    @property
    def record(self) -> Path:
        return WEIGHTS / f"{self.name}_shapes.json"

    def empty_latent(self, batch: int = 1) -> torch.Tensor:
        """The external empty latent of the benchmark images (what an Empty*Latent node makes)."""
        side = self.side // codec.FACTOR
        shape = (batch, codec.LATENT_CHANNELS, self.frames, side, side) if self.video else \
            (batch, codec.LATENT_CHANNELS, side, side)
        return torch.zeros(shape)

    def conditioning(self, indices: list[int | None]) -> list:
        return prompts.conditioning(indices, self.pooled)

    def negative(self, batch: int = 1) -> list:
        return self.conditioning([None] * batch)


WAN21 = Setup(
    name="wan21", config_name="WAN21_T2V", video=True, pooled=False, cfg=3.0,
    unet_config={"image_model": "wan2.1", "model_type": "t2v", "dim": 128, "out_dim": 16, "num_heads": 1,
                 "ffn_dim": 256, "num_layers": 6, "patch_size": (1, 2, 2), "freq_dim": 256,
                 "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16,
                 "text_dim": prompts.WIDTH})

FLUX = Setup(
    name="flux", config_name="FluxSchnell", video=False, pooled=True, cfg=1.0,
    unet_config={"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": prompts.POOLED,
                 "context_in_dim": prompts.WIDTH, "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 1,
                 "depth": 2, "depth_single_blocks": 2, "axes_dim": [16, 56, 56], "theta": 10000,
                 "patch_size": 2, "qkv_bias": True, "guidance_embed": False, "txt_ids_dims": [],
                 "yak_mlp": False, "txt_norm": False})

# The same Wan class trained on plain (unshifted) noise levels and sampled at Wan's shift 8: most sampling
# steps then sit at noise levels it saw rarely in training, where its output moves fast.
WAN21_PLAIN = dataclasses.replace(WAN21, name="wan21_plain", train_noise="plain")

# Trained on two image sides and on two frame counts, for the transfer benchmark's resolution and frame rows:
# a model trained at one size says nothing about how a schedule carries to another.
FLUX_SIZES = dataclasses.replace(FLUX, name="flux_sizes", train_sides=(16, 32))
WAN21_FRAMES = dataclasses.replace(WAN21, name="wan21_frames", frames=3, train_frames=(1, 3))

SETUPS = {s.name: s for s in (WAN21, WAN21_PLAIN, FLUX, FLUX_SIZES, WAN21_FRAMES)}


def new_model(setup: Setup) -> Any:
    """A freshly initialised ComfyUI ``BaseModel`` of ``setup`` (float32, trainable), for training."""
    import comfy.model_detection

    from tiny_models import fit_to_host   # tests/host: the harness's own host feature detection

    config = comfy.model_detection.model_config_from_unet_config(fit_to_host(setup.unet_config))
    if config is None or type(config).__name__ != setup.config_name:
        raise RuntimeError(f"{setup.name}: ComfyUI matched {type(config).__name__}, not {setup.config_name}")
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, "")
    init_weights(model.diffusion_model)
    return model


@torch.no_grad()
def init_weights(module: torch.nn.Module) -> None:
    """ComfyUI builds its layers uninitialised (weights come from a file): give them a standard start.

    Matrices Xavier-uniform, biases zero, norm gains one; the output projections start at zero so the first
    prediction is 0 and early training is stable.
    """
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            torch.nn.init.xavier_uniform_(p.view(p.shape[0], -1))
        elif name.endswith((".weight", ".scale")):
            p.fill_(1.0)
        else:
            p.zero_()
    for name in ("head.head", "final_layer.linear"):
        out = module.get_submodule(name) if _has(module, name) else None
        if out is not None:
            out.weight.zero_()
            if out.bias is not None:
                out.bias.zero_()


def _has(module: torch.nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
        return True
    except AttributeError:
        return False


@contextlib.contextmanager
def narrow_flux_detection() -> Iterator[None]:
    """While loading: Flux widths read from the tensors where this host's detection hard-codes them."""
    import comfy.model_detection as md

    original = md.detect_unet_config

    def detect(state_dict, key_prefix, *args, **kwargs):
        config = original(state_dict, key_prefix, *args, **kwargs)
        img_in, txt_in = state_dict.get(f"{key_prefix}img_in.weight"), state_dict.get(f"{key_prefix}txt_in.weight")
        if isinstance(config, dict) and config.get("image_model") == "flux" and img_in is not None:
            hidden = int(img_in.shape[0])
            if config.get("hidden_size") != hidden:
                config["hidden_size"] = hidden
                config["num_heads"] = max(1, hidden // sum(config.get("axes_dim", [16, 56, 56])))
            if txt_in is not None:
                config["context_in_dim"] = int(txt_in.shape[1])
        return config

    md.detect_unet_config = detect
    try:
        yield
    finally:
        md.detect_unet_config = original


def load(setup: Setup, path: Path | None = None) -> Any:
    """The committed model of ``setup`` as UNETLoader loads it: a ModelPatcher from ``load_diffusion_model``."""
    import comfy.sd

    path = path or setup.weights
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train it with python -m benchmarks.fidelity.train "
                                f"--family {setup.name}")
    with narrow_flux_detection():
        patcher = comfy.sd.load_diffusion_model(str(path))
    got = type(patcher.model.model_config).__name__
    if got != setup.config_name:
        raise RuntimeError(f"{path} was detected as {got}, not {setup.config_name}")
    return patcher
