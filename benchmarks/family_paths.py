"""Which path OTCache takes on every tiny model of the harness, measured on this host's ComfyUI (prints a table).

For each family of ``tests/host/tiny_models.py`` (the 2026 ones of ``tiny_models_2026`` included) that this
ComfyUI can build: the model class, the path OTCache Apply announces (block caching, or the whole-model
fallback and its reason), and what a 6-step run with K = 4 computed steps really did: model calls that
reached the diffusion model and runs of the stack's last block (block path: 6 calls, 4 stack runs; the
fallback: 4 and 4; a silent no-op would show 6 and 6). Then the count of models and of distinct classes per
path. SD3 and SD1.5 are listed by their announced path only (their forward has no DIFFUSION_MODEL hook, so
the probe cannot count their calls).

Run:  COMFYUI_PATH=~/comfy/ComfyUI-0.33 .venv-comfy033/bin/python benchmarks/family_paths.py
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "host"))
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402,F401  (registers the pack as ``otcache_pack``; one torch thread)
import comfy_host  # noqa: E402

comfy_host.ensure_comfy_importable()

import sampling  # noqa: E402
import tiny_models as tm  # noqa: E402
import tiny_models_2026 as t26  # noqa: E402
from probes import attach_probe  # noqa: E402
from otcache_pack.nodes.runtime.families import detect_family  # noqa: E402
from otcache_pack.nodes.runtime.patcher import PatchOptions, patch_model  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

N, SCHED = 6, Schedule(6, (0, 1, 3, 5))


def measure(family: str) -> dict | None:
    try:
        b = tm.build(family)
    except t26.Unavailable as e:
        print(f"  ({e})")
        return None
    spec = detect_family(b.diffusion_model)
    row = {"family": family, "class": type(b.diffusion_model).__name__, "block": spec.block_caching,
           "why": spec.reason, "calls": "-", "stack": "-"}
    if family not in tm.UNET_ERA_FAMILIES:
        probed, probe = attach_probe(patch_model(b.patcher, SCHED, PatchOptions()))
        with sampling.forced_batched_cfg():
            sampling.run_sampler(probed, b, N, 3.0)
        row["calls"], row["stack"] = probe.n_calls, probe.block_runs
    return row


def main() -> None:
    logging.getLogger("otcache").setLevel(logging.WARNING)
    print(f"{comfy_host.describe()}; schedule {SCHED.mask_string()} (K={SCHED.budget} of {N})")
    names = tm.FAMILIES + tm.UNET_ERA_FAMILIES + tuple(t26.FAMILIES)
    rows = [r for r in (measure(f) for f in names) if r is not None]
    print("\n| tiny model | class | path | model calls | stack runs |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        path = "block caching" if r["block"] else f"fallback: {r['why']}"
        print(f"| {r['family']} | `{r['class']}` | {path} | {r['calls']} | {r['stack']} |")
    for label, on in (("block caching", True), ("fallback", False)):
        models = [r for r in rows if r["block"] is on]
        print(f"{label}: {len(models)} models, {len({r['class'] for r in models})} classes")


if __name__ == "__main__":
    main()
