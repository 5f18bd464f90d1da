"""Write the published LeMiCa schedules as OTCache schedule files under presets/<model>/.

The step lists are LeMiCa's released ones (N = 50 inference steps, index coordinate); see
README.md ("Presets: using OTCache before calibrating") for what they are good for. Run from the repository root:

    .venv/bin/python scripts/make_presets.py

The output is committed; tests/pack/test_presets.py checks that the files match this table.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otcache_engine import Schedule, schedule_io  # noqa: E402

CITATION = ("H. Gao, P. Chen, F. Shi, C. Tan, Z. Liu, F. Zhao, K. Wang, S. Lian. LeMiCa: Lexicographic Minimax Path "
            "Caching for Efficient Diffusion-Based Video Generation. NeurIPS 2025, arXiv:2511.00090; schedules from "
            "the released inference code, github.com/UnicomAI/LeMiCa")


def _r(a: int, b: int) -> list[int]:
    return list(range(a, b + 1))


# model key -> (display name, model family as OTCache's families.py names it, {budget: compute steps})
PRESETS: dict[str, tuple[str, str, dict[int, list[int]]]] = {
    "flux1-dev": ("FLUX.1-dev", "flux", {
        26: _r(0, 10) + [12, 15, 18, 20, 25, 30, 35, 39, 42] + _r(44, 49),
        20: _r(0, 7) + [9, 12, 15, 19, 24, 31, 38, 43] + _r(46, 49),
        15: _r(0, 5) + [7, 10, 15, 20, 27, 34, 41, 47, 49],
        10: [0, 1, 3, 7, 14, 21, 28, 35, 42, 49],
    }),
    "qwen-image": ("Qwen-Image", "qwen_image", {
        25: _r(0, 19) + [26, 33, 36, 42, 49],
        17: _r(0, 10) + [15, 22, 29, 36, 42, 49],
        10: [0, 1, 3, 7, 14, 21, 28, 35, 42, 49],
    }),
    "wan2.1-t2v-1.3b": ("Wan2.1 T2V 1.3B", "wan", {
        25: _r(0, 12) + [14, 16, 18, 21, 24, 29, 35, 40, 44, 47, 48, 49],
        20: _r(0, 9) + [11, 13, 16, 20, 26, 33, 40, 45, 48, 49],
        17: _r(0, 8) + [10, 13, 18, 25, 32, 39, 46, 49],
        14: _r(0, 5) + [7, 10, 16, 23, 30, 37, 44, 49],
    }),
    "hunyuanvideo-1.5": ("HunyuanVideo-1.5", "hunyuan_video", {
        25: _r(0, 13) + [15, 17, 19, 21, 24, 28, 33, 39, 45, 48, 49],
        20: _r(0, 11) + [13, 15, 18, 22, 28, 36, 44, 49],
        15: _r(0, 6) + [8, 10, 13, 17, 25, 33, 41, 49],
        10: [0, 1, 3, 5, 9, 17, 25, 33, 41, 49],
    }),
}
NUM_STEPS = 50


def build() -> dict[str, dict[str, Schedule]]:
    """{model key: {file stem: Schedule}}; stems are 'lemica-b<K>'."""
    out: dict[str, dict[str, Schedule]] = {}
    for key, (display, family, table) in PRESETS.items():
        lo, hi = min(table), max(table)
        out[key] = {}
        for budget, steps in sorted(table.items(), reverse=True):
            if len(steps) != budget:
                raise SystemExit(f"{key} B={budget}: the table lists {len(steps)} steps")
            role = "reference" if budget == hi else "anchor" if budget == lo else "intermediate"
            out[key][f"lemica-b{budget}"] = Schedule(
                NUM_STEPS, tuple(steps), kind="preset", force_last=True, coord="index",
                provenance={
                    "source": "LeMiCa released schedule",
                    "model": display,
                    "model_family": family,
                    "budget": budget,
                    "steps": NUM_STEPS,
                    "role": role,
                    "citation": CITATION,
                })
    return out


def main() -> None:
    for key, files in build().items():
        folder = ROOT / "presets" / key
        folder.mkdir(parents=True, exist_ok=True)
        for stem, sched in files.items():
            schedule_io.save(sched, folder / f"{stem}.json")
            print(f"presets/{key}/{stem}.json  K={sched.budget}  {sched.mask_string()}")


if __name__ == "__main__":
    main()
