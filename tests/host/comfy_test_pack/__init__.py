"""Test-only ComfyUI node pack: seeded conditioning of a model family's shapes, without a text encoder.

ComfyUI has no core node that makes CONDITIONING without loading a text encoder, and the server tests run
with tiny random models and no downloads. The server harness copies this folder into the temporary
``custom_nodes`` of the server under test; it is never installed with the pack.
"""
import torch

# family -> (context width, pooled width or None, guidance or None)
_SHAPES = {
    "wan": (4096, None, None),
    "flux": (4096, 768, 3.5),
    "qwen_image": (3584, None, None),
    "hunyuan_video": (4096, 768, 6.0),
    "ltxv": (4096, None, None),
}


class OTCacheTestConditioning:
    """Seeded random conditioning ``[[context, extras]]`` shaped like the family's text encoder output."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "family": (sorted(_SHAPES), {"default": "wan"}),
            "seed": ("INT", {"default": 1, "min": 0, "max": 2**31 - 1}),
            "tokens": ("INT", {"default": 8, "min": 1, "max": 512}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing/otcache"

    def make(self, family, seed, tokens):
        width, pooled, guidance = _SHAPES[family]
        g = torch.Generator().manual_seed(int(seed))
        context = torch.randn((1, tokens, width), generator=g)
        extras = {}
        if pooled:
            extras["pooled_output"] = torch.randn((1, pooled), generator=g)
        if guidance is not None:
            extras["guidance"] = guidance
        if family == "ltxv":
            extras["attention_mask"] = torch.ones((1, tokens), dtype=torch.long)
            extras["frame_rate"] = 25
        return ([[context, extras]],)


NODE_CLASS_MAPPINGS = {"OTCacheTestConditioning": OTCacheTestConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"OTCacheTestConditioning": "OTCache Test Conditioning"}
