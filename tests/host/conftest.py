"""Host-test configuration: the harness modules on ``sys.path``, the ComfyUI in use in the header, fixtures.

Test modules start with ``COMFY_VERSION = require_comfy()`` (from ``comfy_host``) before importing any
harness module that needs ComfyUI, so that without ComfyUI every host test skips with the reason instead of
failing at import. Nothing here imports ComfyUI at module level.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import comfy_host  # noqa: E402

# Tiny models do many small ops: one intra-op thread is faster than two on a shared 2-core machine, where a
# second spinning thread waits for a core another job holds. Override with OTCACHE_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("OTCACHE_TEST_THREADS", "1")))


def pytest_report_header(config: pytest.Config) -> str:
    return comfy_host.describe()


@pytest.fixture(scope="session")
def comfy_version() -> str:
    """The ComfyUI version in use; skips the test with the reason when no ComfyUI is found."""
    loc = comfy_host.find_comfyui()
    if not loc.found:
        pytest.skip(loc.reason)
    return comfy_host.ensure_comfy_importable()


@pytest.fixture
def split_cfg(comfy_version: str):
    """Within one test, ComfyUI sees no free memory, so cond and uncond run as separate model calls."""
    import sampling

    with sampling.forced_split_cfg():
        yield


@pytest.fixture
def batched_cfg(comfy_version: str):
    """Within one test, ComfyUI sees ample free memory, so cond and uncond run as one batched call."""
    import sampling

    with sampling.forced_batched_cfg():
        yield


@pytest.fixture
def progress_events(comfy_version: str):
    """Every (value, total) ComfyUI's progress bars report during one test, through ComfyUI's global hook."""
    import comfy.utils

    events = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: events.append((value, total)))
    yield events
    comfy.utils.set_progress_bar_global_hook(previous)


@pytest.fixture
def user_dir(comfy_version: str, tmp_path, monkeypatch):
    """ComfyUI's user directory moved into the test's own folder (studies, schedules saved there)."""
    import folder_paths

    monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(tmp_path / "user"))
    return tmp_path / "user"


@pytest.fixture(scope="session")
def flux_searched(comfy_version: str, tmp_path_factory):
    """A tiny Flux calibrated (two pairs, local error, reference K=6 of 10) and its anchor searched (K=3, six
    trials, every budget validated), once per session: (bundle, settings, reference, calibration, anchor,
    summary). Read-only for the tests that share it."""
    import folder_paths
    import tiny_models
    from otcache_pack.nodes.measure import anchor as MA
    from otcache_pack.nodes.measure import calibrate as MC
    from otcache_pack.nodes.measure.sampling import SamplerSettings

    flux = tiny_models.build("flux")
    s = SamplerSettings(10, 1.0, "euler", "simple", flux.positive, flux.negative, {"samples": flux.empty_latent()})
    reference, calibration = MC.calibrate(flux.patcher, s, [0, 1], mode="local", max_gap=3, budget=6)
    folder = tmp_path_factory.mktemp("user")
    original = folder_paths.get_user_directory
    folder_paths.get_user_directory = lambda: str(folder)
    try:
        anchor, summary = MA.anchor_search(flux.patcher, s, reference, seeds=[0], budget=3, trials=6,
                                           calibration=calibration)
    finally:
        folder_paths.get_user_directory = original
    return flux, s, reference, calibration, anchor, summary
