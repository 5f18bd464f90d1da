"""The 2026 families of the tiny-model harness: what ``tiny_models`` builds them from, one record each.

Each record gives the ``unet_config`` ComfyUI's own ``model_config_from_unet_config`` must match to the named
``comfy.supported_models`` config (tiny widths from a ``Size``, derived from the base configs of
``tiny_models`` where the family is a variant), the seeded extras a real conditioning node would attach
(reference latents, CLIP-vision output, VACE frames, S2V audio embeddings, ...), the latent, and what the
host must have. A family whose config or class a ComfyUI lacks is *unavailable* there, with the reason, and
its tests skip with it (``Unavailable``, raised by ``require``). Measured facts behind the sizes (v0.33):

- FLUX.2 (``Flux2`` config on ``Flux``) pads its text to 512 tokens and patchifies 128-channel latents 1x1.
- Wan VACE maps one hint block to every main block (``vace_layers = depth``), so a hint lands after the last
  block too; ``wan21_vace_sparse`` maps one to every other block from the first, as the released models do.
  S2V injects audio after the first and the last block; Animate runs with pose latents only: its face encoder
  takes 512 px frames (about 3 s per frame on one CPU thread) and its face adapter needs 5 blocks.
- LTX-2 (``LTXAV``): the text connectors are shrunk to one layer of the tiny width, and the conditioning is
  already in the connectors' output width (2 x caption channels), so they do not run while sampling. ComfyUI
  passes the latent as a list even for video only; ``ltx2_av`` samples a video + audio NestedTensor latent.
- Z-Image is ``NextDiT`` with its own modulation, which needs a width of at least 256; ComfyUI recognises
  Z-Image only at its released width, so the tiny one resolves to the ``Lumina2`` config.
- Kandinsky 5 resolves to its video config (the image config is recognised by its released width only).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch


class Unavailable(RuntimeError):
    """This host's ComfyUI has no such model (its config or a feature of its class is missing)."""


@dataclass(frozen=True)
class TinyFamily:
    """One 2026 family: its ComfyUI config, how to make its tiny ``unet_config``, conditioning and latent."""

    config_name: str
    unet_config: Callable[[Any, dict], dict]          # (size, tiny_models' base configs) -> unet_config
    text_width: Callable[[Any], int]
    extras: Callable[[Any, int], dict] = lambda s, seed: {}
    latent: Callable[[Any, int], tuple] = lambda s, t: (1, 16, t, s.latent_hw, s.latent_hw)
    block_path: bool = True                            # whether OTCache block-caches it (else the fallback)
    list_hook: bool = False                            # its blocks are reached through its block lists (no hook)
    needs: Callable[[], str | None] = lambda: None     # why this host cannot build it (beyond the config match)
    audio: Callable[[Any], tuple] | None = None        # batch-1 audio latent of a video + audio latent


def _randn(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _clip_vision(tokens: int, seed: int) -> Any:
    """ComfyUI's own CLIP-vision output object, as CLIPVisionEncode makes it (ViT-H penultimate states)."""
    import comfy.clip_vision

    out = comfy.clip_vision.Output()
    out["penultimate_hidden_states"] = _randn((1, tokens, 1280), seed)
    return out


def _video(s: Any, channels: int = 16, frames: int | None = None, seed: int = 0) -> torch.Tensor:
    return _randn((1, channels, s.frames if frames is None else frames, s.latent_hw, s.latent_hw), seed)


# ---------------------------------------------------------------------------------------------- configs

def _flux2(s: Any, base: dict) -> dict:
    return dict(base["flux"](s), image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None,
                mlp_ratio=3.0, axes_dim=[s.head_dim // 4] * 4, theta=2000, patch_size=1, qkv_bias=False,
                txt_ids_dims=[3], global_modulation=True, mlp_silu_act=True, ops_bias=False,
                default_ref_method="index", ref_index_scale=10.0)


def _hunyuan15(s: Any, base: dict) -> dict:
    return dict(base["hunyuan_video"](s), in_channels=65, out_channels=32, vec_in_dim=None, context_in_dim=3584,
                guidance_embed=False, use_cond_type_embedding=True, vision_in_dim=1152, meanflow_sum=True)


def _ltx2(s: Any, base: dict) -> dict:
    return {"image_model": "ltxav", "in_channels": 128, "audio_in_channels": 128, "num_layers": s.depth,
            "attention_head_dim": s.head_dim, "num_attention_heads": s.heads, "cross_attention_dim": s.hidden,
            "audio_attention_head_dim": s.head_dim // 2, "audio_num_attention_heads": s.heads,
            "audio_cross_attention_dim": s.hidden // 2, "caption_channels": s.hidden,
            "connector_attention_head_dim": s.head_dim, "connector_num_attention_heads": s.heads,
            "connector_num_layers": 1}


def _hidream(s: Any, base: dict) -> dict:
    return {"image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16,
            "num_layers": s.dual_depth, "num_single_layers": s.dual_depth, "attention_head_dim": s.head_dim,
            "num_attention_heads": s.heads, "caption_channels": [s.hidden, s.hidden], "text_emb_dim": s.hidden,
            "num_routed_experts": 2, "num_activated_experts": 1, "axes_dims_rope": s.axes(),
            "max_resolution": [4 * s.latent_hw, 4 * s.latent_hw], "llama_layers": list(range(2 * s.dual_depth))}


def _kandinsky5(s: Any, base: dict) -> dict:
    return {"image_model": "kandinsky5", "in_visual_dim": 16, "out_visual_dim": 16, "in_text_dim": 3584,
            "in_text_dim2": 768, "time_dim": s.hidden // 2, "model_dim": s.hidden, "ff_dim": 2 * s.hidden,
            "visual_embed_dim": 4 * 33, "patch_size": (1, 2, 2), "num_text_blocks": 1,
            "num_visual_blocks": s.depth, "axes_dims": tuple(s.axes())}


def _z_image(s: Any, base: dict) -> dict:
    width = max(256, s.hidden)
    head = width // 8
    t = 2 * round(head / 16)
    return dict(base["lumina2"](s), dim=width, n_heads=8, n_kv_heads=8, cap_feat_dim=2560,
                axes_dims=[t, (head - t) // 2, head - t - (head - t) // 2], axes_lens=[1536, 512, 512],
                rope_theta=256.0, ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0,
                pad_tokens_multiple=32)


def _wan(model_type: str, **over: Any) -> Callable[[Any, dict], dict]:
    def config(s: Any, base: dict) -> dict:
        extra = {k: (v(s) if callable(v) else v) for k, v in over.items()}
        return dict(base["wan21"](s), model_type=model_type, **extra)
    return config


# ------------------------------------------------------------------------------------------- conditioning

def _qwen_edit(method: str | None) -> Callable[[Any, int], dict]:
    def extras(s: Any, seed: int) -> dict:
        out = {"reference_latents": [_video(s, frames=1, seed=seed + 17)]}   # a VAE-encoded image, 5-D
        if method:
            out["reference_latents_method"] = method
        return out
    return extras


def _i2v(clip_tokens: int) -> Callable[[Any, int], dict]:
    def extras(s: Any, seed: int) -> dict:
        return {"clip_vision_output": _clip_vision(clip_tokens, seed + 31),
                "concat_latent_image": _video(s, seed=seed + 3)}
    return extras


def _vace(s: Any, seed: int) -> dict:
    # as WanVaceToVideo attaches them: control latents (inactive + reactive) and the 8x8-unfolded mask
    mask = torch.ones((1, 64, s.frames, s.latent_hw, s.latent_hw))
    return {"vace_frames": [_video(s, channels=32, seed=seed + 5)], "vace_mask": [mask], "vace_strength": [1.0]}


def _s2v(s: Any, seed: int) -> dict:
    # as WanSoundImageToVideo attaches them: [1, encoder layers, audio width, 4 audio frames per latent frame]
    return {"audio_embed": _randn((1, 25, 32, 4 * s.frames), seed + 7),
            "reference_latents": [_video(s, frames=1, seed=seed + 11)]}


def _animate(s: Any, seed: int) -> dict:
    return dict(_i2v(257)(s, seed), pose_video_latent=_video(s, frames=max(1, s.frames - 1), seed=seed + 13))


def _hidream_extras(s: Any, seed: int) -> dict:
    return {"pooled_output": _randn((1, s.hidden), seed + 7919),
            "conditioning_llama3": _randn((1, 2 * s.dual_depth, s.tokens, s.hidden), seed + 4111)}


def _has_parameter(module: str, cls: str, name: str) -> Callable[[], str | None]:
    def needs() -> str | None:
        import importlib

        klass = getattr(importlib.import_module(module), cls)
        if name not in inspect.signature(klass.__init__).parameters:
            return f"this ComfyUI's {cls} has no {name!r} (no such model here)"
        return None
    return needs


_WAN_I2V_IN = 36
_IMAGE = lambda s, t: (1, 16, s.latent_hw, s.latent_hw)  # noqa: E731  (EmptySD3LatentImage)
FAMILIES: dict[str, TinyFamily] = {
    "flux2": TinyFamily("Flux2", _flux2, lambda s: 4096, lambda s, seed: {"guidance": 3.5},
                        lambda s, t: (1, 128, s.latent_hw // 2, s.latent_hw // 2)),
    "hunyuan_video15": TinyFamily("HunyuanVideo15", _hunyuan15, lambda s: 3584, lambda s, seed: {"pooled_output": None},
                                  lambda s, t: (1, 32, t, s.latent_hw, s.latent_hw)),
    "qwen_image_edit": TinyFamily("QwenImage", lambda s, base: base["qwen_image"](s), lambda s: 3584,
                                  _qwen_edit(None), _IMAGE),
    "qwen_image_edit_2511": TinyFamily("QwenImage", lambda s, base: base["qwen_image"](s), lambda s: 3584,
                                       _qwen_edit("index_timestep_zero"), _IMAGE),
    "wan21_i2v": TinyFamily("WAN21_I2V", _wan("i2v", in_dim=_WAN_I2V_IN), lambda s: 4096, _i2v(257)),
    "wan21_flf2v": TinyFamily("WAN21_I2V", _wan("i2v", in_dim=_WAN_I2V_IN, flf_pos_embed_token_number=514),
                              lambda s: 4096, _i2v(514)),
    "wan21_vace": TinyFamily("WAN21_Vace", _wan("vace", vace_layers=lambda s: s.depth, vace_in_dim=96),
                             lambda s: 4096, _vace),
    # as the released VACE models: hints after every other block from the first, none after the last block
    "wan21_vace_sparse": TinyFamily("WAN21_Vace", _wan("vace", vace_layers=lambda s: s.depth // 2, vace_in_dim=96),
                                    lambda s: 4096, _vace),
    "wan22_s2v": TinyFamily("WAN22_S2V", _wan("s2v", audio_dim=32, num_audio_token=4, cond_dim=16,
                                              audio_inject_layers=lambda s: [0, s.depth - 1]), lambda s: 4096, _s2v),
    "wan22_animate": TinyFamily("WAN22_Animate", _wan("animate", in_dim=_WAN_I2V_IN), lambda s: 4096, _animate),
    "ltx2": TinyFamily("LTXAV", _ltx2, lambda s: 2 * s.hidden, lambda s, seed: {"frame_rate": 25},
                       lambda s, t: (1, 128, t, s.latent_hw // 2, s.latent_hw // 2)),
    "ltx2_av": TinyFamily("LTXAV", _ltx2, lambda s: 2 * s.hidden, lambda s, seed: {"frame_rate": 25},
                          lambda s, t: (1, 128, t, s.latent_hw // 2, s.latent_hw // 2),
                          audio=lambda s: (1, 8, 4 * s.frames + 1, 16)),
    "hidream": TinyFamily("HiDream", _hidream, lambda s: s.hidden, _hidream_extras, _IMAGE, list_hook=True),
    "kandinsky5": TinyFamily("Kandinsky5", _kandinsky5, lambda s: 3584,
                             lambda s, seed: {"pooled_output": _randn((1, 768), seed + 7919)}),
    "z_image": TinyFamily("Lumina2", _z_image, lambda s: 2560, lambda s, seed: {}, _IMAGE, list_hook=True,
                          needs=_has_parameter("comfy.ldm.lumina.model", "NextDiT", "z_image_modulation")),
}


LIST_HOOKED = tuple(name for name, f in FAMILIES.items() if f.list_hook)


def require(family: str, version: str) -> None:
    """Raise ``Unavailable`` (with the reason) when this host's ComfyUI cannot build the 2026 ``family``."""
    spec = FAMILIES.get(family)
    if spec is None:
        return
    import comfy.supported_models

    reason = None if hasattr(comfy.supported_models, spec.config_name) else f"no {spec.config_name} model config"
    reason = reason or spec.needs()
    if reason:
        raise Unavailable(f"{family} needs a newer ComfyUI than {version}: {reason}")


def with_audio(family: str, video: torch.Tensor, s: Any) -> Any:
    """The empty video + audio latent LTXVConcatAVLatent makes (a NestedTensor); None for other families."""
    spec = FAMILIES.get(family)
    if spec is None or spec.audio is None:
        return None
    import comfy.nested_tensor

    return comfy.nested_tensor.NestedTensor([video, torch.zeros((video.shape[0],) + spec.audio(s)[1:])])
