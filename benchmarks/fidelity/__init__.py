"""In-host fidelity benchmark: small trained models of real ComfyUI families, and the pipeline judged on them.

The engine's own benchmark runs on the bundled toy DiT outside ComfyUI. Users meet the method inside ComfyUI,
on models of real families, so this package trains small models *of ComfyUI's own classes* (Wan 2.1's
``WanModel``, Flux's ``Flux`` as FLUX.1-schnell) on procedural shapes, loads them with ComfyUI's own loader,
and runs Calibrate -> Anchor Search -> Apply through the pack's nodes against uniform schedules with the same
reuse operator and ComfyUI's core EasyCache / LazyCache, on prompts and seeds never used for calibration.

Modules: ``prompts`` (the text side: words -> fixed embeddings), ``codec`` (images <-> latents, exact),
``setups`` (the two families: configs, sampler settings, loading), ``train`` (the seeded training recipe),
``bench`` (the benchmark), ``report`` (tables and plots).
"""

import sys as _sys
from pathlib import Path as _Path

_ROOT = _Path(__file__).resolve().parents[2]
for _extra in (_ROOT / "tests", _ROOT / "tests" / "host"):
    if str(_extra) not in _sys.path:
        _sys.path.append(str(_extra))

import conftest as _conftest  # noqa: E402,F401  (tests/conftest.py: the repository as the package ``otcache_pack``)
