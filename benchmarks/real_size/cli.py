"""The real-size mode of ``benchmarks/bench_runtime.py``: plan, device, then one model after the other.

Why this order: the plan (models, widths, tokens) needs nothing, so it is printed first; then ComfyUI is
configured for the device (on a machine without a GPU, ``--device cuda`` stops here with one sentence and
exit code 2, never a traceback); then each model is built, measured and released before the next, so the
14B model gets the whole card. A model whose bf16 weights exceed the card's free memory, or that runs out
of memory on the way, is said in one sentence and the next model runs. With ``--out`` the results file is
rewritten after every round, so a run stopped by a time limit keeps the rounds it finished.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import math
import time
from pathlib import Path

import torch

from . import device as dev
from .specs import SPECS

DEFAULT_STEPS, DEFAULT_REPEATS = 20, 3


class Report:
    """What has been measured so far, printed as it comes and kept in the results file (``--out``)."""

    def __init__(self, out: str | None, header: str) -> None:
        self.out, self.parts, self.header = (Path(out) if out else None), [], header

    def add(self, text: str) -> None:
        print(text, flush=True)
        self.parts.append(text)
        self.save()

    def save(self, partial: str = "") -> None:
        if self.out is None:
            return
        from .table import LEGEND

        self.out.parent.mkdir(parents=True, exist_ok=True)
        body = "\n\n".join([self.header, *self.parts, *([partial] if partial else []), LEGEND])
        self.out.write_text(body + "\n", encoding="utf-8")


def _fits(spec, size: str, weight_bytes: int, device: torch.device) -> str:
    """Empty when the weights fit the device's free memory, else the sentence that says they do not."""
    if device.type != "cuda":
        return ""
    free, total = torch.cuda.mem_get_info(device)
    if weight_bytes < free:
        return ""
    return (f"{spec.name} [{size}] does not fit: its bf16 weights alone take {weight_bytes / 2**30:.1f} GiB and "
            f"{dev.card_name(device)} has {free / 2**30:.1f} of {total / 2**30:.1f} GiB free; going on with "
            "the next model.")


def run_model(spec, args: argparse.Namespace, report: Report):
    """Build, measure and release one model; returns its ModelResult, or None when it did not fit."""
    from . import models, table
    import comfy.model_management as mm

    device = mm.get_torch_device()
    params, nbytes = models.weight_bytes(spec, args.size)
    refusal = _fits(spec, args.size, nbytes, device)
    if refusal:
        report.add(refusal)
        return None
    result = table.ModelResult(spec, args.size, dev.card_name(device), args.steps, args.cfg, args.repeats,
                               params, nbytes)
    bundle = None
    try:
        bundle = models.build(spec, args.size, args.seed)
        _measure(bundle, args, result, report)
    except torch.cuda.OutOfMemoryError:
        refusal = (f"{spec.name} [{args.size}] does not fit: {dev.card_name(device)} ran out of memory while "
                   f"building or sampling it ({table.size_of(nbytes)} of weights, after {result.rounds_done} "
                   "complete rounds); going on with the next model.")
    models.release(bundle)   # after the handler: the exception's frames (and their tensors) are gone
    if result.rows:          # complete rounds are kept, also when a later one ran out of memory
        report.add(table.render(result))
    if refusal:
        report.add(refusal)
        return None
    return result


def _measure(bundle, args: argparse.Namespace, result, report: Report) -> None:
    """The timed rounds, with a progress line per round and the partial table saved after each."""
    from . import measure, table

    ops = tuple(measure.BY_KEY[key] for key in args.operators)
    per_round = args.steps + len(ops) * sum(measure.budget(args.steps, s) for s in args.speedups)
    warm_steps = measure.WARMUP_STEPS + 2 * len(ops)

    def on_warm(seconds: float) -> None:
        result.warm_up_s = seconds
        print(f"{bundle.spec.name}: warm-up {seconds:.1f} s; {args.repeats} round(s) of "
              f"{1 + len(args.speedups) * len(ops)} runs follow, each about {seconds / warm_steps * per_round:.0f} s "
              f"({per_round} computed steps, estimated from the warm-up)", flush=True)

    def on_round(rounds, batch: int) -> None:
        result.rows, result.batch, result.rounds_done = table.rows_from(rounds, args.steps), batch, len(rounds)
        print(f"{bundle.spec.name}: round {len(rounds)}/{args.repeats} done", flush=True)
        if len(rounds) < args.repeats:
            report.save(partial=table.render(result))

    measure.measure(bundle, args.steps, args.cfg, args.repeats, tuple(args.speedups), ops, on_round=on_round,
                    on_warm=on_warm)


def _header(version: str, args: argparse.Namespace) -> str:
    import comfy.model_management as mm

    device = mm.get_torch_device()
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    return (f"OTCache real-size speed ({args.size} size) on {dev.card_name(device)}: torch {torch.__version__}{cuda}, "
            f"ComfyUI {version}, bf16 weights seeded normal(0, 0.02), {datetime.date.today().isoformat()}")


def dry_run(args: argparse.Namespace) -> int:
    """Parameters and bf16 weight memory of each model, from a build on the meta device (CPU set-up)."""
    from . import models, table

    for spec in (SPECS[m] for m in args.models):
        params, nbytes = models.weight_bytes(spec, args.size)
        print(f"{spec.name} [{args.size}]: {table.amount(params)} parameters ({params:,}), "
              f"{table.size_of(nbytes)} of weights in bf16 ({nbytes / 1e9:.2f} GB)")
    return 0


def run(args: argparse.Namespace) -> tuple[int, list]:
    """The mode's main: (exit code, the ModelResults measured)."""
    args.steps = args.steps or DEFAULT_STEPS
    args.repeats = args.repeats or DEFAULT_REPEATS
    for name in args.models:
        print(SPECS[name].describe(args.size))
    print(dev.comfy_host.describe())
    try:
        version = dev.prepare("cpu" if args.dry_run else args.device)
    except dev.SetupError as e:
        print(e)
        return 2, []
    try:   # ComfyUI's own imports (torchsde, einops, ...) come with the model code
        from . import measure, models, table  # noqa: F401
    except ImportError as e:
        print(f"ComfyUI or the pack cannot be imported with this Python: {e}; install ComfyUI's requirements.txt")
        return 1, []
    if args.dry_run:
        return dry_run(args), []
    threads = args.threads if args.threads is not None else (1 if args.device == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    report = Report(args.out, _header(version, args))
    print(report.header, flush=True)
    t0, results = time.perf_counter(), []
    otcache_log = logging.getLogger("otcache")
    level = otcache_log.level
    otcache_log.setLevel(logging.WARNING)     # one Apply line per configuration would bury the table
    try:
        for name in args.models:
            result = run_model(SPECS[name], args, report)
            if result is not None:
                results.append(result)
    finally:
        otcache_log.setLevel(level)
    print(f"done in {time.perf_counter() - t0:.0f} s" + (f"; table in {args.out}" if args.out else ""))
    bad = [r.spec.name for r in results for row in r.rows if not (row.speedup > 0 and math.isfinite(row.speedup))]
    return (0 if results and not bad else 1), results
