"""Which diffusion transformer a model is, and every fact the pack needs about its family: one registry.

The block-residual cache needs, per family: the block replacement keys in execution order
(``patches_replace["dit"][("double_block", i)]`` / ``("single_block", i)``), where the image tokens sit
in the last block's output, which blocks the forward never calls, what a block receives (one token tensor
or a tuple of streams) and whether the forward adds to it between blocks, the shipped preset made for the family's
released model (and that model's block count, so a preset is used only on the model it was made for), and
whether a skipped step can trim the family's modulation network. A family whose forward iterates its block
lists itself, with no block-replacement hook (NextDiT, HiDream), says per list what a block hands back
(``returns``): OTCache then reaches its blocks through a stand-in for each list (``stack_list``), and the
joint order says where the image tokens sit in the last list's stream. Block lists beside the stack whose work
a reused step never reads are named too (``side_input``, ``side_added``: ``side_lists``). Adding a family is one
:class:`Family` entry in ``REGISTRY`` (and its host test).

A model is matched on its *exact* class, read from the object, never from a ComfyUI version string, so a
class a ComfyUI does not have is simply never matched there. Subclasses are not assumed to share their
parent's forward: each one was read and has its own entry (Wan VACE adds hints between blocks, Wan S2V
injects audio, ...), or gets the whole-model fallback, which is announced, never silent, with the reason
(``FALLBACK_REASONS`` for classes read and found with no way to reach their blocks; none today).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

# Where the image tokens are in the joint (txt + img) stream of single blocks when
# the model does not say so itself (newer ComfyUI sets transformer_options["img_slice"]).
TXT_FIRST, IMG_FIRST, IMG_ONLY = "txt_first", "img_first", "img_only"
DUAL = (("double_blocks", "double_block"), ("single_blocks", "single_block"))


@dataclass(frozen=True)
class Family:
    """One registry entry: a DiT class and its facts."""

    name: str
    module: str
    class_name: str
    lists: tuple[tuple[str, str], ...]          # (ModuleList attribute, patches_replace key), execution order
    joint_order: str = IMG_ONLY                 # image tokens in a single block's joint stream
    skip_attrs: Mapping[str, str] = field(default_factory=dict)   # list -> attribute naming pruned indices
    preset: tuple[str, int] | None = None       # (shipped preset, blocks of the model it was made for)
    trim_modulation: bool = False               # a reused step runs its row-wise modulation net for 2 rows
    streams: bool = False                       # the stream is a tuple of token streams (LTX-2: video, audio)
    between_blocks: bool = False                # the forward adds to the stream between blocks
    stream_key: str = "img"                     # the stream's key in the block hook's arguments
    # When ComfyUI's own ``original_block`` cannot run the block (Kandinsky 5 calls it with names the block
    # does not take): the hook's arguments in the block's parameter order, so the pack calls the block itself.
    block_args: tuple[str, ...] = ()
    # A forward that iterates its block lists itself (no block hook): per list, in ``lists`` order, the names of
    # the block arguments a block hands back, in its return order, the stream first (one name: a bare tensor).
    returns: tuple[tuple[str, ...], ...] = ()
    # Block lists beside the stack that a reused step need not run (``side_lists``): run before the stack and read
    # only by its blocks (Kandinsky 5's text blocks) ...
    side_input: tuple[str, ...] = ()
    # ... or adding their output after the stack blocks an attribute maps ({block index: list index}: VACE hints)
    side_added: tuple[tuple[str, str], ...] = ()


WAN_BLOCKS = (("blocks", "double_block"),)
REGISTRY: tuple[Family, ...] = (
    Family("flux", "comfy.ldm.flux.model", "Flux", DUAL, TXT_FIRST, preset=("flux1-dev", 57)),
    Family("chroma", "comfy.ldm.chroma.model", "Chroma", DUAL, TXT_FIRST,
           skip_attrs={"double_blocks": "skip_mmdit", "single_blocks": "skip_dit"}, trim_modulation=True),
    Family("hunyuan_video", "comfy.ldm.hunyuan_video.model", "HunyuanVideo", DUAL, IMG_FIRST,
           preset=("hunyuanvideo-1.5", 54)),
    Family("qwen_image", "comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel",
           (("transformer_blocks", "double_block"),), preset=("qwen-image", 60)),
    Family("wan", "comfy.ldm.wan.model", "WanModel", WAN_BLOCKS, preset=("wan2.1-t2v-1.3b", 30)),
    # VACE adds its hint blocks' output after mapped blocks, S2V its audio injection, Animate its face
    # features: all between blocks, so a reused step rebuilds the stack's output from its input.
    Family("wan_vace", "comfy.ldm.wan.model", "VaceWanModel", WAN_BLOCKS, between_blocks=True,
           side_added=(("vace_blocks", "vace_layers_mapping"),)),
    Family("wan_s2v", "comfy.ldm.wan.model", "WanModel_S2V", WAN_BLOCKS, between_blocks=True),
    Family("wan_animate", "comfy.ldm.wan.model_animate", "AnimateWanModel", WAN_BLOCKS, between_blocks=True),
    Family("ltxv", "comfy.ldm.lightricks.model", "LTXVModel", (("transformer_blocks", "double_block"),)),
    Family("ltx2", "comfy.ldm.lightricks.av_model", "LTXAVModel", (("transformer_blocks", "double_block"),),
           streams=True),
    Family("kandinsky5", "comfy.ldm.kandinsky5.model", "Kandinsky5", (("visual_transformer_blocks", "double_block"),),
           stream_key="x", block_args=("x", "context", "time_embed", "freqs"), side_input=("text_transformer_blocks",)),
    # Lumina 2 and Z-Image: the layers run on the joint [caption | image] stream, cached whole (the same layout
    # at the stack's start and end); the caption and noise refiners are separate lists and keep running.
    Family("nextdit", "comfy.ldm.lumina.model", "NextDiT", (("layers", "double_block"),), returns=(("x",),)),
    # HiDream: double blocks take the image tokens and return (image, text); single blocks take and return the
    # joint [image | text] stream, image tokens first.
    Family("hidream", "comfy.ldm.hidream.model", "HiDreamImageTransformer2DModel",
           (("double_stream_blocks", "double_block"), ("single_stream_blocks", "single_block")), IMG_FIRST,
           returns=(("image_tokens", "text_tokens"), ("image_tokens",))),
)
_BY_CLASS = {(f.module, f.class_name): f for f in REGISTRY}

# Classes whose forward was read and offers no way to skip a block (why they stay on the fallback): none
# today; NextDiT and HiDream, once here, are reached through their block lists (``Family.returns``).
FALLBACK_REASONS: dict[tuple[str, str], str] = {}


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
    preset: tuple[str, int] | None = None
    trim_modulation: bool = False
    streams: bool = False
    between_blocks: bool = False
    stream_key: str = "img"
    block_args: tuple[str, ...] = ()
    lists: tuple[tuple[str, str], ...] = ()   # (ModuleList attribute, replacement key) of the family
    returns: tuple[tuple[str, ...], ...] = ()  # per list: what a block hands back (list-hooked families only)
    side_input: tuple[str, ...] = ()           # lists beside the stack a reused step need not run (Family)
    side_added: tuple[tuple[str, str], ...] = ()

    @property
    def block_caching(self) -> bool:
        return bool(self.blocks)

    @property
    def list_hook(self) -> bool:
        """The blocks are reached through stand-ins for the block lists, not ``patches_replace["dit"]``."""
        return self.block_caching and bool(self.returns)

    @property
    def attr_of(self) -> dict[str, str]:
        """Replacement key -> the ModuleList attribute holding those blocks."""
        return {kind: attr for attr, kind in self.lists}

    @property
    def whole_output_at_apply(self) -> bool:
        """Whole-model reuse also sits at APPLY_MODEL: for models without block hooks (some have no
        DIFFUSION_MODEL wrapper either), and for several latent streams, which ComfyUI packs into one there."""
        return not self.block_caching or self.streams

    def describe(self) -> str:
        if self.block_caching:
            return f"{self.name} ({self.class_name}, {len(self.blocks)} blocks, block-residual cache)"
        return f"{self.class_name}: whole-model output reuse ({self.reason})"


def detect_family(diffusion_model: torch.nn.Module) -> FamilySpec:
    """The family spec of ``diffusion_model`` (the object behind ``get_model_object("diffusion_model")``)."""
    cls = type(diffusion_model)
    family = _BY_CLASS.get((cls.__module__, cls.__name__))
    if family is None:
        return FamilySpec("generic", cls.__name__, reason=_why_generic(cls))
    blocks: list[tuple[str, int]] = []
    skipped: list[tuple[str, int]] = []
    last_single = False
    for attr, kind in family.lists:
        mods = getattr(diffusion_model, attr, None)
        if not isinstance(mods, torch.nn.ModuleList):
            return FamilySpec("generic", cls.__name__, reason=f"no block list {attr!r} on this {cls.__name__}")
        skip = set(getattr(diffusion_model, family.skip_attrs.get(attr, ""), None) or [])
        for i in range(len(mods)):
            (skipped if i in skip else blocks).append((kind, i))
            if i not in skip:
                last_single = kind == "single_block"
    if not blocks:
        return FamilySpec("generic", cls.__name__, reason="the block stack is empty")
    return FamilySpec(family.name, cls.__name__, tuple(blocks), family.joint_order if last_single else IMG_ONLY,
                      last_single, tuple(skipped), preset=family.preset, trim_modulation=family.trim_modulation,
                      streams=family.streams, between_blocks=family.between_blocks, stream_key=family.stream_key,
                      block_args=family.block_args, lists=family.lists, returns=family.returns,
                      side_input=family.side_input, side_added=family.side_added)


def _why_generic(cls: type) -> str:
    known = FALLBACK_REASONS.get((cls.__module__, cls.__name__))
    if known:
        return known
    for base in cls.__mro__[1:]:
        if (base.__module__, base.__name__) in _BY_CLASS:
            return f"{cls.__name__} changes the {base.__name__} forward, so its blocks are not cached"
    return "no per-block cache hook for this architecture"
