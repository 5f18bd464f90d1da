"""Build the example workflows (UI format, as the ComfyUI frontend saves them) from a server's /object_info.

Every node comes from the node definitions a real ComfyUI reports, so node types, input names, link types,
output slots and the order of widget values are right by construction; nothing is hand-typed JSON.

    # against a running ComfyUI that has the pack installed
    python scripts/make_workflows.py --server http://127.0.0.1:8188
    # or start one (temporary base directory, nothing written into the checkout)
    python scripts/make_workflows.py --comfy ~/comfy/ComfyUI
    # or from a saved /object_info answer
    python scripts/make_workflows.py --object-info object_info.json

Writes workflows/*.json and the same files to example_workflows/ (the folder ComfyUI lists as templates of
this pack). tests/host/test_workflows.py checks the committed files against a live server, and the browser
test loads each one in the real frontend.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIRS = (ROOT / "workflows", ROOT / "example_workflows")

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = ("seed", "noise_seed")
TITLE_H = 30
SLOT_H = 22
WIDGET_H = 24
# Extra height of our nodes: the schedule plot (web/otcache.js) is a DOM widget below the inputs.
PLOT_H = {"OTCacheApply": 170, "OTCacheCalibrate": 120, "OTCacheAnchorSearch": 120, "OTCacheLoadSchedule": 120}


# ----------------------------------------------------------------------------------------------- model

def _spec_inputs(spec: dict) -> list[tuple[str, Any, dict, bool]]:
    """(name, type, options, optional) of a node's inputs in the order the frontend creates them."""
    inputs = spec.get("input", {})
    order = spec.get("input_order") or {g: list(inputs.get(g, {})) for g in ("required", "optional")}
    out = []
    for group in ("required", "optional"):
        for name in order.get(group, []):
            entry = inputs.get(group, {}).get(name)
            if entry is None:
                continue
            kind = entry[0]
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            out.append((name, kind, opts, group == "optional"))
    return out


def _is_widget(kind: Any, opts: dict) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _default(name: str, kind: Any, opts: dict) -> Any:
    if isinstance(kind, list):
        return opts.get("default", kind[0] if kind else "")
    if kind == "COMBO":
        options = opts.get("options") or []
        return opts.get("default", options[0] if options else "")
    if "default" in opts:
        return opts["default"]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def _has_control(name: str, opts: dict) -> bool:
    # The frontend adds a "control after generate" widget (one more value) to seeds and flagged INTs.
    flag = opts.get("control_after_generate")
    return bool(flag) if flag is not None else name in SEED_NAMES


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    spec: dict | None
    widgets: dict = field(default_factory=dict)
    title: str | None = None
    size: tuple[float, float] | None = None
    color: str | None = None
    bgcolor: str | None = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def output_slot(self, ref: str | int) -> int:
        if isinstance(ref, int):
            return ref
        names = [o["name"] for o in self.outputs]
        types = [o["type"] for o in self.outputs]
        if ref in names:
            return names.index(ref)
        if types.count(ref) == 1:
            return types.index(ref)
        raise KeyError(f"{self.type} has no output {ref!r} (outputs: {names})")

    def input_slot(self, name: str) -> int:
        for i, inp in enumerate(self.inputs):
            if inp["name"] == name:
                return i
        raise KeyError(f"{self.type} has no linkable input {name!r} (inputs: {[i['name'] for i in self.inputs]})")


class Workflow:
    def __init__(self, info: dict):
        self.info = info
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    # --- nodes -----------------------------------------------------------------------------------
    def add(self, type_: str, pos: tuple[float, float], title: str | None = None, node_width: float | None = None,
            **widgets: Any) -> Node:
        if type_ not in self.info:
            raise SystemExit(f"node type {type_!r} is not known to this ComfyUI (is the pack installed and up to date?)")
        spec = self.info[type_]
        node = Node(len(self.nodes) + 1, type_, pos, spec, title=title)
        values: list = []
        known = set()
        for name, kind, opts, optional in _spec_inputs(spec):
            if _is_widget(kind, opts):
                known.add(name)
                values.append(widgets.get(name, _default(name, kind, opts)))
                if kind == "INT" and _has_control(name, opts):
                    values.append(widgets.get(f"{name}_control", "fixed"))
            else:
                node.inputs.append({"name": name, "type": kind if isinstance(kind, str) else "COMBO",
                                    "link": None, **({"shape": 7} if optional else {})})
        unknown = set(widgets) - known - {f"{n}_control" for n in known}
        if unknown:
            raise SystemExit(f"{type_}: no widget(s) {sorted(unknown)}; it has {sorted(known)}")
        node.widgets = {"values": values}
        names = spec.get("output_name") or spec.get("output") or []
        for i, t in enumerate(spec.get("output") or []):
            node.outputs.append({"name": names[i] if i < len(names) else t, "type": t, "links": [],
                                 "slot_index": i})
        n_widgets = len(values)
        rows = max(len(node.inputs), len(node.outputs))
        h = TITLE_H // 2 + rows * SLOT_H + n_widgets * WIDGET_H + PLOT_H.get(type_, 0) + 10
        node.size = (node_width or (360 if type_.startswith("OTCache") else 320), h)
        if type_.startswith("OTCache"):
            node.color, node.bgcolor = "#1d3a4a", "#16303d"
        self.nodes.append(node)
        return node

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float] = (420, 260),
             title: str = "Read me") -> Node:
        node = Node(len(self.nodes) + 1, "Note", pos, None, title=title, size=size, color="#432", bgcolor="#653")
        node.widgets = {"values": [text]}
        self.nodes.append(node)
        return node

    def link(self, src: Node, out: str | int, dst: Node, inp: str) -> None:
        o = src.output_slot(out)
        i = dst.input_slot(inp)
        otype, itype = src.outputs[o]["type"], dst.inputs[i]["type"]
        if otype != itype and "*" not in (otype, itype) and otype not in itype.split(","):
            raise SystemExit(f"cannot link {src.type}.{src.outputs[o]['name']} ({otype}) to {dst.type}.{inp} ({itype})")
        if dst.inputs[i]["link"] is not None:
            raise SystemExit(f"{dst.type}.{inp} is already linked")
        link_id = len(self.links) + 1
        self.links.append([link_id, src.id, o, dst.id, i, otype])
        src.outputs[o]["links"].append(link_id)
        dst.inputs[i]["link"] = link_id

    def wire(self, dst: Node, sources: dict[str, tuple[Node, str | int]], required_only: bool = False) -> None:
        """Link every socket input of ``dst`` from ``sources`` (keyed by input name, else by type)."""
        spec_inputs = {name: optional for name, *_rest, optional in _spec_inputs(dst.spec)}
        for inp in dst.inputs:
            if inp["link"] is not None:
                continue
            # by name first (a name mapped to None stays unconnected), else by type
            src = sources[inp["name"]] if inp["name"] in sources else sources.get(inp["type"])
            if src is None:
                if not spec_inputs.get(inp["name"], False):
                    raise SystemExit(f"{dst.type}: nothing to connect to required input {inp['name']!r} ({inp['type']})")
                continue
            if required_only and spec_inputs.get(inp["name"], False):
                continue
            self.link(src[0], src[1], dst, inp["name"])

    def group(self, title: str, nodes: list[Node], color: str = "#3f789e") -> None:
        x0 = min(n.pos[0] for n in nodes) - 20
        y0 = min(n.pos[1] for n in nodes) - 60
        x1 = max(n.pos[0] + n.size[0] for n in nodes) + 20
        y1 = max(n.pos[1] + n.size[1] for n in nodes) + 20
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 22, "flags": {}})

    # --- output ------------------------------------------------------------------------------------
    def to_json(self, name: str = "otcache-workflow") -> dict:
        order = self._order()
        nodes = []
        for n in self.nodes:
            d: dict[str, Any] = {"id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size),
                                 "flags": {}, "order": order[n.id], "mode": 0}
            if n.inputs:
                d["inputs"] = [dict(i) for i in n.inputs]
            d["outputs"] = [dict(o) for o in n.outputs]
            d["properties"] = {} if n.type == "Note" else {"Node name for S&R": n.type}
            d["widgets_values"] = list(n.widgets["values"])
            if n.title:
                d["title"] = n.title
            if n.color:
                d["color"], d["bgcolor"] = n.color, n.bgcolor
            nodes.append(d)
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-otcache/{name}")), "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": nodes, "links": [list(l) for l in self.links], "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.65, "offset": [60, 80]}}, "version": 0.4}

    def _order(self) -> dict[int, int]:
        deps = {n.id: set() for n in self.nodes}
        for _lid, src, _o, dst, _i, _t in self.links:
            deps[dst].add(src)
        order, done = {}, set()
        while len(done) < len(deps):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= done)
            for i in ready:
                order[i] = len(order)
                done.add(i)
        return order


# ----------------------------------------------------------------------------------------------- pieces

WAN_NEGATIVE = "blurry, low quality, static, distorted, watermark"

PIPELINE_HELP = """\
OTCache in three stages (run them in order; each stage's result is cached by ComfyUI):
1. OTCache Calibrate runs the model without caching and finds a high-fidelity REFERENCE schedule
   (a conservative budget).
2. OTCache Anchor Search looks for an extreme low-budget ANCHOR with Optuna (the slow stage: run it
   once; its progress is kept, so it can be resumed or spread over machines).
3. OTCache Apply interpolates any budget between them (optimal-transport quantile interpolation),
   so you pick the speed-up with one slider and see, on the node, which steps run the transformer.
Save Schedule writes both to models/otcache/ so later workflows can just load them
(see "apply a saved schedule")."""


def otcache_stage(wf: Workflow, x: float, y: float, model, positive, negative, latent, *, sampler: dict,
                  tag: str = "", save_prefix: str = "my-model", speedup: float | None = None, vae=None,
                  more_prompts=None) -> Node:
    """Calibrate -> Anchor Search -> Apply (+ Save Schedule of both). Returns the Apply node."""
    common = _matching_widgets(wf.info, "OTCacheCalibrate", sampler)
    cal = wf.add("OTCacheCalibrate", (x, y), title=f"1. OTCache Calibrate{tag}", **common)
    wf.wire(cal, {"model": model, "positive": positive, "negative": negative, "MODEL": model,
                  "CONDITIONING": positive, "LATENT": latent, "latent": latent, "latent_image": latent,
                  "more_prompts": more_prompts})
    ref_out = _schedule_output(cal)
    common = _matching_widgets(wf.info, "OTCacheAnchorSearch", sampler)
    anc = wf.add("OTCacheAnchorSearch", (x, y + cal.size[1] + 70), title=f"2. OTCache Anchor Search{tag}", **common)
    calib = _typed_output(cal, "OTCACHE_CALIBRATION")
    extra = {"calibration": calib, "OTCACHE_CALIBRATION": calib} if calib else {}
    if vae is not None:
        extra.update({"vae": vae, "VAE": vae})
    wf.wire(anc, {"model": model, "positive": positive, "negative": negative, "MODEL": model,
                  "CONDITIONING": positive, "LATENT": latent, "latent": latent, "latent_image": latent,
                  "reference": (cal, ref_out), "OTCACHE_SCHEDULE": (cal, ref_out), **extra})
    anc_out = _schedule_output(anc)
    apply_widgets = {}
    if speedup is not None:
        for name in ("speedup", "target_speedup"):
            if _has_widget(wf.info, "OTCacheApply", name):
                apply_widgets[name] = speedup
    app = wf.add("OTCacheApply", (x + 420, y + 120), title=f"3. OTCache Apply{tag}", node_width=400, **apply_widgets)
    wf.wire(app, {"model": model, "MODEL": model, "reference": (cal, ref_out), "anchor": (anc, anc_out)})
    if "OTCacheSaveSchedule" in wf.info:
        yy = y + cal.size[1] + anc.size[1] + 170
        for k, (node, slot, role) in enumerate(((cal, ref_out, "reference"), (anc, anc_out, "anchor"))):
            widgets = {n: f"{save_prefix}-{role}" for n in ("filename", "name", "filename_prefix")
                       if _has_widget(wf.info, "OTCacheSaveSchedule", n)}
            save = wf.add("OTCacheSaveSchedule", (x + 420 * k, yy), title=f"Save {role}{tag}", **widgets)
            links = {"schedule": (node, slot), "OTCACHE_SCHEDULE": (node, slot)}
            if role == "reference" and calib:
                links.update({"calibration": calib, "OTCACHE_CALIBRATION": calib})
            wf.wire(save, links)
    return app


def _typed_output(node: Node, type_: str):
    for i, o in enumerate(node.outputs):
        if o["type"] == type_:
            return (node, i)
    return None


def _schedule_output(node: Node) -> int:
    for i, o in enumerate(node.outputs):
        if o["type"] == "OTCACHE_SCHEDULE":
            return i
    raise SystemExit(f"{node.type} has no OTCACHE_SCHEDULE output")


def _has_widget(info: dict, type_: str, name: str) -> bool:
    return any(n == name and _is_widget(k, o) for n, k, o, _ in _spec_inputs(info[type_]))


def _matching_widgets(info: dict, type_: str, values: dict) -> dict:
    """The sampler settings the node has widgets for (steps, cfg, sampler_name, scheduler, seed...)."""
    if type_ not in info:
        raise SystemExit(f"node type {type_!r} is not known to this ComfyUI (is the pack installed?)")
    out = {}
    for name, kind, opts, _ in _spec_inputs(info[type_]):
        if name in values and _is_widget(kind, opts):
            options = kind if isinstance(kind, list) else opts.get("options") if kind == "COMBO" else None
            if options is None or values[name] in options:
                out[name] = values[name]
    return out


def _true_cfg_prompts(wf: Workflow, clip: Node, x: float, y: float, neg_y: float, text: str,
                      negative: str) -> tuple[Node, Node]:
    """Prompt and negative prompt from one text encoder, for the models that sample with real CFG."""
    pos = wf.add("CLIPTextEncode", (x, y), title="Prompt", text=text)
    neg = wf.add("CLIPTextEncode", (x, neg_y), title="Negative prompt", text=negative)
    wf.link(clip, "CLIP", pos, "clip")
    wf.link(clip, "CLIP", neg, "clip")
    return pos, neg


def _distilled_prompts(wf: Workflow, clip: Node, x: float, y: float, text: str, guidance: float,
                       neg_title: str | None) -> tuple[Node, Node]:
    """Guidance-distilled models (cfg 1): the guidance goes in the conditioning, the negative is zeroed."""
    pos = wf.add("CLIPTextEncode", (x, y), title="Prompt", text=text)
    wf.link(clip, "CLIP", pos, "clip")
    guid = wf.add("FluxGuidance", (x, y + 250), guidance=guidance)
    wf.link(pos, "CONDITIONING", guid, "conditioning")
    neg = wf.add("ConditioningZeroOut", (x, y + 370), title=neg_title)
    wf.link(pos, "CONDITIONING", neg, "conditioning")
    return guid, neg


CALIBRATION_PROMPTS = ("a lighthouse on a rocky coast under storm clouds",
                       "a bowl of ramen on a wooden table, top view",
                       "a portrait of an old fisherman, soft window light")


def _calibration_prompts(wf: Workflow, clip: Node, x: float, y: float, guidance: float | None = None,
                         texts: tuple[str, ...] = CALIBRATION_PROMPTS):
    """More prompts for OTCache Calibrate, gathered by Conditioning (Combine): a schedule is then judged on
    prompts and seeds it will not always see. Guidance-distilled models get the same FluxGuidance."""
    encoded = []
    for k, text in enumerate(texts):
        enc = wf.add("CLIPTextEncode", (x, y + 150 * k), title=f"Calibration prompt {k + 2}", text=text)
        wf.link(clip, "CLIP", enc, "clip")
        if guidance is not None:
            g = wf.add("FluxGuidance", (x + 400, y + 150 * k), guidance=guidance)
            wf.link(enc, "CONDITIONING", g, "conditioning")
            enc = g
        encoded.append(enc)
    combined = encoded[0]
    for k, enc in enumerate(encoded[1:]):
        node = wf.add("ConditioningCombine", (x + (800 if guidance is not None else 400), y + 150 * (k + 1)))
        wf.link(combined, "CONDITIONING", node, "conditioning_1")
        wf.link(enc, "CONDITIONING", node, "conditioning_2")
        combined = node
    return (combined, 0)


def _sample_and_decode(wf: Workflow, x: float, y: float, model, positive: Node, negative: Node, latent: Node,
                       vae: Node, sampler: dict, decoder: str = "VAEDecode", **decode: Any) -> Node:
    """KSampler on the cached model, then the VAE decode (returned, for the save node)."""
    ks = wf.add("KSampler", (x, y), denoise=1.0, **sampler)
    wf.wire(ks, {"model": model, "positive": (positive, 0), "negative": (negative, 0), "latent_image": (latent, 0)})
    dec = wf.add(decoder, (x + 380, y), **decode)
    wf.wire(dec, {"samples": (ks, 0), "vae": (vae, 0)})
    return dec


def _save_image(wf: Workflow, dec: Node, pos, prefix: str) -> Node:
    save = wf.add("SaveImage", pos, filename_prefix=prefix, node_width=420)
    wf.link(dec, "IMAGE", save, "images")
    return save


def _save_video(wf: Workflow, images, pos, prefix: str, fps: float) -> Node:
    node = wf.add("SaveAnimatedWEBP", pos, filename_prefix=prefix, fps=fps, lossless=False, quality=90,
                  method="default")
    wf.link(images[0], images[1], node, "images")
    return node


# ----------------------------------------------------------------------------------------------- workflows

def flux1_dev(info: dict) -> dict:
    wf = Workflow(info)
    wf.note(
        "FLUX.1-dev with OTCache\n\nModel files (put them in ComfyUI/models/...):\n"
        "- diffusion_models/flux1-dev.safetensors  (black-forest-labs/FLUX.1-dev)\n"
        "- text_encoders/clip_l.safetensors and text_encoders/t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn)\n"
        "- vae/ae.safetensors\n\n" + PIPELINE_HELP +
        "\n\nNo time to calibrate? Load the shipped LeMiCa presets instead (Load Schedule: "
        "preset:flux1-dev/reference and preset:flux1-dev/anchor).", (40, -330), size=(620, 300))
    unet = wf.add("UNETLoader", (40, 0), unet_name="flux1-dev.safetensors", weight_dtype="default")
    clip = wf.add("DualCLIPLoader", (40, 150), clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors",
                  type="flux")
    vae = wf.add("VAELoader", (40, 330), vae_name="ae.safetensors")
    guid, neg = _distilled_prompts(wf, clip, 420, 0, "a red fox reading a newspaper in a sunlit cafe, film photograph, "
                                   "35mm", 3.5, "Negative (unused by FLUX.1-dev)")
    lat = wf.add("EmptySD3LatentImage", (420, 470), width=1024, height=1024, batch_size=1)
    sampler = dict(seed=42, steps=28, cfg=1.0, sampler_name="euler", scheduler="simple")
    more = _calibration_prompts(wf, clip, 40, 620, guidance=3.5)
    app = otcache_stage(wf, 820, 0, (unet, 0), (guid, 0), (neg, 0), (lat, 0), sampler=sampler,
                        save_prefix="flux1-dev", speedup=3.0, vae=(vae, 0), more_prompts=more)
    dec = _sample_and_decode(wf, 1700, 0, (app, 0), guid, neg, lat, vae, sampler)
    _save_image(wf, dec, (2080, 120), "otcache/flux1-dev")
    return wf.to_json()


def qwen_image(info: dict) -> dict:
    wf = Workflow(info)
    wf.note(
        "Qwen-Image with OTCache\n\nModel files (ComfyUI/models/...):\n"
        "- diffusion_models/qwen_image_fp8_e4m3fn.safetensors (or qwen_image_bf16)\n"
        "- text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors\n"
        "- vae/qwen_image_vae.safetensors\n\n" + PIPELINE_HELP +
        "\n\nPresets: preset:qwen-image/reference and preset:qwen-image/anchor (LeMiCa, 50 steps).",
        (40, -330), size=(620, 300))
    unet = wf.add("UNETLoader", (40, 0), unet_name="qwen_image_fp8_e4m3fn.safetensors", weight_dtype="default")
    shift = wf.add("ModelSamplingAuraFlow", (40, 150), shift=3.1)
    wf.link(unet, "MODEL", shift, "model")
    clip = wf.add("CLIPLoader", (40, 270), clip_name="qwen_2.5_vl_7b_fp8_scaled.safetensors", type="qwen_image",
                  device="default")
    vae = wf.add("VAELoader", (40, 430), vae_name="qwen_image_vae.safetensors")
    pos, neg = _true_cfg_prompts(wf, clip, 420, 0, 250, 'a hand-painted shop sign that reads "OTCache Bakery", '
                                 "warm morning light", "")
    lat = wf.add("EmptySD3LatentImage", (420, 480), width=1328, height=1328, batch_size=1)
    sampler = dict(seed=42, steps=50, cfg=2.5, sampler_name="euler", scheduler="simple")
    more = _calibration_prompts(wf, clip, 40, 620)
    app = otcache_stage(wf, 820, 0, (shift, 0), (pos, 0), (neg, 0), (lat, 0), sampler=sampler,
                        save_prefix="qwen-image", speedup=3.0, vae=(vae, 0), more_prompts=more)
    dec = _sample_and_decode(wf, 1700, 0, (app, 0), pos, neg, lat, vae, sampler)
    _save_image(wf, dec, (2080, 120), "otcache/qwen-image")
    return wf.to_json()


def hunyuan_video(info: dict) -> dict:
    wf = Workflow(info)
    wf.note(
        "HunyuanVideo (text to video) with OTCache\n\nModel files (ComfyUI/models/...):\n"
        "- diffusion_models/hunyuan_video_t2v_720p_bf16.safetensors\n"
        "- text_encoders/clip_l.safetensors and text_encoders/llava_llama3_fp8_scaled.safetensors\n"
        "- vae/hunyuan_video_vae_bf16.safetensors\n\n" + PIPELINE_HELP +
        "\n\nThe shipped presets (preset:hunyuanvideo-1.5/...) were published for HunyuanVideo-1.5; on this "
        "model they are a starting point only: calibrate for your own settings.", (40, -330), size=(620, 320))
    unet = wf.add("UNETLoader", (40, 0), unet_name="hunyuan_video_t2v_720p_bf16.safetensors", weight_dtype="default")
    clip = wf.add("DualCLIPLoader", (40, 150), clip_name1="clip_l.safetensors",
                  clip_name2="llava_llama3_fp8_scaled.safetensors", type="hunyuan_video")
    vae = wf.add("VAELoader", (40, 330), vae_name="hunyuan_video_vae_bf16.safetensors")
    guid, neg = _distilled_prompts(wf, clip, 420, 0, "a paper boat drifting down a rain-soaked street at dusk, "
                                   "cinematic, slow camera pan", 6.0, "Negative (unused: guidance-distilled)")
    lat = wf.add("EmptyHunyuanLatentVideo", (420, 470), width=848, height=480, length=73, batch_size=1)
    sampler = dict(seed=42, steps=30, cfg=1.0, sampler_name="euler", scheduler="simple")
    more = _calibration_prompts(wf, clip, 40, 620, guidance=6.0)
    app = otcache_stage(wf, 820, 0, (unet, 0), (guid, 0), (neg, 0), (lat, 0), sampler=sampler,
                        save_prefix="hunyuan-video", speedup=2.5, more_prompts=more)
    dec = _sample_and_decode(wf, 1700, 0, (app, 0), guid, neg, lat, vae, sampler, "VAEDecodeTiled", tile_size=256,
                             overlap=64, temporal_size=64, temporal_overlap=8)
    _save_video(wf, (dec, 0), (2080, 260), "otcache/hunyuan-video", 24.0)
    return wf.to_json()


def wan21(info: dict) -> dict:
    wf = Workflow(info)
    wf.note(
        "Wan 2.1 text to video (1.3B) with OTCache\n\nModel files (ComfyUI/models/...):\n"
        "- diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors\n"
        "- text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors\n"
        "- vae/wan_2.1_vae.safetensors\n\n" + PIPELINE_HELP +
        "\n\nPresets: preset:wan2.1-t2v-1.3b/reference and /anchor (LeMiCa, 50 steps).", (40, -330), size=(620, 300))
    unet = wf.add("UNETLoader", (40, 0), unet_name="wan2.1_t2v_1.3B_fp16.safetensors", weight_dtype="default")
    shift = wf.add("ModelSamplingSD3", (40, 150), shift=8.0)
    wf.link(unet, "MODEL", shift, "model")
    clip = wf.add("CLIPLoader", (40, 270), clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan",
                  device="default")
    vae = wf.add("VAELoader", (40, 430), vae_name="wan_2.1_vae.safetensors")
    pos, neg = _true_cfg_prompts(wf, clip, 420, 0, 250, "a hummingbird hovering over a bright orange flower, slow "
                                 "motion, shallow depth of field", WAN_NEGATIVE)
    lat = wf.add("EmptyHunyuanLatentVideo", (420, 480), width=832, height=480, length=33, batch_size=1)
    sampler = dict(seed=42, steps=50, cfg=6.0, sampler_name="uni_pc", scheduler="simple")
    more = _calibration_prompts(wf, clip, 40, 620)
    app = otcache_stage(wf, 820, 0, (shift, 0), (pos, 0), (neg, 0), (lat, 0), sampler=sampler,
                        save_prefix="wan2.1-t2v-1.3b", speedup=2.5, more_prompts=more)
    dec = _sample_and_decode(wf, 1700, 0, (app, 0), pos, neg, lat, vae, sampler)
    _save_video(wf, (dec, 0), (2080, 120), "otcache/wan2.1", 16.0)
    return wf.to_json()


def wan22(info: dict) -> dict:
    """Two experts (high noise, then low noise) with two KSamplerAdvanced; each expert gets its own schedules."""
    wf = Workflow(info)
    wf.note(
        "Wan 2.2 text to video (A14B, two experts) with OTCache\n\nModel files (ComfyUI/models/...):\n"
        "- diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors\n"
        "- diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors\n"
        "- text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors\n"
        "- vae/wan_2.1_vae.safetensors\n\n"
        "Wan 2.2 runs two models: the high-noise expert for the first half of the steps and the low-noise expert "
        "for the rest (two KSamplerAdvanced). Each expert gets its own Calibrate / Anchor Search / Apply. The "
        "calibration nodes sample the whole step range; at run time each KSamplerAdvanced uses the part of its "
        "expert's schedule that covers its steps (OTCache follows sigma, so a sampler that runs a slice of the "
        "steps gets the matching slice of the schedule).\n\nFor video, Anchor Search compares final latents "
        "(connect a VAE to it for a perceptual metric at the cost of a decode per trial).\n\n" + PIPELINE_HELP,
        (40, -420), size=(680, 400))
    clip = wf.add("CLIPLoader", (40, 560), clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan",
                  device="default")
    vae = wf.add("VAELoader", (40, 720), vae_name="wan_2.1_vae.safetensors")
    pos, neg = _true_cfg_prompts(wf, clip, 420, 560, 810, "a vintage tram crossing a bridge in heavy snow, night, warm "
                                 "window light, camera follows", WAN_NEGATIVE)
    lat = wf.add("EmptyHunyuanLatentVideo", (420, 1040), width=640, height=640, length=81, batch_size=1)
    steps, split = 20, 10
    sampler = dict(seed=42, steps=steps, cfg=3.5, sampler_name="euler", scheduler="simple")
    applied = []
    for k, (expert, fname) in enumerate((("high noise", "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"),
                                         ("low noise", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"))):
        y = k * 1750
        unet = wf.add("UNETLoader", (40, y), title=f"Wan 2.2 {expert} expert", unet_name=fname,
                      weight_dtype="default")
        shift = wf.add("ModelSamplingSD3", (40, y + 150), shift=8.0)
        wf.link(unet, "MODEL", shift, "model")
        stage_sampler = dict(sampler)
        stage_sampler.update({"start_at_step": 0, "end_at_step": split} if k == 0 else
                             {"start_at_step": split, "end_at_step": 10000})
        app = otcache_stage(wf, 820, y, (shift, 0), (pos, 0), (neg, 0), (lat, 0),
                            sampler=stage_sampler, tag=f" ({expert})",
                            save_prefix=f"wan2.2-{expert.replace(' ', '-')}", speedup=2.0)
        applied.append(app)
    hi = wf.add("KSamplerAdvanced", (1700, 0), title="KSampler (high noise)", add_noise="enable", noise_seed=42,
                steps=steps, cfg=3.5, sampler_name="euler", scheduler="simple", start_at_step=0,
                end_at_step=split, return_with_leftover_noise="enable")
    wf.wire(hi, {"model": (applied[0], 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (lat, 0)})
    lo = wf.add("KSamplerAdvanced", (1700, 1750), title="KSampler (low noise)", add_noise="disable", noise_seed=42,
                steps=steps, cfg=3.5, sampler_name="euler", scheduler="simple", start_at_step=split,
                end_at_step=10000, return_with_leftover_noise="disable")
    wf.wire(lo, {"model": (applied[1], 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (hi, 0)})
    dec = wf.add("VAEDecode", (2080, 1750))
    wf.wire(dec, {"samples": (lo, 0), "vae": (vae, 0)})
    _save_video(wf, (dec, 0), (2080, 1870), "otcache/wan2.2", 16.0)
    return wf.to_json()


def apply_saved(info: dict) -> dict:
    """Load Schedule (a saved file or a shipped preset) -> Apply -> sampler: no calibration needed."""
    wf = Workflow(info)
    wf.note(
        "Apply a saved schedule (FLUX.1-dev shown)\n\n"
        "Pick the reference and the anchor in the two Load Schedule nodes: files you saved with OTCache Save "
        "Schedule (ComfyUI/models/otcache/), schedules someone shared with you (copy the .json files there and "
        "press R to refresh), or the shipped LeMiCa presets (preset:<model>/reference and /anchor).\n"
        "Then move the speed-up on OTCache Apply: the plot shows at once which steps will run.\n\n"
        "Model files: diffusion_models/flux1-dev.safetensors, text_encoders/clip_l.safetensors and "
        "t5xxl_fp16.safetensors, vae/ae.safetensors.", (40, -330), size=(620, 280))
    unet = wf.add("UNETLoader", (40, 0), unet_name="flux1-dev.safetensors", weight_dtype="default")
    clip = wf.add("DualCLIPLoader", (40, 150), clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors",
                  type="flux")
    vae = wf.add("VAELoader", (40, 330), vae_name="ae.safetensors")
    load_ref = _load_schedule(wf, (420, 0), "preset:flux1-dev/reference", "Reference schedule")
    load_anc = _load_schedule(wf, (420, load_ref.size[1] + 60), "preset:flux1-dev/anchor", "Anchor schedule")
    app = wf.add("OTCacheApply", (820, 0), title="OTCache Apply", node_width=420,
                 **({"speedup": 3.0} if _has_widget(info, "OTCacheApply", "speedup") else {}))
    wf.wire(app, {"model": (unet, 0), "MODEL": (unet, 0), "reference": (load_ref, _schedule_output(load_ref)),
                  "anchor": (load_anc, _schedule_output(load_anc))})
    guid, neg = _distilled_prompts(wf, clip, 820, 520, "a lighthouse on a cliff in a storm, dramatic clouds, oil "
                                   "painting", 3.5, None)
    lat = wf.add("EmptySD3LatentImage", (1280, 520), width=1024, height=1024, batch_size=1)
    sampler = dict(seed=42, steps=50, cfg=1.0, sampler_name="euler", scheduler="simple")
    dec = _sample_and_decode(wf, 1280, 0, (app, 0), guid, neg, lat, vae, sampler)
    _save_image(wf, dec, (1660, 120), "otcache/saved-schedule")
    return wf.to_json()


def _load_schedule(wf: Workflow, pos, value: str, title: str) -> Node:
    spec = wf.info["OTCacheLoadSchedule"]
    combo = next(n for n, k, o, _ in _spec_inputs(spec) if _is_widget(k, o) and (isinstance(k, list) or k == "COMBO"))
    return wf.add("OTCacheLoadSchedule", pos, title=title, **{combo: value})


def tiny_test_workflow(info: dict, model_name: str, reference: str, anchor: str, steps: int = 8,
                       speedup: float = 2.0) -> dict:
    """For tests: the tiny Wan model, test conditioning, presets through Load Schedule, Apply, KSampler, SaveLatent."""
    wf = Workflow(info)
    unet = wf.add("UNETLoader", (40, 0), unet_name=model_name, weight_dtype="default")
    pos = wf.add("OTCacheTestConditioning", (40, 150), family="wan", seed=1, tokens=8)
    neg = wf.add("OTCacheTestConditioning", (40, 330), family="wan", seed=2, tokens=8)
    load_ref = _load_schedule(wf, (420, 0), reference, "Reference schedule")
    load_anc = _load_schedule(wf, (420, load_ref.size[1] + 60), anchor, "Anchor schedule")
    app = wf.add("OTCacheApply", (820, 0), title="OTCache Apply", node_width=420,
                 **({"speedup": speedup} if _has_widget(info, "OTCacheApply", "speedup") else {}))
    wf.wire(app, {"model": (unet, 0), "MODEL": (unet, 0), "reference": (load_ref, _schedule_output(load_ref)),
                  "anchor": (load_anc, _schedule_output(load_anc))})
    lat = wf.add("EmptyHunyuanLatentVideo", (1280, 420), width=64, height=64, length=5, batch_size=1)
    ks = wf.add("KSampler", (1280, 0), seed=7, steps=steps, cfg=3.0, sampler_name="euler", scheduler="simple",
                denoise=1.0)
    wf.wire(ks, {"model": (app, 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (lat, 0)})
    save = wf.add("SaveLatent", (1660, 0), filename_prefix="otcache_test")
    wf.link(ks, "LATENT", save, "samples")
    return wf.to_json()


WORKFLOWS = {
    "otcache_flux1_dev.json": flux1_dev,
    "otcache_qwen_image.json": qwen_image,
    "otcache_hunyuan_video.json": hunyuan_video,
    "otcache_wan2.1_t2v.json": wan21,
    "otcache_wan2.2_t2v_two_stage.json": wan22,
    "otcache_apply_saved_schedule.json": apply_saved,
}


def build_all(info: dict) -> dict[str, dict]:
    out = {}
    for name, fn in WORKFLOWS.items():
        wf = fn(info)
        wf["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-otcache/{name}"))  # stable across regenerations
        out[name] = wf
    return out


def dumps(wf: dict) -> str:
    return json.dumps(wf, indent=2, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------------------------- CLI

def _object_info(args) -> dict:
    if args.object_info:
        return json.loads(Path(args.object_info).read_text())
    if args.server:
        with urllib.request.urlopen(args.server.rstrip("/") + "/object_info", timeout=120) as r:
            return json.loads(r.read())
    sys.path.insert(0, str(ROOT / "tests" / "host"))
    import comfy_server  # the test harness: a temporary base directory, nothing written into the checkout

    base = Path(tempfile.mkdtemp(prefix="otcache-wf-"))
    server = comfy_server.start_server(Path(args.comfy).expanduser(), base)
    try:
        return server.get("/object_info")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--server", help="URL of a running ComfyUI with the pack installed")
    src.add_argument("--comfy", help="ComfyUI checkout to start (with this pack) for the node definitions")
    src.add_argument("--object-info", help="a saved /object_info JSON answer")
    args = ap.parse_args(argv)
    info = _object_info(args)
    built = build_all(info)
    for out in OUT_DIRS:
        out.mkdir(exist_ok=True)
        for name, wf in built.items():
            (out / name).write_text(dumps(wf), encoding="utf-8")
    print(f"wrote {len(built)} workflows to " + " and ".join(str(d.relative_to(ROOT)) for d in OUT_DIRS))


if __name__ == "__main__":
    main()
