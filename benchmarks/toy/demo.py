"""``python -m benchmarks.toy demo``: the whole OTCache method on the bundled toy model.

1. calibration: uncached, recorded runs of a few (class, seed) pairs;
2. reference: hybrid edge errors + leximax graph search at K_ref ~ N/2;
3. anchor: Optuna search at K_anc ~ N/5 minimising the perceptual distance to the
   uncached output (LPIPS when its weights are on disk, else 1 - SSIM);
4. OT interpolation to budgets between them (no model call);
5. cached sampling of held-out pairs (other classes, other seeds) at every budget through
   the same runtime as in ComfyUI, scored against their uncached outputs and timed in
   interleaved rounds with the uncached run (best of ``--repeats``); a wall-clock ratio
   above N/K cannot be true and is printed marked as noise.

Prints a table and writes ``demo.png`` (sample grids per budget + the schedules) and the
schedules as JSON under the output folder.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from otcache_engine.schedules import schedule_io
from . import method
from .harness import (Outcome, Scorer, Toy, full_job, make_pairs, objective_metric, outcome, record, schedule_job,
                      time_interleaved)
from .report import Progress, Row, labelled_grid, markdown_table, schedule_figure, stack_vertically, text_table

CALIBRATION_CLASSES = (0, 4, 8, 9)           # red circle, green square, blue triangle, red cross
EVALUATION_CLASSES = tuple(c for c in range(12) if c not in CALIBRATION_CLASSES)


def run(args: argparse.Namespace) -> int:
    """The whole demo: calibration, reference, anchor search, interpolation, sampling and its report."""
    say = Progress("demo", args.quiet)
    toy = Toy.load(args.steps, args.weights)
    n = toy.steps
    k_ref, k_anc = method.fraction_budget(n, args.ref_fraction), method.fraction_budget(n, args.anchor_fraction)
    calib = make_pairs(CALIBRATION_CLASSES, range(100, 100 + args.pairs))
    held_out = make_pairs(EVALUATION_CLASSES, range(5000, 5000 + args.eval_pairs))
    scorer = Scorer(use_lpips=not args.no_lpips)
    if scorer.lpips is None:
        say(f"LPIPS: n/a ({scorer.lpips_reason}); the anchor search optimises 1 - SSIM instead")

    say(f"1/5 calibration: {len(calib)} uncached runs of {n} steps")
    runs = record(toy, calib)
    gap = method.graph_gap(n, k_anc)
    say(f"2/5 reference: hybrid edge errors (L={gap}) and leximax graph search at K_ref={k_ref}")
    weights = method.hybrid_weights(toy, runs, calib, gap, say)
    reference = method.reference_schedule(weights, k_ref, toy, method.graph_gap(n, k_ref))
    graph_anchor = method.reference_schedule(weights, k_anc, toy, gap)

    name, distance = objective_metric(scorer)
    problem = method.AnchorProblem(toy, calib, runs, distance, name, args.reuse)
    say(f"3/5 anchor: Optuna, {args.trials} trials at K_anc={k_anc}, objective {name}")
    anchor = method.search(problem, k_anc, args.trials, args.seed, reference=reference, graph=graph_anchor,
                           progress=say)

    budgets = method.budgets_between(k_ref, k_anc, args.budgets)
    schedules = {k: method.interpolate(reference, anchor, k) for k in budgets}
    say(f"4/5 OT interpolation to K={budgets}")

    say(f"5/5 cached sampling of {len(held_out)} held-out pairs (classes/seeds unseen in calibration), "
        f"timed {args.repeats}x interleaved with the uncached run")
    full, cached = timed_runs(toy, held_out, schedules, args.reuse, runs, args.repeats)
    rows, grids = [], [("uncached", full.x)]
    for (k, s), out in zip(schedules.items(), cached):
        sc = scorer(out.x, full.x)
        rows.append(Row(f"OTCache K={k}", out.block_runs, n / out.block_runs, full.seconds / out.seconds,
                        sc["psnr"], sc["ssim"], sc["lpips"], extra={"seconds": out.seconds}))
        grids.append((f"K={k} ({n / k:.1f}x)", out.x))
        say(f"   K={k}: {s.mask_string()}  PSNR {sc['psnr']:.2f}")

    table = text_table(rows)
    print(f"OTCache on the bundled toy DiT: N={n}, reference K={k_ref} (leximax), anchor K={k_anc} "
          f"({args.trials} Optuna trials, {name}), {args.reuse} reuse, {len(held_out)} held-out pairs; uncached run "
          f"{full.seconds:.2f} s (best of {args.repeats}, interleaved)")
    print(table)
    width = max([6] + [len(f"K={k}") for k in schedules])
    print(f"{'ref':<{width}}  {reference.mask_string()}  (leximax graph, K={k_ref})")
    for k, s in schedules.items():
        print(f"{f'K={k}':<{width}}  {s.mask_string()}")
    print(f"{'anchor':<{width}}  {anchor.mask_string()}  (Optuna, K={k_anc})")
    if scorer.lpips is None:
        print(f"LPIPS n/a: {scorer.lpips_reason}")
    png = _write_outputs(args.out, reference, anchor, schedules, grids, rows, n)
    print(f"wrote {png} and the schedules in {args.out} ({say.elapsed():.0f} s)")
    return 0


def timed_runs(toy: Toy, pairs, schedules: dict, reuse: str, runs, repeats: int) -> tuple[Outcome, list[Outcome]]:
    """The uncached run and one cached run per schedule, timed in interleaved rounds (best of ``repeats``):
    timed once up front, the uncached run could catch a busy spell alone and inflate every wall x."""
    jobs = [full_job(toy, pairs)] + [schedule_job(toy, pairs, s, reuse, method.gammas_for(runs, reuse, s))
                                     for s in schedules.values()]
    full, *cached = (outcome(t) for t in time_interleaved(jobs, repeats))
    return full, cached


def _write_outputs(out: Path, reference, anchor, schedules, grids, rows, n: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    schedule_io.save(reference, out / "reference.json")
    schedule_io.save(anchor, out / "anchor.json")
    for k, s in schedules.items():
        schedule_io.save(s, out / f"otcache_K{k}.json")
    (out / "table.md").write_text(markdown_table(rows) + "\n", encoding="utf-8")
    (out / "table.json").write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=str) + "\n",
                                    encoding="utf-8")
    plot = schedule_figure([reference, *schedules.values(), anchor],
                           ["reference", *[f"OT K={k}" for k in schedules], "anchor"],
                           f"OTCache schedules, toy DiT, N={n}")
    return stack_vertically([labelled_grid(grids), plot], out / "demo.png")
