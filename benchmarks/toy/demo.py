"""``python -m benchmarks.toy demo``: the whole OTCache method on the bundled toy model.

1. calibration: uncached, recorded runs of a few (class, seed) pairs;
2. reference: hybrid edge errors + leximax graph search at K_ref ~ N/2;
3. anchor: Optuna search at K_anc ~ N/5 minimising the perceptual distance to the
   uncached output (LPIPS when its weights are on disk, else 1 - SSIM);
4. OT interpolation to budgets between them (no model call);
5. cached sampling of held-out pairs (other classes, other seeds) at every budget through
   the same runtime as in ComfyUI, scored against their uncached outputs and timed in
   interleaved rounds with the uncached run (best of ``--repeats``); a wall-clock ratio
   above N/K cannot be true and is printed marked as noise. Beside each budget, what costs
   nothing to set up: the free default (OTCache Apply with nothing connected) and a uniform
   output skip; and what the calibration cost, in uncached generations.

Prints a table and writes ``demo.png`` (sample grids per budget + the schedules) and the
schedules as JSON under the output folder.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from otcache_engine.schedules import schedule_io
from otcache_engine.schedules.baselines import uniform_k
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
    held_out = make_pairs(EVALUATION_CLASSES, range(5000, 5000 + args.eval_pairs))
    scorer = Scorer(use_lpips=not args.no_lpips)
    if scorer.lpips is None:
        say(f"LPIPS: n/a ({LPIPS_HINT}); the anchor search optimises 1 - SSIM instead")
    with StackCounter(toy) as spent:
        reference, anchor, calibration_runs, name = _calibrate_and_search(toy, args, scorer, say)
    generations = spent.runs / one_generation(toy)
    budgets = method.budgets_between(reference.budget, anchor.budget, args.budgets)
    schedules = {k: method.interpolate(reference, anchor, k) for k in budgets}
    say(f"4/5 OT interpolation to K={budgets}")
    say(f"5/5 cached sampling of {len(held_out)} held-out pairs (classes/seeds unseen in calibration), "
        f"timed {args.repeats}x interleaved with the uncached run")
    rows, grids, full = _sampled_rows(toy, held_out, schedules, args, calibration_runs, scorer, say)
    print(f"OTCache on the bundled toy DiT: N={n}, reference K={reference.budget} (leximax), anchor "
          f"K={anchor.budget} ({args.trials} Optuna trials, {name}), {args.reuse} reuse, {len(held_out)} held-out "
          f"pairs; uncached run {full.seconds:.2f} s (best of {args.repeats}, interleaved)")
    print(f"calibration + anchor search cost {spent.runs} block-stack runs = {generations:.1f} uncached "
          f"generations of {n} steps; the free default and the uniform skip cost nothing to set up")
    print(text_table(rows))
    width = max([6] + [len(f"K={k}") for k in schedules])
    print(f"{'ref':<{width}}  {reference.mask_string()}  (leximax graph, K={reference.budget})")
    for k, sch in schedules.items():
        print(f"{f'K={k}':<{width}}  {sch.mask_string()}")
    print(f"{'anchor':<{width}}  {anchor.mask_string()}  (Optuna, K={anchor.budget})")
    if scorer.lpips is None:
        print(f"LPIPS n/a: {LPIPS_HINT}")
    png = _write_outputs(args.out, reference, anchor, schedules, grids, rows, n)
    print(f"wrote {png} and the schedules in {args.out} ({say.elapsed():.0f} s)")
    return 0


LPIPS_HINT = ("its AlexNet backbone is not on this machine; inside ComfyUI, OTCache Anchor Search fetches it "
              "once into ComfyUI/models/otcache/lpips with a progress bar (and says so when it cannot)")


class StackCounter:
    """Counts runs of the toy model's block stack (its first block's forward calls): transformer work."""

    def __init__(self, toy: Toy):
        self.block, self.runs, self._handle = toy.model.blocks[0], 0, None

    def __enter__(self) -> "StackCounter":
        self._handle = self.block.register_forward_pre_hook(self._count)
        return self

    def _count(self, *_) -> None:
        self.runs += 1

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def one_generation(toy: Toy) -> int:
    """Block-stack runs of one uncached generation (one pair) at this setting."""
    with StackCounter(toy) as one:
        full_job(toy, make_pairs((0,), (0,)))()
    return max(1, one.runs)


def _calibrate_and_search(toy: Toy, args: argparse.Namespace, scorer: Scorer, say: Progress):
    n = toy.steps
    k_ref, k_anc = method.fraction_budget(n, args.ref_fraction), method.fraction_budget(n, args.anchor_fraction)
    calib = make_pairs(CALIBRATION_CLASSES, range(100, 100 + args.pairs))
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
    return reference, anchor, runs, name


def _sampled_rows(toy: Toy, held_out, schedules: dict, args: argparse.Namespace, runs, scorer: Scorer,
                  say: Progress) -> tuple[list[Row], list, Outcome]:
    """OTCache at every budget, and beside it what costs nothing to set up: the free default (OTCache Apply
    with nothing connected: uniform + the whole output extrapolated with omnicache gamma 0.5) and a uniform output skip."""
    n = toy.steps
    configs = [(f"OTCache K={k}", s, args.reuse, method.gammas_for(runs, args.reuse, s)) for k, s in schedules.items()]
    for k in schedules:
        configs += [(f"free default K={k}", uniform_k(n, k), "omnicache", 0.5),
                    (f"uniform skip K={k}", uniform_k(n, k), "output", None)]
    jobs = [full_job(toy, held_out)] + [schedule_job(toy, held_out, s, reuse, gamma) for _, s, reuse, gamma in configs]
    full, *cached = (outcome(t) for t in time_interleaved(jobs, args.repeats))
    rows, grids = [], [("uncached", full.x)]
    for (label, s, _, _), out in zip(configs, cached):
        sc = scorer(out.x, full.x)
        rows.append(Row(label, out.block_runs, n / out.block_runs, full.seconds / out.seconds,
                        sc["psnr"], sc["ssim"], sc["lpips"], extra={"seconds": out.seconds}))
        if label.startswith("OTCache"):
            grids.append((f"K={s.budget} ({n / s.budget:.1f}x)", out.x))
            say(f"   K={s.budget}: {s.mask_string()}  PSNR {sc['psnr']:.2f}")
    return rows, grids, full


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
