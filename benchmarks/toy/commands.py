"""``python -m benchmarks.toy {demo, bench}``: the toy model's commands, with the engine CLI's error handling.

Only argument definitions live here, so that building the CLI parser stays cheap (no
torch import); the work is imported when a command runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from otcache_engine import cli
from otcache_engine.cli import Command
from otcache_engine.runtime.reuse import NAMES as REUSE_OPERATORS

BUNDLED = Path(__file__).with_name("weights") / "toy_dit.safetensors"
THREADS_HELP = ("torch CPU threads (default 1: the model is tiny, so one thread is about as fast, and on a busy "
                "machine two threads can be several times slower)")


def _demo_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=50, help="sampling steps N (default 50)")
    p.add_argument("--pairs", type=int, default=4, help="calibration (class, seed) pairs (default 4)")
    p.add_argument("--eval-pairs", type=int, default=8, help="held-out pairs to score (default 8)")
    p.add_argument("--trials", type=int, default=40, help="Optuna trials of the anchor search (default 40)")
    p.add_argument("--budgets", type=int, default=5, help="number of budgets from K_ref to K_anc (default 5)")
    p.add_argument("--ref-fraction", type=float, default=2.0, help="K_ref = N / this (default 2)")
    p.add_argument("--anchor-fraction", type=float, default=5.0, help="K_anc = N / this (default 5)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed rounds of the final sampling, uncached and cached runs interleaved; the fastest "
                        "of each counts (default 3)")
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the anchor search")
    p.add_argument("--weights", type=Path, default=BUNDLED, help="toy model weights (default: bundled)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS even if its weights exist")
    p.add_argument("--reuse", default="omnicache", choices=list(REUSE_OPERATORS),
                   help="what a skipped step reuses: the gamma-corrected output extrapolation (default; the "
                        "free default's operator family, so the rows compare schedules), the block-stack "
                        "residual, or the output")
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _bench_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, nargs="+", default=[50, 28], help="step counts N (default 50 28)")
    p.add_argument("--pairs", type=int, default=4, help="calibration pairs (default 4)")
    p.add_argument("--eval-seeds", type=int, default=3, help="seeds per held-out class (default 3: 24 pairs)")
    p.add_argument("--trials", type=int, default=60,
                   help="Optuna trials of the anchor search and of each direct optimisation (default 60)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per configuration (the fastest counts; default 3)")
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", type=Path, default=BUNDLED)
    p.add_argument("--no-lpips", action="store_true")
    p.add_argument("--reuse", default="residual", choices=list(REUSE_OPERATORS),
                   help="reuse operator of the static schedules (uniform, MagCache, graph, OTCache, direct) and of "
                        "the searches (default residual)")
    p.add_argument("--out", type=Path, default=Path("docs/results"),
                   help="folder for bench.md / bench.json / bench_pareto.png (default docs/results)")
    p.add_argument("--quiet", action="store_true")


def with_threads(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run with ``args.threads`` torch threads, restoring the caller's setting afterwards: the tiny model is
    as fast on one thread as on two and far steadier on a busy machine, and a caller keeps its own."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(previous)


def _run_demo(args: argparse.Namespace) -> int:
    from . import demo
    return with_threads(demo.run, args)


def _run_bench(args: argparse.Namespace) -> int:
    from . import bench
    return with_threads(bench.run, args)


COMMANDS: dict[str, Command] = {}
cli.register(Command("demo", "the whole OTCache method on the bundled toy model (a few minutes on CPU)",
                     _demo_add_arguments, _run_demo), COMMANDS)
cli.register(Command("bench", "OTCache vs uniform, MagCache, TeaCache, EasyCache, FBCache, graph, OmniCache "
                              "on the toy model (20-30 min on 2 CPU cores)", _bench_add_arguments, _run_bench),
             COMMANDS)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, COMMANDS, "python -m benchmarks.toy", "The OTCache method on the bundled toy model")
