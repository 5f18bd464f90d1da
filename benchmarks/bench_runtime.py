"""Wall-clock speed-up of OTCache inside a real ComfyUI: per-family tables on the CPU, or the real-size table
of FLUX.1-dev and Wan 2.1 14B on a GPU.

Two modes, one entry point:

- the per-family tables (no ``--device`` / ``--size``; ``benchmarks/runtime_families.py``): a seeded model
  of every family at the harness's bench size, on the CPU, unpatched and at N/K = 2, 3, 4, with the cache's
  overhead and TorchCompileModel (``--compile``);
- the real-size table (``--device cuda|cpu``, ``--size real|bench|tiny``; ``benchmarks/real_size``):
  FLUX.1-dev (19 double + 38 single blocks, hidden 3072, 4096 image + 512 text tokens) and Wan 2.1 14B (40
  blocks, dim 5120, 32760 tokens of 480p x 81 frames + 512 text tokens), built from ComfyUI's own classes
  directly on the device in bf16 with seeded weights, sampled unpatched and through OTCache's patcher at
  N/K = 2, 3, 4, 5 for every reuse operator (output; omnicache gamma 1 and taylor order 1 on the residual,
  also with the cache offloaded to the CPU; omnicache gamma 0.5 and 1 on the output): seconds per uncached
  step, speed-ups, counted NFE ratios, peak VRAM with and without the cache. CFG is batched (cond + uncond
  in one call of batch 2, as ComfyUI runs it with ample memory). ``--device cpu --size tiny`` runs the same
  code in seconds; ``--dry-run`` prints each model's parameters and bf16 weight memory (meta device).

Why the entry point imports no ComfyUI: ComfyUI reads CPU-or-GPU once, at its first import, and each mode
configures it differently; the mode is chosen first.

Run:  .venv/bin/python benchmarks/bench_runtime.py [--families flux wan21] [--steps 12] [--repeats 5]
      .venv/bin/python benchmarks/bench_runtime.py --device cuda --size real [--models flux_dev] [--out FILE]
      scripts/gpu_bench.sh  (both real-size models on a GPU, each under a time limit, into
      docs/results/runtime/gpu_real_size.txt)
      (COMFYUI_PATH=... picks the ComfyUI checkout, as for the host tests)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "tests" / "host", ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import conftest  # noqa: E402,F401  (registers the pack as ``otcache_pack``; puts the repository on the path)

from otcache_pack.otcache_engine.runtime.reuse import NAMES as REUSE_OPERATORS  # noqa: E402

from benchmarks.real_size.specs import SIZE_NAMES, SPECS  # noqa: E402  (plain records, no ComfyUI)

# benchmarks/real_size/measure.py's operator keys (that module imports ComfyUI, so it is not imported here)
OPERATOR_KEYS = ("output", "omni1-res", "taylor1-res", "omni05-out", "omni1-out", "omni1-res-cpu", "taylor1-res-cpu")


def _family_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("per-family tables (CPU, bench size)")
    g.add_argument("--families", nargs="+", default=["flux", "chroma", "qwen_image", "hunyuan_video", "wan21",
                                                     "ltxv", "lumina2"])
    g.add_argument("--pairs", type=int, default=10, help="back-to-back run pairs for the overhead figure")
    g.add_argument("--reuse", default="residual", choices=list(REUSE_OPERATORS))
    g.add_argument("--compile", action="store_true",
                   help="also measure TorchCompileModel (inductor) alone and with OTCache (a table of its own)")
    g.add_argument("--hidden", type=int, default=0, help="model width (default: the harness's bench size, 512)")
    g.add_argument("--depth", type=int, default=0,
                   help="blocks of single-list families: Qwen-Image, Wan, LTXV, Lumina 2 (default: the bench size's 8)")
    g.add_argument("--dual-depth", type=int, default=0,
                   help="blocks per list of Flux, Chroma, HunyuanVideo (double + single; default: the bench size's 4)")
    g.add_argument("--latent", type=int, default=0,
                   help="latent height = width (default: the bench size's); image tokens grow with its square "
                        "while the text embedders' cost stays, as in real use")


def _real_size_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("real-size table (chosen by --device or --size)")
    g.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="where the models run (default cuda); without a CUDA device, cuda stops with exit code 2")
    g.add_argument("--size", choices=SIZE_NAMES, default=None,
                   help="real: the published models (default); bench: their ratios at width 512; tiny: width 64, "
                        "seconds on a CPU")
    g.add_argument("--models", nargs="+", choices=list(SPECS), default=list(SPECS))
    g.add_argument("--speedups", nargs="+", type=int, default=[2, 3, 4, 5], help="the N/K values (default 2 3 4 5)")
    g.add_argument("--operators", nargs="+", choices=OPERATOR_KEYS, default=list(OPERATOR_KEYS),
                   help="the reuse operators (default all: output; omnicache gamma 1 and taylor order 1 on the "
                        "residual, also with the cache offloaded to the CPU; omnicache gamma 0.5 and 1 on the output)")
    g.add_argument("--seed", type=int, default=0, help="weight seed")
    g.add_argument("--out", default=None, help="also write the table to this file (rewritten after every round)")
    g.add_argument("--dry-run", action="store_true",
                   help="only print each model's parameters and bf16 weight memory (a meta-device build, no GPU)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=0, help="N (per-family default 12, real-size default 20)")
    p.add_argument("--repeats", type=int, default=0,
                   help="interleaved rounds, the best kept (per-family default 5, real-size default 3)")
    p.add_argument("--cfg", type=float, default=3.0, help="CFG scale (> 1: cond and uncond batched)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default 1 on the CPU: on a shared machine OpenMP threads waiting for each "
                        "other make every op several times slower and the figures meaningless; with --device cuda "
                        "torch's default; 0 = torch's default)")
    _family_options(p)
    _real_size_options(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, with ``mode`` set: "real_size" when --device, --size or --dry-run is given (their
    defaults then cuda and real), else "families"."""
    args = _parser().parse_args(argv)
    args.mode = "families" if args.device is None and args.size is None and not args.dry_run else "real_size"
    if args.mode == "real_size":
        args.device, args.size = args.device or "cuda", args.size or "real"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "families":
        from benchmarks import runtime_families

        return runtime_families.run(args)
    from benchmarks.real_size import cli

    return cli.run(args)[0]


if __name__ == "__main__":
    sys.exit(main())
