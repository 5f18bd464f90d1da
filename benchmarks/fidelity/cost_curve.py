"""What a calibration costs and what it buys: ``python -m benchmarks.fidelity.cost_curve [--families ...]``.

For each benchmark cell, each pipeline variant -- from "quick" to today's thorough defaults -- runs through the
pack's nodes (Calibrate on the calibration prompts -> Anchor Search -> Apply with ``reuse`` auto), once per
search seed (the anchor search lands differently from seed to seed). Its cost is the transformer work it
spent, counted as block-stack passes (one per model call with CFG batched), in uncached generations (passes
/ N). What it buys is the PSNR of Apply's output against the uncached images on held-out (prompt, seed)
pairs at N/2 .. N/6, beside the two things a user gets for free: **Apply with nothing connected** (the free
default) and a uniform output skip at the same K.

Writes ``docs/results/cost/<family>_N<steps>.json`` and ``cost.md`` (``write_report``).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from . import bench, host, pipeline, setups  # noqa: F401  (host: ComfyUI importable on CPU)
from .sampling import Pair

OUT = bench.ROOT / "docs" / "results" / "cost"
DIVISORS = (2, 3, 4, 5, 6)
log = logging.getLogger("fidelity")


@dataclass(frozen=True)
class Variant:
    """One way to run the pipeline: how many calibration pairs, and the two nodes' inputs."""

    name: str
    pairs: int
    calibrate: dict
    anchor: dict


VARIANTS = (
    Variant("thorough: 4 pairs, hybrid, operator check, 100 trials, every budget", 4,
            {"error_mode": "hybrid", "measure": True},
            {"trials": 100, "validate": True, "validate_budgets": "every budget"}),
    Variant("4 pairs, hybrid, operator check, 30 trials, every budget", 4, {"error_mode": "hybrid", "measure": True},
            {"trials": 30, "validate": True, "validate_budgets": "every budget"}),
    Variant("1 pair, hybrid, operator check, 30 trials, every budget", 1, {},
            {"trials": 30, "validate": True, "validate_budgets": "every budget"}),
    Variant("2 pairs, local, operator check, 30 trials, the two ends", 2, {"error_mode": "local", "measure": True},
            {"trials": 30, "validate": True, "validate_budgets": "the two ends"}),
    Variant("quick: 1 pair, local, no operator check, 12 trials, the two ends", 1,
            {"error_mode": "local", "measure": False},
            {"trials": 12, "validate": True, "validate_budgets": "the two ends"}),
    Variant("1 pair, hybrid, operator check, 30 trials, auto (the two ends with one pair)", 1, {},
            {"trials": 30}),
    Variant("1 pair, hybrid, operator check, 20 trials, the two ends", 1, {"error_mode": "hybrid", "measure": True},
            {"trials": 20, "validate": True, "validate_budgets": "the two ends"}),
    Variant("defaults: 1 pair, hybrid, operator check, 25 trials, auto (the two ends with one pair)", 1, {}, {}),
)


@dataclass
class Run:
    variant: str
    search_seed: int
    generations: float                  # transformer work of Calibrate + Anchor Search, in uncached generations
    calibrate_generations: float
    psnr: dict[int, float] = field(default_factory=dict)      # K -> mean PSNR on the held-out pairs
    operator: dict[int, str] = field(default_factory=dict)    # K -> what Apply ran (free default or calibrated)
    seconds: float = 0.0


def budgets(n: int) -> list[int]:
    return sorted({max(2, round(n / d)) for d in DIVISORS}, reverse=True)


def held_out(count: int) -> tuple[Pair, ...]:
    return bench.held_out_pairs()[:count]


def run_variant(model: Any, setup: setups.Setup, n: int, v: Variant, seed: int, scorer: bench.Scorer) -> Run:
    stage = pipeline.Stage(setup, n, bench.calibration_pairs()[:v.pairs])
    t0 = time.perf_counter()
    with pipeline.PassCounter(model) as cal:
        reference, calibration = pipeline.calibrate(model, stage, **v.calibrate)
    with pipeline.PassCounter(model) as anc:
        anchor = pipeline.anchor_search(model, stage, reference, calibration, search_seed=seed,
                                        storage=f"cost-{setup.name}-{n}-{v.pairs}-{seed}-{time.time_ns()}",
                                        **v.anchor)
    run = Run(v.name, seed, (cal.passes + anc.passes) / n, cal.passes / n, seconds=time.perf_counter() - t0)
    from otcache_pack.nodes.apply_node import OTCacheApply
    from otcache_pack.nodes.runtime.patcher import patched_config

    for k in budgets(n):
        out = OTCacheApply.execute(model, reference=reference, anchor=anchor, budget_mode="compute steps",
                                   compute_steps=k)
        run.psnr[k] = scorer.score(out.args[0])[0]["psnr"]
        free = "runs the free default" in out.ui["otcache_schedule"][0]["note"]
        run.operator[k] = ("free default: " if free else "") + patched_config(out.args[0]).reuse.describe()
    log.warning("[cost] %s seed %d: %.1f generations; PSNR %s", v.name, seed, run.generations,
                {k: round(p, 1) for k, p in run.psnr.items()})
    return run


def free_rows(model: Any, n: int, scorer: bench.Scorer) -> dict[str, dict[int, float]]:
    """What a user gets without calibrating: Apply with nothing connected, and a uniform output skip."""
    rows: dict[str, dict[int, float]] = {"free default": {}, "uniform output skip": {}}
    for k in budgets(n):
        free = pipeline.apply(model, speedup=n / k)   # nothing connected: the run's K comes from its speed-up
        rows["free default"][k] = scorer.score(free)[0]["psnr"]
        skip = pipeline.apply(model, reference=bench.uniform(n, k), reuse="output")
        rows["uniform output skip"][k] = scorer.score(skip)[0]["psnr"]
    return rows


def run_cell(setup: setups.Setup, n: int, seeds: list[int], variants: list[Variant], pairs: int) -> dict:
    model = setups.load(setup)
    scorer = bench.Scorer(model, setup, n, held_out(pairs))
    cell = {"family": setup.name, "steps": n, "held_out_pairs": pairs, "free": free_rows(model, n, scorer),
            "runs": []}
    for v in variants:
        for seed in seeds:
            cell["runs"].append(asdict(run_variant(model, setup, n, v, seed, scorer)))
    return cell


def write_report(out: Path) -> Path:
    """cost.md from every cell's JSON: per variant, the cost and the PSNR range over search seeds."""
    lines = ["# What calibration costs and buys (in-host benchmark)", "",
             "Cost: transformer work of Calibrate + Anchor Search in uncached generations (block-stack passes / N). "
             "PSNR (dB) against the uncached images on held-out pairs, min..max over the search seeds; in "
             "brackets the worst seed's margin over the free default (Apply with nothing connected).", ""]
    for path in sorted(out.glob("*_N*.json")):
        cell = json.loads(path.read_text(encoding="utf-8"))
        ks = sorted({int(k) for k in cell["free"]["free default"]}, reverse=True)
        n = cell["steps"]
        lines += [f"## {cell['family']}, N = {n} ({cell['held_out_pairs']} held-out pairs)", "",
                  "| pipeline | cost (generations) | " + " | ".join(f"K={k} (N/{n / k:.1f})" for k in ks) + " |",
                  "|---|---:|" + "---:|" * len(ks)]
        for name in cell["free"]:
            lines.append(f"| {name} | 0 | " + " | ".join(f"{cell['free'][name][str(k)]:.1f}" for k in ks) + " |")
        by_variant: dict[str, list[dict]] = {}
        for r in cell["runs"]:
            by_variant.setdefault(r["variant"], []).append(r)
        for name, runs in by_variant.items():
            cost = "..".join(sorted({f"{r['generations']:.1f}" for r in runs}))
            cells = []
            for k in ks:
                ps = [r["psnr"][str(k)] for r in runs]
                margin = min(ps) - cell["free"]["free default"][str(k)]
                cells.append(f"{min(ps):.1f}..{max(ps):.1f} ({margin:+.1f})")
            lines.append(f"| {name} | {cost} | " + " | ".join(cells) + " |")
        lines.append("")
    path = out / "cost.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


README_ROWS = {   # variant -> its row in the README (the others stay in cost.md)
    VARIANTS[4].name: "**quick** (`effort` quick): 1 pair, local error, no operator check, 12 trials, the two ends",
    VARIANTS[6].name: "defaults but 20 trials, 1 pair",
    VARIANTS[7].name: "**defaults**, 1 pair (hybrid error, operator check, 25 trials, `validate_budgets` auto: "
                      "the two ends with one pair)",
    VARIANTS[5].name: "defaults but 30 trials, 1 pair",
    VARIANTS[2].name: "defaults but 30 trials and `validate_budgets` every budget, 1 pair",
    VARIANTS[1].name: "4 pairs, 30 trials (auto: every budget)",
    VARIANTS[0].name: "**thorough** (`effort` thorough): 4 pairs, 100 trials, every budget",
}
TITLES = {"flux": "Flux (FLUX.1-schnell class, cfg 1)", "wan21": "Wan 2.1 class (cfg 3)"}


def write_readme_block(out: Path) -> Path:
    """readme.md: per cell, the README's rows -- the most a variant cost over the search seeds, and the
    worse seed's PSNR (``scripts/update_readme.py`` copies it between the ``cost-results`` markers)."""
    lines = []
    for path in sorted(out.glob("*_N*.json")):
        cell = json.loads(path.read_text(encoding="utf-8"))
        ks = sorted({int(k) for k in cell["free"]["free default"]}, reverse=True)
        n = cell["steps"]
        lines += [f"{TITLES.get(cell['family'], cell['family'])}, N = {n}:", "",
                  "| pipeline | cost | " + " | ".join(f"N/{n / k:.2g}" for k in ks) + " |",
                  "| --- | ---: |" + " ---: |" * len(ks)]
        names = {"free default": "Apply, nothing connected (free default)",
                 "uniform output skip": "uniform output skip"}
        for key, label in names.items():
            lines.append(f"| {label} | 0 | " + " | ".join(f"{cell['free'][key][str(k)]:.1f}" for k in ks) + " |")
        for variant, label in README_ROWS.items():
            runs = [r for r in cell["runs"] if r["variant"] == variant]
            if runs:
                worst = [f"{min(r['psnr'][str(k)] for r in runs):.1f}" for k in ks]
                lines.append(f"| {label} | {max(r['generations'] for r in runs):.1f} | " + " | ".join(worst) + " |")
        lines.append("")
    path = out / "readme.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=["flux", "wan21"], choices=sorted(setups.SETUPS))
    ap.add_argument("--steps", nargs="+", type=int, default=[30])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--variants", nargs="+", type=int, default=list(range(len(VARIANTS))),
                    help="indices into VARIANTS")
    ap.add_argument("--pairs", type=int, default=8, help="held-out pairs (default 8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    bench.quiet_run(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.families:
        for n in args.steps:
            cell = run_cell(setups.SETUPS[name], n, args.seeds, [VARIANTS[i] for i in args.variants], args.pairs)
            path = args.out / f"{name}_N{n}.json"
            path.write_text(json.dumps(cell, indent=1) + "\n", encoding="utf-8")
            print(f"[cost] {path}")
    print(f"[cost] report: {write_report(args.out)}, README rows: {write_readme_block(args.out)}")


if __name__ == "__main__":
    main()
