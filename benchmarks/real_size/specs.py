"""The two real models this benchmark times, at three sizes, as plain records (no ComfyUI import).

Why plain records: the plan (which models, how wide, how many tokens) is printed before ComfyUI is
configured and before the device is checked, so a machine without a GPU still says what would have run.
Real sizes are the published architectures at their usual resolution; ``bench`` keeps the ratios (Flux's
one double block to two single ones, Wan's feed-forward of 2.7 widths, head dim 128) at a width a CPU runs
in a minute; ``tiny`` is the host tests' width (64) and runs in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SIZE_NAMES = ("real", "bench", "tiny")
TEXT_WIDTH = 4096      # T5-XXL / umT5-XXL hidden width: both models' context
GUIDANCE = 3.5         # FLUX.1-dev's distilled guidance (a conditioning input, not CFG)


@dataclass(frozen=True)
class Dims:
    """One size of one model. ``depth`` is Flux's double blocks or Wan's blocks; ``frames`` 0: an image."""

    hidden: int
    heads: int
    depth: int
    single_depth: int
    ffn: int
    text_tokens: int
    latent_h: int
    latent_w: int
    frames: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def image_tokens(self) -> int:
        """Tokens of the latent after the (1,) 2 x 2 patch embedding, per batch item."""
        return max(self.frames, 1) * (self.latent_h // 2) * (self.latent_w // 2)

    def axes(self) -> list[int]:
        """Flux's RoPE axes (time, h, w) summing to the head dim: [16, 56, 56] at head dim 128."""
        t = 2 * round(self.head_dim / 16)
        h = (self.head_dim - t) // 2
        return [t, h, self.head_dim - t - h]


@dataclass(frozen=True)
class ModelSpec:
    """A model as ComfyUI would load it: its ``unet_config``, the config class it must match, its inputs."""

    name: str
    title: str
    config_name: str
    sizes: dict[str, Dims]
    unet_config: Callable[[Dims], dict]
    latent_channels: int = 16

    def latent_shape(self, size: str) -> tuple[int, ...]:
        """Batch-1 empty latent (EmptySD3LatentImage for Flux, EmptyHunyuanLatentVideo for Wan)."""
        d = self.sizes[size]
        if d.frames:
            return (1, self.latent_channels, d.frames, d.latent_h, d.latent_w)
        return (1, self.latent_channels, d.latent_h, d.latent_w)

    def describe(self, size: str) -> str:
        d = self.sizes[size]
        blocks = (f"{d.depth} double + {d.single_depth} single blocks" if d.single_depth
                  else f"{d.depth} blocks, ffn {d.ffn}")
        latent = "x".join(str(v) for v in self.latent_shape(size)[2:])
        return (f"{self.title} [{size}]: {blocks}, hidden {d.hidden}, {d.heads} heads; latent {latent} = "
                f"{d.image_tokens} image tokens + {d.text_tokens} text tokens of {TEXT_WIDTH}")


def _flux_config(d: Dims) -> dict:
    return {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768,
            "context_in_dim": TEXT_WIDTH, "hidden_size": d.hidden, "mlp_ratio": 4.0, "num_heads": d.heads,
            "depth": d.depth, "depth_single_blocks": d.single_depth, "axes_dim": d.axes(), "theta": 10000,
            "patch_size": 2, "qkv_bias": True, "guidance_embed": True,
            "txt_ids_dims": [], "yak_mlp": False, "txt_norm": False}


def _wan_config(d: Dims) -> dict:
    return {"image_model": "wan2.1", "model_type": "t2v", "dim": d.hidden, "out_dim": 16,
            "num_heads": d.heads, "ffn_dim": d.ffn, "num_layers": d.depth, "patch_size": (1, 2, 2),
            "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True,
            "eps": 1e-6, "in_dim": 16, "text_dim": TEXT_WIDTH, "text_len": 512}


FLUX_DEV = ModelSpec(
    name="flux_dev", title="FLUX.1-dev (Flux)", config_name="Flux", unet_config=_flux_config,
    sizes={"real": Dims(3072, 24, 19, 38, 0, 512, 128, 128),          # 1024 x 1024 image
           "bench": Dims(512, 4, 2, 4, 0, 64, 32, 32),
           "tiny": Dims(64, 2, 1, 2, 0, 8, 8, 8)})

WAN21_14B = ModelSpec(
    name="wan21_14b", title="Wan 2.1 14B T2V (WanModel)", config_name="WAN21_T2V", unet_config=_wan_config,
    sizes={"real": Dims(5120, 40, 40, 0, 13824, 512, 60, 104, 21),    # 480 x 832, 81 frames
           "bench": Dims(512, 4, 8, 0, 1376, 64, 16, 16, 3),
           "tiny": Dims(64, 2, 2, 0, 128, 8, 8, 8, 2)})

SPECS = {s.name: s for s in (FLUX_DEV, WAN21_14B)}
