"""Real-size speed of OTCache on a GPU: FLUX.1-dev and Wan 2.1 14B built from ComfyUI's own classes with
seeded bf16 weights, sampled through ComfyUI unpatched and through OTCache's patcher (issue #20, item 6).

Why a package of its own: the per-family table of ``benchmarks/bench_runtime.py`` runs tiny and bench-size
models on a CPU-configured ComfyUI, while this table needs a ComfyUI configured for CUDA *before* its first
import, models that do not fit in host memory, and a table of its own (every reuse operator at N/K = 2..5,
peak VRAM with and without the cache). ``bench_runtime.py --device cuda --size real`` is its entry point;
``--device cpu --size tiny`` runs the same code in seconds (the host test does).

Modules: ``device`` (ComfyUI configured for the chosen device, before anything imports it), ``models`` (the
two models at real, bench and tiny size, built on the device in bf16), ``measure`` (warm-up, interleaved
timed runs, counted transformer passes, peak memory), ``table`` (rows and the printed table), ``cli`` (the
mode's main: one model after the other, a model that does not fit said in one sentence).
"""

import sys as _sys
from pathlib import Path as _Path

_ROOT = _Path(__file__).resolve().parents[2]
for _extra in (_ROOT / "tests", _ROOT / "tests" / "host"):
    if str(_extra) not in _sys.path:
        _sys.path.append(str(_extra))

import conftest as _conftest  # noqa: E402,F401  (tests/conftest.py: the repository as the package ``otcache_pack``)
