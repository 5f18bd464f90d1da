"""The per-family table of ``benchmarks/bench_runtime.py``: wall-clock speed-up of OTCache Apply on the real
ComfyUI, per model family, on the CPU (prints tables).

Kept apart from the entry point because it configures ComfyUI for the CPU when imported (the host harness's
set-up), while the real-size mode (``benchmarks/real_size``) must configure it for CUDA first.

For each family a seeded model of the harness's "bench" size (hidden 512, 8 blocks: 4 double + 4 single for
Flux, Chroma and HunyuanVideo; --latent, --depth and --dual-depth make the blocks dominate further; see
tests/host/tiny_models.py) is sampled with ComfyUI's own sampler, unpatched and patched:

- ``N/K = 2, 3, 4``: uniform schedules with K = N/2, N/3, N/4 computed steps; realised speed-up
  T_unpatched / T_cached, and its ratio to N/K (1.0 = the skipped steps cost nothing);
- overhead on computed steps: patched with K = N and the cache machinery forced on (every step computes and
  stores its residual) against the unpatched model.

All configurations of a family run interleaved, ``--repeats`` times, in a rotating order. Speed-ups use the
*fastest* repeat of each configuration (as ``timeit`` does): on a shared machine other processes only ever
add time, so the minimum is the least disturbed measurement; the median is printed alongside. The overhead
(a percent-level effect) is the median over back-to-back pairs of runs, so both runs of a pair see the same
load. ``reuse/step`` (a reused step's cost over a computed one, from per-evaluation times) explains the
ratio: ratio ~ 1 / (1 + (N/K - 1) * reuse/step).

``--compile`` adds a table: ComfyUI's TorchCompileModel (inductor) alone, and followed by OTCache Apply at
N/K = 2, 3, 4 (the run then compiles the block modules), each against the eager unpatched model, with the
first runs' wall times (compilation included).
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "host"))
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402,F401  (registers the pack as ``otcache_pack``)
import comfy_host  # noqa: E402

comfy_host.ensure_comfy_importable()

import torch  # noqa: E402

import sampling  # noqa: E402
import tiny_models as tm  # noqa: E402
from otcache_pack.nodes.runtime.patcher import PatchOptions, patch_model  # noqa: E402
from otcache_pack.otcache_engine import Schedule  # noqa: E402

SPEEDUPS = (2, 3, 4)


def uniform(n: int, k: int) -> Schedule:
    step = (n - 1) / (k - 1)
    return Schedule(n, tuple(int(round(i * step)) for i in range(k)))


class EvalClock:
    """Wall time of every model evaluation (PREDICT_NOISE wrapper), to split a run into its step costs."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def attach(self, model):
        import comfy.patcher_extension as pe

        m = model.clone()

        def wrapper(executor, *a, **k):
            t0 = time.perf_counter()
            out = executor(*a, **k)
            self.times.append(time.perf_counter() - t0)
            return out

        m.add_wrapper_with_key(pe.WrappersMP.PREDICT_NOISE, "otcache_bench_clock", wrapper)
        return m


def timed(model, b, steps: int, cfg: float, clock: EvalClock) -> tuple[float, list[float]]:
    clock.times.clear()
    t0 = time.perf_counter()
    sampling.run_sampler(model, b, steps, cfg)
    return time.perf_counter() - t0, list(clock.times)


def bench_size(hidden: int, depth: int, latent: int, dual_depth: int = 0) -> str:
    """The harness's "bench" size, or a variant registered under its own name for this run only."""
    base = tm.SIZES["bench"]
    changes = {k: v for k, v in (("hidden", hidden), ("depth", depth), ("dual_depth", dual_depth),
                                 ("latent_hw", latent)) if v}
    if all(getattr(base, k) == v for k, v in changes.items()):
        return "bench"
    name = "bench-" + "-".join(f"{k}{v}" for k, v in changes.items())
    tm.SIZES[name] = dataclasses.replace(base, **changes)
    return name


OWN_CODE = (str(ROOT / "nodes") + "/", str(ROOT / "otcache_engine") + "/")


def own_code_share(model, b, steps: int, cfg: float) -> float:
    """Share of a run spent in OTCache's own code, tensor ops it calls included (cProfile, one run).

    Independent of machine load: what the hooks cost, which the wall-clock overhead cannot resolve
    below a few percent on a shared machine. cProfile inflates Python calls, so this is an upper bound.
    """
    prof = cProfile.Profile()
    with sampling.forced_batched_cfg():
        t0 = time.perf_counter()
        prof.enable()
        sampling.run_sampler(model, b, steps, cfg)
        prof.disable()
        total = time.perf_counter() - t0
    own = 0.0
    for (fn, _line, _name), (_cc, _nc, tt, _ct, callers) in pstats.Stats(prof).stats.items():
        if fn.startswith(OWN_CODE):
            own += tt
        elif fn == "~":  # a builtin (torch op): count the calls made from our code
            own += sum(v[2] for (cfn, _l, _n), v in callers.items() if cfn.startswith(OWN_CODE))
    return own / total


def paired_overhead(plain, on, b, steps: int, cfg: float, clock: EvalClock, pairs: int,
                    evals: dict[str, list[float]]) -> float:
    """Median over back-to-back (unpatched, forced-on) run pairs of on/unpatched - 1, order alternating:
    the two runs of a pair see the same machine load, so drifts cancel in the ratio. The pairs'
    evaluation times are added to ``evals`` ("unpatched", "on")."""
    if pairs <= 0:
        return float("nan")
    ratios = []
    with sampling.forced_batched_cfg():
        for i in range(pairs):
            first, second = ("unpatched", "on") if i % 2 == 0 else ("on", "unpatched")
            runs = {}
            for name in (first, second):
                runs[name], times = timed(plain if name == "unpatched" else on, b, steps, cfg, clock)
                evals[name].extend(times)
            ratios.append(runs["on"] / runs["unpatched"])
    return statistics.median(ratios) - 1.0


def interleaved(models: dict, b, steps: int, cfg: float, clock: EvalClock, repeats: int,
                warmup: dict | None = None) -> list[dict]:
    """``repeats`` rounds of every model, in a rotating order (batched CFG), after one warm-up run each
    (kernels, allocator, model loading, compilation), whose wall times go into ``warmup``."""
    names = list(models)
    with sampling.forced_batched_cfg():
        for name, m in models.items():
            t = timed(m, b, steps, cfg, clock)[0]
            if warmup is not None:
                warmup[name] = t
        rounds = []
        for i in range(repeats):
            order = names[i % len(names):] + names[:i % len(names)]   # rotate so no config is always first
            rounds.append({name: timed(models[name], b, steps, cfg, clock) for name in order})
    return rounds


def bench_compile(family: str, steps: int, repeats: int, cfg: float, reuse: str, size: str = "bench") -> dict:
    """ComfyUI's TorchCompileModel (inductor) alone and followed by OTCache Apply at N/K = 2, 3, 4, against
    the eager unpatched model (best of the repeats). With OTCache the run compiles the block modules, not the
    whole model; the first (warm-up) runs show the compile time of each."""
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    b = tm.build(family, size)
    clock = EvalClock()
    compiled = TorchCompileModel.execute(model=b.patcher, backend="inductor").result[0]
    models = {"eager": clock.attach(b.patcher), "compiled": clock.attach(compiled)}
    for s in SPEEDUPS:
        models[f"x{s}"] = clock.attach(patch_model(compiled, uniform(steps, steps // s), PatchOptions(reuse=reuse)))
    warmup: dict[str, float] = {}
    rounds = interleaved(models, b, steps, cfg, clock, repeats, warmup)
    best = {name: min(r[name][0] for r in rounds) for name in models}
    out = {"family": family, "t_step": best["eager"] / steps, "compiled": best["eager"] / best["compiled"],
           "warm_whole": warmup["compiled"], "warm_blocks": warmup["x2"]}
    for s in SPEEDUPS:
        out[f"c{s}"] = best["eager"] / best[f"x{s}"]
        out[f"v{s}"] = best["compiled"] / best[f"x{s}"] / s
    return out


def compile_table(families: list[str], steps: int, repeats: int, cfg: float, reuse: str, size: str) -> None:
    """Print the TorchCompileModel table, a row per family as it is measured."""
    head = (f"{'family':<15}{'eager s/step':>13}{'compiled':>10}"
            + "".join(f"{f'+x@{s}':>8}{'ratio':>7}" for s in SPEEDUPS)
            + f"{'warm-up whole':>15}{'blocks':>8}")
    print(head)
    print("-" * len(head))
    for family in families:
        r = bench_compile(family, steps, repeats, cfg, reuse, size)
        cells = "".join(f"{r[f'c{s}']:>8.2f}{r[f'v{s}']:>7.3f}" for s in SPEEDUPS)
        print(f"{family:<15}{r['t_step']:>13.3f}{r['compiled']:>10.2f}{cells}{r['warm_whole']:>14.1f}s"
              f"{r['warm_blocks']:>7.1f}s", flush=True)
    print("compiled: TorchCompileModel (inductor) alone, speed-up over the eager unpatched model; +x@N/K:\n"
          "TorchCompileModel then OTCache Apply at N/K (the run compiles the blocks), speed-up over the eager\n"
          "unpatched model; ratio: that speed-up / (compiled speed-up * N/K); warm-up: the first run's wall time\n"
          "(compilation included) of the whole compiled model and of the first cached run (its blocks)")


def bench_family(family: str, steps: int, repeats: int, cfg: float, reuse: str, size: str = "bench",
                 pairs: int = 10) -> dict:
    b = tm.build(family, size)
    clock = EvalClock()
    schedules = {f"x{s}": uniform(steps, steps // s) for s in SPEEDUPS}
    models = {"unpatched": clock.attach(b.patcher),
              "on": clock.attach(patch_model(b.patcher, Schedule.full(steps),
                                             PatchOptions(reuse=reuse, always_on=True)))}
    for name, sched in schedules.items():
        models[name] = clock.attach(patch_model(b.patcher, sched, PatchOptions(reuse=reuse)))
    names = list(models)
    rounds = interleaved(models, b, steps, cfg, clock, repeats)
    best = {name: min(r[name][0] for r in rounds) for name in names}
    med = {name: statistics.median(r[name][0] for r in rounds) for name in names}
    out = {"family": family, "t_step": best["unpatched"] / steps,
           "overhead": best["on"] / best["unpatched"] - 1.0,
           "overhead_med": med["on"] / med["unpatched"] - 1.0}
    # per-evaluation view: what one computed / reused step costs
    evals = {name: [t for r in rounds for t in r[name][1]] for name in ("unpatched", "on")}
    mask = schedules["x4"].mask
    reused = [t for r in rounds for t, c in zip(r["x4"][1], mask) if not c]
    out["overhead_pairs"] = paired_overhead(models["unpatched"], models["on"], b, steps, cfg, clock, pairs, evals)
    # medians over every evaluation of every run: the fastest single evaluation swings by several
    # percent from one run to the next, the median of a hundred or more by a few tenths
    full = statistics.median(evals["unpatched"])
    out["eval_overhead"] = statistics.median(evals["on"]) / full - 1.0
    out["reuse_cost"] = statistics.median(reused) / full
    out["own_on"] = own_code_share(models["on"], b, steps, cfg)
    out["own_x4"] = own_code_share(models["x4"], b, steps, cfg)
    for s in SPEEDUPS:
        out[f"x{s}"] = best["unpatched"] / best[f"x{s}"]
        out[f"r{s}"] = out[f"x{s}"] / s
        out[f"m{s}"] = med["unpatched"] / med[f"x{s}"] / s
    out.update(split_host_time(rounds))
    return out


def split_host_time(rounds: list[dict]) -> dict:
    """What the model evaluations alone gain, apart from the host's fixed cost per run.

    A run's time outside its model evaluations (sampler set-up, moving the model in, preparing
    conditioning and latents) is the same whatever the schedule, so on short runs it caps the
    wall-clock ratio; it is reported as seconds per run, and the ratio is recomputed from the
    evaluation times alone (medians over the repeats).
    """
    def model_time(r: dict, name: str) -> float:
        return sum(r[name][1])

    out = {"setup": statistics.median(r["unpatched"][0] - model_time(r, "unpatched") for r in rounds)}
    out["setup_share"] = out["setup"] / statistics.median(r["unpatched"][0] for r in rounds)
    for s in SPEEDUPS:
        out[f"e{s}"] = statistics.median(model_time(r, "unpatched") / model_time(r, f"x{s}") for r in rounds) / s
    return out


def _speed_table(args: argparse.Namespace, size: str) -> list[dict]:
    head = (f"{'family':<15}{'s/step':>8}" + "".join(f"{f'x@{s}':>7}{'ratio':>7}{'(med)':>7}" for s in SPEEDUPS)
            + f"{'overhead':>10}{'(best)':>8}{'ovh/eval':>10}{'own code':>10}{'(x4)':>7}{'reuse/step':>11}")
    print(head)
    print("-" * len(head))
    results = []
    for family in args.families:
        r = bench_family(family, args.steps, args.repeats, args.cfg, args.reuse, size, args.pairs)
        results.append(r)
        cells = "".join(f"{r[f'x{s}']:>7.2f}{r[f'r{s}']:>7.3f}{r[f'm{s}']:>7.3f}" for s in SPEEDUPS)
        print(f"{family:<15}{r['t_step']:>8.3f}{cells}{100 * r['overhead_pairs']:>9.2f}%{100 * r['overhead']:>7.2f}%"
              f"{100 * r['eval_overhead']:>9.2f}%{100 * r['own_on']:>9.2f}%{100 * r['own_x4']:>6.2f}%"
              f"{100 * r['reuse_cost']:>10.1f}%", flush=True)
    print("x@N/K: wall-clock speed-up over the unpatched model; ratio: speed-up / (N/K) (target >= 0.95);\n"
          "overhead: K=N with caching forced on vs unpatched, median of back-to-back run pairs (target <= 1%);\n"
          "(best): the same from the fastest runs; own code: share of the K=N forced-on run (and of the N/K=4 run)\n"
          "spent in OTCache's code, profiled, load-independent upper bound; ovh/eval: the same from the\n"
          "median evaluation (every step computed) of all repeats; reuse/step: a reused step's median cost\n"
          "relative to a computed one (embedders, output head, sampler, our hooks), which bounds the ratio:\n"
          "ratio ~ 1 / (1 + (N/K - 1) * reuse/step)")
    return results


def _setup_table(results: list[dict]) -> None:
    head = f"{'family':<15}{'setup s/run':>12}{'(share)':>9}" + "".join(f"{f'model ratio@{s}':>16}" for s in SPEEDUPS)
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['family']:<15}{r['setup']:>12.3f}{100 * r['setup_share']:>8.1f}%"
              + "".join(f"{r[f'e{s}']:>16.3f}" for s in SPEEDUPS))
    print("setup: a run's time outside model evaluations (the same for every schedule; its share of an unpatched\n"
          "run shrinks as N grows); model ratio: the speed-up of the model evaluations alone / (N/K), median")


def run(args) -> int:
    """The per-family tables (``bench_runtime.py`` without ``--device`` / ``--size``): CPU, bench size."""
    logging.getLogger("otcache").setLevel(logging.WARNING)
    args.threads = 1 if args.threads is None else args.threads
    if args.threads:
        torch.set_num_threads(args.threads)
    args.steps = args.steps or 12
    args.repeats = args.repeats or 5
    size = bench_size(args.hidden, args.depth, args.latent, args.dual_depth)
    print(f"ComfyUI {comfy_host.ensure_comfy_importable()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; size {size} {tm.SIZES[size]}; N={args.steps}, cfg {args.cfg} (batched), reuse {args.reuse}, "
          f"best (and median) of {args.repeats} interleaved repeats")
    results = _speed_table(args, size)
    print()
    _setup_table(results)
    if args.compile:
        print()
        compile_table(args.families, args.steps, args.repeats, args.cfg, args.reuse, size)
    return 0

