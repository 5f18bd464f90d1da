"""Which diffusion transformer a model is, and how its block stack can be cached.

The block-residual cache needs, per family: the block replacement keys in
execution order (``patches_replace["dit"][("double_block", i)]`` /
``("single_block", i)``), and where the image tokens sit in the last block's
output. That is read from the model *object* (its exact class and its block
lists), never from a ComfyUI version string. Subclasses are not assumed to
share their parent's forward (Wan VACE adds hints between blocks, Wan S2V
injects audio, ...), so only the exact classes below get block caching; every
other model gets the whole-model fallback, which is announced, never silent.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Where the image tokens are in the joint (txt + img) stream of single blocks when
# the model does not say so itself (newer ComfyUI sets transformer_options["img_slice"]).
TXT_FIRST, IMG_FIRST, IMG_ONLY = "txt_first", "img_first", "img_only"


@dataclass(frozen=True)
class FamilySpec:
    """How to cache one model: ``blocks`` empty means whole-model output reuse (``reason`` says why)."""

    name: str
    class_name: str
    blocks: tuple[tuple[str, int], ...] = ()
    joint_order: str = IMG_ONLY          # layout of the last block's "img" when it is a single block
    last_is_single: bool = False
    skipped: tuple[tuple[str, int], ...] = field(default=())
    reason: str = ""

    @property
    def block_caching(self) -> bool:
        return bool(self.blocks)

    def describe(self) -> str:
        if self.block_caching:
            return f"{self.name} ({self.class_name}, {len(self.blocks)} blocks, block-residual cache)"
        return f"{self.class_name}: whole-model output reuse ({self.reason})"


# (module, class name) -> (family, [(block list attribute, replacement key name)], joint order)
_KNOWN: dict[tuple[str, str], tuple[str, tuple[tuple[str, str], ...], str]] = {
    ("comfy.ldm.flux.model", "Flux"):
        ("flux", (("double_blocks", "double_block"), ("single_blocks", "single_block")), TXT_FIRST),
    ("comfy.ldm.chroma.model", "Chroma"):
        ("chroma", (("double_blocks", "double_block"), ("single_blocks", "single_block")), TXT_FIRST),
    ("comfy.ldm.hunyuan_video.model", "HunyuanVideo"):
        ("hunyuan_video", (("double_blocks", "double_block"), ("single_blocks", "single_block")), IMG_FIRST),
    ("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel"):
        ("qwen_image", (("transformer_blocks", "double_block"),), IMG_ONLY),
    ("comfy.ldm.wan.model", "WanModel"):
        ("wan", (("blocks", "double_block"),), IMG_ONLY),
    ("comfy.ldm.lightricks.model", "LTXVModel"):
        ("ltxv", (("transformer_blocks", "double_block"),), IMG_ONLY),
}

# Chroma never calls these indices (pruned blocks).
_SKIP_ATTRS = {"double_blocks": "skip_mmdit", "single_blocks": "skip_dit"}


def detect_family(diffusion_model: torch.nn.Module) -> FamilySpec:
    """The family spec of ``diffusion_model`` (the object behind ``get_model_object("diffusion_model")``)."""
    cls = type(diffusion_model)
    key = (cls.__module__, cls.__name__)
    known = _KNOWN.get(key)
    if known is None:
        return FamilySpec("generic", cls.__name__, reason=_why_generic(cls))
    name, lists, order = known
    blocks: list[tuple[str, int]] = []
    skipped: list[tuple[str, int]] = []
    last_single = False
    for attr, kind in lists:
        mods = getattr(diffusion_model, attr, None)
        if not isinstance(mods, torch.nn.ModuleList):
            return FamilySpec("generic", cls.__name__, reason=f"no block list {attr!r} on this {cls.__name__}")
        skip = set(getattr(diffusion_model, _SKIP_ATTRS.get(attr, ""), None) or [])
        for i in range(len(mods)):
            (skipped if i in skip else blocks).append((kind, i))
            if i not in skip:
                last_single = kind == "single_block"
    if not blocks:
        return FamilySpec("generic", cls.__name__, reason="the block stack is empty")
    return FamilySpec(name, cls.__name__, tuple(blocks), order if last_single else IMG_ONLY,
                      last_single, tuple(skipped))


def _why_generic(cls: type) -> str:
    for base in cls.__mro__[1:]:
        if (base.__module__, base.__name__) in _KNOWN:
            return f"{cls.__name__} changes the {base.__name__} forward, so its blocks are not cached"
    return "no per-block cache hook for this architecture"
