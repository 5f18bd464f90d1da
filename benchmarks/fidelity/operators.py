"""Which reuse operator holds at 2-6x with nothing measured: ``python -m benchmarks.fidelity.operators``.

Uniform schedules (what Apply runs with nothing connected) at N/2 .. N/6 on every benchmark cell, with CFG off
(cfg 1) and on, through OTCache's patcher, with every operator the pack has: plain reuse of the block residual
or of the whole output, OmniCache's gamma extrapolation and the Taylor forecasts (TaylorSeer, order 1 and 2),
each of the last two in the block-residual space and in the output space. Scored by PSNR against the
uncached images on held-out pairs. The free default (Apply with nothing connected) must never be below the
naive skip (``output``: the whole model output of the last computed step) at any budget of any cell.

Writes ``docs/results/operators/operators.json`` and ``operators.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path


from . import bench, host, setups  # noqa: F401  (host: ComfyUI importable on CPU)

OUT = bench.ROOT / "docs" / "results" / "operators"
DIVISORS = (2, 3, 4, 5, 6)
OPERATORS = (("output", 0.5, 0, ""), ("residual", 0.5, 0, ""),
             ("omnicache", 1.0, 0, ""), ("omnicache", 0.5, 0, "output"), ("omnicache", 1.0, 0, "output"),
             ("taylor", 0.5, 1, ""), ("taylor", 0.5, 2, ""), ("taylor", 0.5, 1, "output"),
             ("taylor", 0.5, 2, "output"))
CELLS = (("flux", 1.0), ("flux", 3.5), ("wan21", 3.0), ("wan21", 1.0), ("wan21_plain", 3.0))
log = logging.getLogger("fidelity")


def label(reuse: str, gamma: float, order: int, space: str) -> str:
    from otcache_pack.nodes.runtime.operators import Operator

    return Operator(reuse, gamma, order, space).label()


def run_cell(family: str, cfg: float, n: int, pairs: int) -> dict:
    from otcache_pack.nodes.runtime.patcher import PatchOptions, patch_model

    setup = dataclasses.replace(setups.SETUPS[family], cfg=cfg)
    model = setups.load(setup)
    scorer = bench.Scorer(model, setup, n, bench.held_out_pairs()[:pairs])
    cell = {"family": family, "cfg": cfg, "steps": n, "held_out_pairs": pairs, "psnr": {}}
    for k in sorted({max(2, round(n / d)) for d in DIVISORS}, reverse=True):
        row = {}
        for reuse, gamma, order, space in OPERATORS:
            opts = PatchOptions(reuse=reuse, gamma=gamma, order=order or 2, space=space)
            row[label(reuse, gamma, order, space)] = scorer.score(patch_model(model, bench.uniform(n, k), opts))[0]["psnr"]
        cell["psnr"][str(k)] = row
        log.warning("[operators] %s cfg %g N=%d K=%d: %s", family, cfg, n, k, {o: round(p, 1) for o, p in row.items()})
    return cell


def write_report(cells: list[dict], out: Path) -> Path:
    lines = ["# Reuse operators on uniform schedules (in-host benchmark)", "",
             "PSNR (dB) against the uncached images on held-out pairs; uniform schedules, as Apply runs with "
             "nothing connected. `output` is the naive skip (the whole output of the last computed step).", ""]
    for c in cells:
        ks = list(c["psnr"])
        ops = list(c["psnr"][ks[0]])
        lines += [f"## {c['family']}, cfg {c['cfg']:g}, N = {c['steps']} ({c['held_out_pairs']} held-out pairs)", "",
                  "| operator | " + " | ".join(f"K={k} (N/{c['steps'] / int(k):.1f})" for k in ks) + " |",
                  "|---|" + "---:|" * len(ks)]
        for op in ops:
            lines.append(f"| {op} | " + " | ".join(f"{c['psnr'][k][op]:.1f}" for k in ks) + " |")
        lines.append("")
    path = out / "operators.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", nargs="+", type=int, default=[30])
    ap.add_argument("--pairs", type=int, default=8, help="held-out pairs (default 8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    bench.quiet_run(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    cells = [run_cell(family, cfg, n, args.pairs) for n in args.steps for family, cfg in CELLS]
    (args.out / "operators.json").write_text(json.dumps(cells, indent=1) + "\n", encoding="utf-8")
    print(f"[operators] report: {write_report(cells, args.out)}")


if __name__ == "__main__":
    main()
