"""In-host fidelity benchmark: ``python -m benchmarks.fidelity.bench [--families ...] [--steps 30 50]``.

For every benchmark model and step count, the user's pipeline runs through the pack's nodes (Calibrate on
4 prompts -> Anchor Search -> Apply at K computed steps, defaults unless a row says otherwise) and is scored
on 16 held-out (prompt, seed) pairs, never used by calibration or search, by PSNR / SSIM of the decoded
images against the uncached ones. Beside it, at the same K:

- ``uniform``: the uniform schedule (``round(k (N-1) / (K-1))``) through OTCache Apply with the same operator;
- ``EasyCache`` / ``LazyCache``: ComfyUI's core caches, their threshold bisected until the mean computed
  steps over the held-out pairs match K (only K is matched, never quality), run per pair as a user would;
- ``direct``: the anchor search run at an intermediate budget itself (same code, trials and pairs), against
  the OT interpolation there (the method's premise: interpolation is as good as re-optimising).

Writes ``docs/results/fidelity/<family>_N<steps>.json``, ``fidelity.md`` and ``fidelity.png`` (``report``).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import host, pipeline, prompts, sampling, setups
from .report import budgets_of
from .sampling import Pair

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "results" / "fidelity"
CALIBRATION_PROMPTS = (0, 4, 8, 11)
CALIBRATION_SEED = 0          # prompt k is calibrated with seed k (Calibrate's pairing)
HELD_OUT_SEED = 1000          # 16 held-out pairs, each its own seed: 1000 .. 1015
OPERATORS = (("residual", 0.5), ("output", 0.5), ("omnicache", 0.5), ("omnicache", 1.0))

log = logging.getLogger("fidelity")


def calibration_pairs(seed: int = CALIBRATION_SEED) -> tuple[Pair, ...]:
    return tuple(Pair(p, seed + k) for k, p in enumerate(CALIBRATION_PROMPTS))


def held_out_pairs() -> tuple[Pair, ...]:
    """The 8 prompts never calibrated on, twice each, every pair with a seed of its own."""
    others = [p for p in range(prompts.NUM_PROMPTS) if p not in CALIBRATION_PROMPTS]
    return tuple(Pair(others[i % len(others)], HELD_OUT_SEED + i) for i in range(2 * len(others)))


def budgets(n: int) -> list[int]:
    """K from N/1.7 to N/4, the anchor's own (N/5) and below it (N/6): the report's columns."""
    return sorted(set(budgets_of(n)), reverse=True)


def intermediate(k_ref: int, k_anc: int) -> list[int]:
    """Four budgets strictly between anchor and reference."""
    return sorted({round(k_anc + (k_ref - k_anc) * f) for f in (0.2, 0.4, 0.6, 0.8)} - {k_ref, k_anc})


@dataclass
class Row:
    method: str
    operator: str
    budget: int                     # the K asked for
    computed: float                 # mean computed steps per pair that were run
    psnr: float
    psnr_min: float
    ssim: float
    ssim_min: float
    seconds: float                  # sampling time of the held-out pairs (batched unless per pair)
    note: str = ""
    ran_with: str = ""              # the reuse operator 'auto' ran with (default rows), as op_label writes it


@dataclass
class Cell:
    family: str
    steps: int
    rows: list[Row] = field(default_factory=list)
    uncached_seconds: float = 0.0
    schedules: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Scorer:
    """Held-out pairs of one cell: their uncached images, and scoring of a model against them."""

    def __init__(self, model: Any, setup: setups.Setup, steps: int, pairs: Sequence[Pair]):
        from otcache_pack.otcache_engine.metrics import psnr, ssim

        self.model, self.setup, self.steps, self.pairs = model, setup, steps, list(pairs)
        self._psnr, self._ssim = psnr, ssim
        times = []
        for _ in range(3):                  # the first run warms caches up; the fastest is the least disturbed
            t0 = time.perf_counter()
            with torch.no_grad():
                self.refs = sampling.images(model, setup, self.pairs, steps)
            times.append(time.perf_counter() - t0)
        self.uncached_seconds = min(times[1:])

    def score(self, patched: Any, per_pair: bool = False) -> tuple[dict[str, float], float]:
        """PSNR/SSIM (mean and min over pairs) and computed steps per pair of ``patched``."""
        t0 = time.perf_counter()
        with torch.no_grad(), pipeline.PassCounter(patched) as count:
            if per_pair:
                imgs = torch.cat([sampling.images(patched, self.setup, [p], self.steps) for p in self.pairs])
            else:
                imgs = sampling.images(patched, self.setup, self.pairs, self.steps)
        seconds = time.perf_counter() - t0
        ps = [self._psnr(imgs[i:i + 1], self.refs[i:i + 1]) for i in range(len(self.pairs))]
        ss = [self._ssim(imgs[i:i + 1], self.refs[i:i + 1]) for i in range(len(self.pairs))]
        computed = count.passes / len(self.pairs) if per_pair else float(count.passes)
        return {"psnr": float(np.mean(ps)), "psnr_min": float(np.min(ps)), "ssim": float(np.mean(ss)),
                "ssim_min": float(np.min(ss)), "computed": computed}, seconds


def _row(scorer: Scorer, method: str, op: str, k: int, patched: Any, per_pair: bool = False, note: str = "",
         ran_with: str = "") -> Row:
    m, seconds = scorer.score(patched, per_pair)
    row = Row(method, op, k, m["computed"], m["psnr"], m["psnr_min"], m["ssim"], m["ssim_min"], seconds, note,
              ran_with)
    log.warning("  %-28s %-20s K=%2d (ran %.1f)  PSNR %.2f (min %.2f)  SSIM %.4f", method, op, k, row.computed,
                row.psnr, row.psnr_min, row.ssim)
    return row


def auto_operator(reference: Any, anchor: Any, k: int) -> str:
    """The operator OTCache Apply's ``auto`` runs at K (Apply's own resolver)."""
    from otcache_pack.nodes.runtime.resolver import BudgetRequest, resolve

    return resolve(BudgetRequest(reference, anchor, mode="compute steps", budget=k)).operator.label()


def op_label(reuse: str, gamma: float) -> str:
    """The operator's name as the pack writes it (the report matches rows on it)."""
    from otcache_pack.nodes.runtime.operators import Operator

    return Operator(reuse, gamma).label()


def uniform(n: int, k: int) -> Any:
    from otcache_pack.otcache_engine.schedules.baselines import uniform_k
    return uniform_k(n, k)


THRESHOLDS = tuple(float(t) for t in np.geomspace(0.01, 5.0, 10))


def core_cache_rows(model: Any, scorer: Scorer) -> list[Row]:
    """EasyCache and LazyCache over a threshold sweep (one row per threshold), run per pair as users do.

    Which threshold gives which K depends on the pair; the sweep gives each method's whole quality-vs-K
    curve, and the comparison at a budget takes the sweep point whose mean computed steps is nearest.
    """
    rows = []
    for kind, name in (("easycache", "EasyCache"), ("lazycache", "LazyCache")):
        for threshold in THRESHOLDS:
            patched = pipeline.core_cache(model, kind, threshold)
            row = _row(scorer, name, f"threshold {threshold:.3g}", 0, patched, per_pair=True)
            row.budget = round(row.computed)
            rows.append(row)
    return rows


def graph_rows(model: Any, scorer: Scorer, stage: pipeline.Stage, op: dict, ks: Sequence[int],
               hybrid: Any) -> list[Row]:
    """The graph search's own optimum at every budget, from local and from hybrid edge errors, deployed
    with the chosen operator: how good each error model is, without anchor or interpolation."""
    rows = []
    local = pipeline.calibrate(model, stage, error_mode="local", measure=False)[1]
    for mode, data in (("local", local), ("hybrid", hybrid)):
        for k in ks:
            g = data.widened_graph_schedule(k)
            if g is not None:
                rows.append(_row(scorer, f"graph ({mode} error)", op_label(**op), k,
                                 pipeline.apply(model, reference=g, **op)))
    return rows


def edge_error_ranking(calibration: Any, anchor: Any) -> dict[str, Any]:
    """How well the calibrated edge errors rank the end-to-end errors the validation ladder measured.

    Every ladder candidate (OT, graph, uniform at every budget) has a measured error on the calibration pairs;
    the graph's additive cost predicts one. Spearman's rho over all of them (budget included, which both
    follow), and per budget whether the predicted best candidate is the measured best.
    """
    from scipy.stats import spearmanr

    from otcache_pack.nodes.measure.ladder import candidates
    from otcache_pack.otcache_engine.schedules.graph_search import schedule_cost

    ladder = anchor.provenance.get("ladder") or {}
    predicted, measured, agree, contested = [], [], 0, 0
    for k, entry in ladder.get("entries", {}).items():
        cands = candidates(calibration.reference, anchor, calibration, int(k))
        costs = {name: schedule_cost(calibration.weights_for_gap(cands[name].largest_gap), cands[name], "additive")
                 for name in entry["errors"] if name in cands}
        for name, cost in costs.items():
            predicted.append(cost)
            measured.append(entry["errors"][name])
        if len(costs) > 1:
            contested += 1
            agree += min(costs, key=costs.get) == entry["source"]
    rho = float(spearmanr(predicted, measured).statistic) if len(predicted) > 2 else float("nan")
    return {"spearman_rho": rho, "points": len(predicted), "best_agrees": agree, "budgets": contested}


def run_cell(setup: setups.Setup, steps: int, trials: int, with_direct: bool = True) -> Cell:
    model = setups.load(setup)
    cell = Cell(setup.name, steps)
    scorer = Scorer(model, setup, steps, held_out_pairs())
    cell.uncached_seconds = scorer.uncached_seconds
    stage = pipeline.Stage(setup, steps, calibration_pairs())
    log.warning("[%s N=%d] calibrate", setup.name, steps)
    t0 = time.perf_counter()
    reference, calibration = pipeline.calibrate(model, stage)
    cell.extra["calibrate_seconds"] = time.perf_counter() - t0
    log.warning("[%s N=%d] anchor search (%d trials)", setup.name, steps, trials)
    t0 = time.perf_counter()
    anchor = pipeline.anchor_search(model, stage, reference, calibration, trials=trials)
    cell.extra["anchor_seconds"] = time.perf_counter() - t0
    cell.schedules = {"reference": reference.to_dict(), "anchor": anchor.to_dict()}
    cell.extra["edge_error_ranking"] = edge_error_ranking(calibration, anchor)
    ks = budgets(steps)
    for k in ks:
        common = {"reference": reference, "anchor": anchor, "budget_mode": "compute steps", "compute_steps": k}
        cell.rows.append(_row(scorer, "OTCache", "default", k, pipeline.apply(model, **common),
                              ran_with=auto_operator(reference, anchor, k)))
        cell.rows.append(_row(scorer, "Apply, nothing connected", "default", k,
                              pipeline.apply(model, speedup=steps / k)))
        for reuse, gamma in OPERATORS:
            label = op_label(reuse, gamma)
            cell.rows.append(_row(scorer, "OTCache", label, k, pipeline.apply(model, **common, reuse=reuse,
                                                                               gamma=gamma)))
            cell.rows.append(_row(scorer, "uniform", label, k, pipeline.apply(model, reference=uniform(steps, k),
                                                                               reuse=reuse, gamma=gamma)))
    op = {"reuse": reference.provenance["reuse"], "gamma": reference.provenance["gamma"]}
    cell.rows += graph_rows(model, scorer, stage, op, ks, calibration)
    cell.rows += core_cache_rows(model, scorer)
    if with_direct:
        cell.rows += direct_rows(model, stage, scorer, reference, anchor, calibration, trials, cell.schedules)
    return cell


def direct_rows(model: Any, stage: pipeline.Stage, scorer: Scorer, reference: Any, anchor: Any, calibration: Any,
                trials: int, schedules: dict) -> list[Row]:
    """The premise test: OT interpolation (no ladder) against the anchor search run at the budget itself."""
    from otcache_pack.nodes.measure.ladder import plain_interpolation

    op = {"reuse": anchor.provenance["reuse"], "gamma": anchor.provenance["gamma"]}
    rows = []
    for k in intermediate(reference.budget, anchor.budget):
        direct = pipeline.anchor_search(model, stage, reference, calibration, trials=trials, anchor_budget=k,
                                        validate=False)
        ot = plain_interpolation(reference, anchor, k)
        schedules[f"direct_K{k}"], schedules[f"ot_K{k}"] = direct.to_dict(), ot.to_dict()
        rows.append(_row(scorer, "direct optimisation", op_label(**op), k, pipeline.apply(model, reference=direct,
                                                                                          **op)))
        rows.append(_row(scorer, "OT interpolation", op_label(**op), k, pipeline.apply(model, reference=ot, **op)))
    return rows


def save(cell: Cell, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{cell.family}_N{cell.steps}.json"
    path.write_text(json.dumps(asdict(cell), indent=1) + "\n", encoding="utf-8")
    return path


def quiet_run(threads: int) -> None:
    """Every benchmark here: its thread count, its own progress lines only (the pack's logging silenced)."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("otcache").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=sorted(setups.SETUPS), choices=sorted(setups.SETUPS))
    ap.add_argument("--steps", nargs="+", type=int, default=[30, 50])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-direct", action="store_true", help="skip the direct-optimisation runs")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    quiet_run(args.threads)
    for name in args.families:
        for n in args.steps:
            t0 = time.perf_counter()
            cell = run_cell(setups.SETUPS[name], n, args.trials, with_direct=not args.no_direct)
            cell.extra["total_seconds"] = time.perf_counter() - t0
            print(f"[bench] {name} N={n}: {save(cell, args.out)} ({cell.extra['total_seconds'] / 60:.1f} min)")
    from .report import write_report
    print(f"[bench] report: {write_report(args.out)}")


if __name__ == "__main__":
    main()
