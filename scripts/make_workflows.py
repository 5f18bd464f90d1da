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
import sys
import uuid
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_graph import (ROOT, Node, Workflow, _has_widget, _is_widget, _matching_widgets,  # noqa: E402
                            _object_info, _sample_and_decode, _save_image, _save_video, _schedule_output,
                            _spec_inputs, _typed_output, dumps)

OUT_DIRS = (ROOT / "workflows", ROOT / "example_workflows")

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
