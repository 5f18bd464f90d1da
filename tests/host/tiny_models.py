"""Tiny models of the real ComfyUI diffusion-transformer classes, with seeded weights, for host tests.

Each family is built the way ComfyUI builds a loaded diffusion model, minus the file: a ``unet_config`` (what
``comfy.model_detection.detect_unet_config`` would return for such a checkpoint) is matched to its
``comfy.supported_models`` class by ComfyUI's own ``model_config_from_unet_config``, the config makes the
``model_base`` object (which builds the DiT with ComfyUI's operations), and a ``comfy.model_patcher.ModelPatcher``
wraps it. Direct construction avoids the detection code, which hard-codes real widths for Flux, Qwen-Image and
Lumina2 (a narrow checkpoint is detected as the right family and then fails with a size mismatch).

Weights are drawn per parameter from a generator seeded by (seed, canonical parameter name), so they do not
depend on parameter order or on parameters one version adds: the same seed gives the same weights and the
same sampled latents on both hosts.

Differences between the hosts (v0.3.64 and v0.33.0) and how this module copes, by feature detection only:
- ``FluxParams`` gained a required ``txt_ids_dims`` (and optional ``global_modulation``, ``yak_mlp``,
  ``txt_norm``, ...); ``ChromaParams`` gained required ``txt_ids_dims`` and ``vec_in_dim``;
  ``HunyuanVideoParams`` gained required ``use_cond_type_embedding``, ``vision_in_dim``, ``meanflow_sum``.
  Handled by reading the dataclass fields of the ``*Params`` class and passing newer fields only when present.
- Qwen-Image lost ``guidance_embeds`` and gained ``default_ref_method`` / ``use_additional_t_cond``; LTXV and
  Lumina2 (``rope_theta``, ``ffn_dim_multiplier`` default 4.0 instead of None) gained arguments. Handled by
  reading the constructor signature and dropping arguments it does not take. Lumina2's feed-forward formula
  changed (v0.3.64: 4*dim times an optional multiplier, default None; v0.33: dim times a multiplier, default
  4.0), so ``ffn_dim_multiplier`` is never passed and both hosts build the same 4*dim feed-forward.
- QK-norm weights are called ``*_norm.scale`` in v0.3.64 and ``*_norm.weight`` in v0.33 (Flux, Chroma,
  HunyuanVideo): the seed name maps ``.scale`` to ``.weight`` so both get the same numbers.
- ``fix_empty_latent_channels`` takes optional downscale-ratio arguments in v0.33; only the common two are used.
Block structure differences that matter to the cache runtime (HunyuanVideo's joint stream order, block metadata
in ``transformer_options`` only in v0.33) are in the harness report. The 2026 families (FLUX.2, LTX-2, the Wan
subclasses, ...) are records in ``tiny_models_2026``; one this ComfyUI lacks raises ``Unavailable`` there.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

import tiny_models_2026 as t26
from comfy_host import ensure_comfy_importable

COMFY_VERSION = ensure_comfy_importable()

import comfy.model_detection  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402

DIT_FAMILIES = ("flux", "flux_schnell", "chroma", "qwen_image", "hunyuan_video", "wan21", "wan22_5b", "ltxv")
LIST_FAMILIES = ("lumina2",)   # NextDiT: no block hook (DIT_FAMILIES have one), reached through its list
FAMILIES = DIT_FAMILIES + LIST_FAMILIES
# Older architectures, also on the whole-model fallback: SD3's MMDiT (its forward runs no DIFFUSION_MODEL
# wrapper, so the cache sits at APPLY_MODEL) and an SD1.5-type UNet (eps prediction). Kept out of FAMILIES:
# the generic probe counts calls at DIFFUSION_MODEL, which SD3 never reaches; test_apply_fallback covers them.
UNET_ERA_FAMILIES = ("sd3", "sd15")
# The 2026 families (tiny_models_2026), kept apart: some exist on one host only, LTX-2's latent can be nested.
BLOCK_FAMILIES_2026 = tuple(name for name, f in t26.FAMILIES.items() if f.block_path)
FALLBACK_FAMILIES_2026 = tuple(name for name, f in t26.FAMILIES.items() if not f.block_path)   # none today

# The ComfyUI model config each family must resolve to (guards against a match on a look-alike config).
CONFIG_NAMES = {
    "flux": "Flux", "flux_schnell": "FluxSchnell", "chroma": "Chroma", "qwen_image": "QwenImage",
    "hunyuan_video": "HunyuanVideo", "wan21": "WAN21_T2V", "wan22_5b": "WAN22_T2V", "ltxv": "LTXV",
    "lumina2": "Lumina2", "sd3": "SD3", "sd15": "SD15",
    **{name: f.config_name for name, f in t26.FAMILIES.items()},
}

# Block lists in execution order; the first present set names the model's block stack.
_STACKS = (("double_blocks", "single_blocks"), ("transformer_blocks",), ("blocks",), ("layers",),
           ("double_stream_blocks", "single_stream_blocks"), ("visual_transformer_blocks",))


@dataclass(frozen=True)
class Size:
    """Widths of one model size: ``tiny`` for tests, ``bench`` so block work dominates a step."""

    hidden: int
    heads: int
    depth: int          # blocks of single-list families (Qwen-Image, Wan, LTXV, Lumina2)
    dual_depth: int     # blocks per list of double+single families (Flux, Chroma, HunyuanVideo)
    tokens: int         # text tokens in the conditioning
    latent_hw: int      # latent height = width
    frames: int         # latent frames for video families

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def axes(self) -> list[int]:
        """RoPE axes (time, h, w) summing to the head dim, each even, like Flux's [16, 56, 56]."""
        t = 2 * round(self.head_dim / 16)
        h = (self.head_dim - t) // 2
        return [t, h, self.head_dim - t - h]


SIZES = {
    "tiny": Size(hidden=64, heads=2, depth=2, dual_depth=2, tokens=8, latent_hw=8, frames=2),
    "bench": Size(hidden=512, heads=4, depth=8, dual_depth=4, tokens=32, latent_hw=16, frames=2),
}


@dataclass
class FamilyBundle:
    """A model ready to sample: its ModelPatcher, seeded conditioning and empty-latent maker."""

    family: str
    size: str
    seed: int
    patcher: Any                       # comfy.model_patcher.ModelPatcher
    positive: list                     # [[context, extras]]
    negative: list
    latent_shape: tuple[int, ...]      # batch-1 shape of the empty latent ComfyUI's latent node makes
    block_lists: tuple[str, ...] = ()  # names of the block ModuleLists, execution order

    @property
    def diffusion_model(self) -> torch.nn.Module:
        return self.patcher.get_model_object("diffusion_model")

    @property
    def has_dit_replace(self) -> bool:
        """Whether the family's blocks are reached through ``patches_replace["dit"]``."""
        return self.block_cached and self.family not in LIST_FAMILIES + t26.LIST_HOOKED

    @property
    def block_cached(self) -> bool:
        """Whether OTCache caches its blocks (block replacements or stand-ins for its lists), else the fallback."""
        return self.family in DIT_FAMILIES + LIST_FAMILIES + BLOCK_FAMILIES_2026

    def empty_latent(self, batch: int = 1, hw: int | None = None, frames: int | None = None) -> torch.Tensor:
        """An empty latent of ``batch`` items (``hw`` / ``frames``: another size), fixed up as common_ksampler does."""
        shape = self.latent_shape if hw is None and frames is None else latent_shape(
            self.family, self.size, hw=hw, frames=frames)
        raw = torch.zeros((batch,) + tuple(shape[1:]))
        nested = t26.with_audio(self.family, raw, SIZES[self.size])   # LTX-2's video + audio latent
        return nested if nested is not None else comfy.sample.fix_empty_latent_channels(self.patcher, raw)

    def last_block(self) -> torch.nn.Module:
        return stack_blocks(self.diffusion_model)[-1][2]


def stack_blocks(dm: torch.nn.Module) -> list[tuple[str, int, torch.nn.Module]]:
    """(list name, index, module) of every block the forward runs, in order (Chroma skips removed); read by index:
    iterating OTCache's stand-in for a block list yields other items inside a cached call."""
    for names in _STACKS:
        if isinstance(getattr(dm, names[0], None), torch.nn.ModuleList):
            out = []
            for name in names:
                skip = _skipped(dm, name)
                blocks = getattr(dm, name, [])
                for i in range(len(blocks)):
                    if i not in skip:
                        out.append((name, i, blocks[i]))
            return out
    raise ValueError(f"no known block stack on {type(dm).__name__}")


def _skipped(dm: torch.nn.Module, name: str) -> set:
    attr = {"double_blocks": "skip_mmdit", "single_blocks": "skip_dit"}.get(name)
    return set(getattr(dm, attr, []) or []) if attr else set()


# ----------------------------------------------------------------------------------------------- configs

def _flux_config(s: Size, guidance: bool) -> dict:
    return {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768,
            "context_in_dim": 4096, "hidden_size": s.hidden, "mlp_ratio": 4.0, "num_heads": s.heads,
            "depth": s.dual_depth, "depth_single_blocks": s.dual_depth, "axes_dim": s.axes(), "theta": 10000,
            "patch_size": 2, "qkv_bias": True, "guidance_embed": guidance,
            "txt_ids_dims": [], "yak_mlp": False, "txt_norm": False}


def _chroma_config(s: Size) -> dict:
    return {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 4096,
            "hidden_size": s.hidden, "mlp_ratio": 4.0, "num_heads": s.heads, "depth": s.dual_depth,
            "depth_single_blocks": s.dual_depth, "axes_dim": s.axes(), "theta": 10000, "patch_size": 2,
            "qkv_bias": True, "in_dim": 64, "out_dim": s.hidden, "hidden_dim": s.hidden,
            "n_layers": 2 if s.hidden < 256 else 5, "txt_ids_dims": [], "vec_in_dim": None}


def _qwen_config(s: Size) -> dict:
    return {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "num_layers": s.depth,
            "attention_head_dim": s.head_dim, "num_attention_heads": s.heads, "joint_attention_dim": 3584,
            "axes_dims_rope": s.axes()}


def _hunyuan_config(s: Size) -> dict:
    return {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768,
            "context_in_dim": 4096, "hidden_size": s.hidden, "mlp_ratio": 4.0, "num_heads": s.heads,
            "depth": s.dual_depth, "depth_single_blocks": s.dual_depth, "axes_dim": s.axes(), "theta": 256,
            "patch_size": [1, 2, 2], "qkv_bias": True, "guidance_embed": True, "byt5": False,
            "meanflow": False, "use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}


def _wan_config(s: Size, channels: int) -> dict:
    return {"image_model": "wan2.1", "model_type": "t2v", "dim": s.hidden, "out_dim": channels,
            "num_heads": s.heads, "ffn_dim": 2 * s.hidden, "num_layers": s.depth, "patch_size": (1, 2, 2),
            "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True,
            "eps": 1e-6, "in_dim": channels, "text_dim": 4096}


def _ltxv_config(s: Size) -> dict:
    return {"image_model": "ltxv", "in_channels": 128, "num_layers": s.depth,
            "attention_head_dim": s.head_dim, "num_attention_heads": s.heads,
            "cross_attention_dim": s.hidden, "caption_channels": 4096}


def _lumina_config(s: Size) -> dict:
    return {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": s.hidden,
            "cap_feat_dim": 2304, "n_layers": s.depth, "n_refiner_layers": 1, "n_heads": s.heads,
            "n_kv_heads": s.heads, "multiple_of": 32, "qk_norm": True,
            "axes_dims": s.axes(), "axes_lens": [300, 512, 512], "rope_theta": 10000.0}


def _sd3_config(s: Size) -> dict:
    """What ``detect_unet_config`` reads from an MMDiT checkpoint; the width is 64 * depth by design."""
    return {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 2, "input_size": None,
            "adm_in_channels": 2048, "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
            "context_embedder_config": {"target": "torch.nn.Linear",
                                        "params": {"in_features": 4096, "out_features": 128}},
            "num_patches": 32 * 32, "pos_embed_max_size": 32}


def _sd15_config(s: Size) -> dict:
    """ComfyUI's SD1.5 UNet config cut to one level (model_channels stays 320: the config match needs it)."""
    return {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
            "num_res_blocks": [1], "transformer_depth": [1], "channel_mult": [1], "transformer_depth_middle": 1,
            "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
            "transformer_depth_output": [1, 1], "use_temporal_attention": False, "use_temporal_resblock": False}


_CONFIGS: dict[str, Callable[[Size], dict]] = {
    "flux": lambda s: _flux_config(s, guidance=True),
    "flux_schnell": lambda s: _flux_config(s, guidance=False),
    "chroma": _chroma_config,
    "qwen_image": _qwen_config,
    "hunyuan_video": _hunyuan_config,
    "wan21": lambda s: _wan_config(s, channels=16),
    "wan22_5b": lambda s: _wan_config(s, channels=48),
    "ltxv": _ltxv_config,
    "lumina2": _lumina_config,
    "sd3": _sd3_config,
    "sd15": _sd15_config,
}
_CONFIGS.update({name: (lambda s, f=f: f.unet_config(s, _CONFIGS)) for name, f in t26.FAMILIES.items()})


def _dit_class(unet_config: dict) -> type:
    """The DiT class ``model_base`` builds for this ``image_model``."""
    import comfy.ldm.chroma.model as chroma
    import comfy.ldm.flux.model as flux
    import comfy.ldm.hunyuan_video.model as hunyuan
    import comfy.ldm.lightricks.model as ltxv
    import comfy.ldm.lumina.model as lumina
    import comfy.ldm.qwen_image.model as qwen
    import comfy.ldm.wan.model as wan

    return {"flux": flux.Flux, "chroma": chroma.Chroma, "qwen_image": qwen.QwenImageTransformer2DModel,
            "hunyuan_video": hunyuan.HunyuanVideo, "wan2.1": wan.WanModel, "ltxv": ltxv.LTXVModel,
            "lumina2": lumina.NextDiT}[unet_config["image_model"]]


def _params_dataclass(dit_cls: type) -> type | None:
    """The ``*Params`` dataclass a DiT builds from its ``**kwargs`` (Flux, Chroma, HunyuanVideo)."""
    cls = getattr(inspect.getmodule(dit_cls), f"{dit_cls.__name__}Params", None)
    return cls if cls is not None and dataclasses.is_dataclass(cls) else None


def fit_to_host(unet_config: dict) -> dict:
    """Keep only the arguments this host's DiT class accepts (feature detection, no version strings)."""
    dit_cls = _dit_class(unet_config)
    params = _params_dataclass(dit_cls)
    if params is not None:
        accepted = {f.name for f in dataclasses.fields(params)} | {"image_model"}
    else:
        sig = inspect.signature(dit_cls.__init__)
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return dict(unet_config)
        accepted = set(sig.parameters) | {"image_model"}
    return {k: v for k, v in unet_config.items() if k in accepted}


# ----------------------------------------------------------------------------------------------- weights

def canonical_name(name: str) -> str:
    """Parameter name shared by both hosts (v0.3.64 ``*.scale`` == v0.33 ``*.weight`` for RMS norms)."""
    return name[: -len(".scale")] + ".weight" if name.endswith(".scale") else name


def _draw(name: str, shape: torch.Size, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**62))
    noise = torch.randn(shape, generator=gen)
    if len(shape) >= 2:
        return noise / math.sqrt(math.prod(shape[1:]))
    if name.endswith(".weight"):
        return 1.0 + 0.02 * noise  # norm gains
    return 0.02 * noise  # biases and free vectors


@torch.no_grad()
def seed_weights(module: torch.nn.Module, seed: int) -> None:
    """Fill every parameter from a generator seeded by (seed, canonical name), and every floating buffer a
    checkpoint would bring: ComfyUI makes some with ``torch.empty`` (SD3's ``pos_embed``), and memory left
    over from earlier tests made the tiny SD3 sample NaN now and then. Buffers computed at build time (not in
    the state dict) are left alone."""
    for name, param in module.named_parameters():
        param.copy_(_draw(canonical_name(name), param.shape, seed).to(param.dtype))
    persistent = set(module.state_dict())
    for name, buf in module.named_buffers():
        if name in persistent and buf.is_floating_point():
            buf.copy_(_draw(canonical_name(name), buf.shape, seed).to(buf.dtype))


# ------------------------------------------------------------------------------------------- conditioning

def _randn(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def make_conditioning(family: str, size: str = "tiny", seed: int = 1) -> list:
    """Seeded ``[[context, extras]]`` with the shapes the family's text encoder would produce."""
    s = SIZES[size]
    spec = t26.FAMILIES.get(family)
    if spec is not None:
        return [[_randn((1, s.tokens, spec.text_width(s)), seed), spec.extras(s, seed)]]
    width = {"qwen_image": 3584, "lumina2": 2304, "sd15": 768}.get(family, 4096)
    context = _randn((1, s.tokens, width), seed)
    extras: dict[str, Any] = {}
    if family == "sd3":
        extras["pooled_output"] = _randn((1, 2048), seed + 7919)  # CLIP-L + CLIP-G pooled
    if family in ("flux", "flux_schnell", "hunyuan_video"):
        extras["pooled_output"] = _randn((1, 768), seed + 7919)
    if family == "chroma":
        extras["pooled_output"] = None  # T5-only encoders return no pooled vector
    if family in ("flux", "hunyuan_video", "chroma"):
        extras["guidance"] = 3.5 if family != "hunyuan_video" else 6.0
    if family == "ltxv":
        extras["attention_mask"] = torch.ones((1, s.tokens), dtype=torch.long)
        extras["frame_rate"] = 25
    if family == "lumina2":
        extras["attention_mask"] = torch.ones((1, s.tokens), dtype=torch.long)
    return [[context, extras]]


def latent_shape(family: str, size: str = "tiny", hw: int | None = None,
                 frames: int | None = None) -> tuple[int, ...]:
    """Batch-1 empty latent shape as ComfyUI's latent nodes make it (before ``fix_empty_latent_channels``).

    LTXV's VAE compresses 32x spatially (not 8x), so its latent is half the others' height and width.
    """
    s = SIZES[size]
    side = s.latent_hw if hw is None else hw
    t = s.frames if frames is None else frames
    if family in t26.FAMILIES:
        return t26.FAMILIES[family].latent(dataclasses.replace(s, latent_hw=side, frames=t), t)
    if family in ("hunyuan_video", "wan21"):
        return (1, 16, t, side, side)                  # EmptyHunyuanLatentVideo
    if family == "wan22_5b":
        return (1, 48, t, side, side)                  # Wan22ImageToVideoLatent
    if family == "ltxv":
        return (1, 128, t, side // 2, side // 2)       # EmptyLTXVLatentVideo
    if family == "sd15":
        return (1, 4, side, side)                      # EmptyLatentImage
    return (1, 16, side, side)                         # EmptySD3LatentImage (Qwen-Image: 5-D once fixed up)


# ------------------------------------------------------------------------------------------------ build

def _model_config(family: str, s: Size):
    t26.require(family, COMFY_VERSION)
    unet_config = _CONFIGS[family](s)
    if "image_model" in unet_config and family not in t26.FAMILIES:   # 2026 configs name only what hosts have
        unet_config = fit_to_host(unet_config)
    config = comfy.model_detection.model_config_from_unet_config(unet_config)
    if config is None or type(config).__name__ != CONFIG_NAMES[family]:
        raise RuntimeError(f"{family}: ComfyUI matched {type(config).__name__} for {unet_config}")
    config.set_inference_dtype(torch.float32, None)
    return config


def build_patcher(family: str, size: str = "tiny", seed: int = 0):
    """A ModelPatcher around a seeded tiny model of ``family``, as ``load_diffusion_model`` would return."""
    if family not in _CONFIGS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    config = _model_config(family, SIZES[size])
    model = config.get_model({}, "")
    seed_weights(model.diffusion_model, seed)
    model.diffusion_model.eval()
    mm = comfy.model_management
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def build(family: str, size: str = "tiny", seed: int = 0) -> FamilyBundle:
    """Model, conditioning (positive and a different negative) and latent shape for one family."""
    patcher = build_patcher(family, size, seed)
    dm = patcher.get_model_object("diffusion_model")
    lists = tuple(dict.fromkeys(name for name, _, _ in stack_blocks(dm))) if family not in UNET_ERA_FAMILIES else ()
    return FamilyBundle(family=family, size=size, seed=seed, patcher=patcher,
                        positive=make_conditioning(family, size, seed=1000 + seed),
                        negative=make_conditioning(family, size, seed=2000 + seed),
                        latent_shape=latent_shape(family, size), block_lists=lists)
