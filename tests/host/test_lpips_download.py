"""LPIPS with no manual step, inside the real ComfyUI: the backbone lands in a ComfyUI models folder registered
with ``folder_paths``, with ComfyUI's progress bar, once; Cancel stops it; turned off, one line says so (the Anchor Search's use of
the folder: test_anchor_node.py).

The file is served by a real HTTP server on 127.0.0.1 (no internet here); the standard AlexNet file is replaced
by a generated one whose name carries its own checksum, as torchvision's names do.
"""
from __future__ import annotations

import pytest

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import comfy.model_management as mm  # noqa: E402
import folder_paths  # noqa: E402

from download_fixtures import alexnet_like_file, hashed_name, serve  # noqa: E402
from otcache_pack.nodes.measure import lpips_weights as L  # noqa: E402
from otcache_pack.otcache_engine.weights_download import NO_DOWNLOAD_ENV, RemoteFile  # noqa: E402

BODY = alexnet_like_file()
NAME = hashed_name("alexnet-test", BODY)


@pytest.fixture
def models(tmp_path, monkeypatch):
    """A fresh ComfyUI models folder (the real one is never touched), downloads on, an empty torch hub."""
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    monkeypatch.delitem(folder_paths.folder_names_and_paths, L.FOLDER, raising=False)
    monkeypatch.delenv(NO_DOWNLOAD_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "models"


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_first_use_downloads_into_the_models_folder_with_comfy_progress_once(models, progress_events):
    with serve({NAME: BODY}) as server:
        remote = RemoteFile(server.url(NAME))
        metric = L.node_metric(True, remote=remote)
        assert metric.name == "lpips-alex" and metric.warning is None
        assert folder_paths.get_folder_paths(L.FOLDER)[0] == str(models / "otcache" / "lpips")
        assert files_under(models) == [f"otcache/lpips/{NAME}"]
        # first and last update (v0.33's bar drops updates closer than 100 ms in between)
        assert progress_events[0] == (0, len(BODY)) and progress_events[-1] == (len(BODY), len(BODY))
        assert [v for v, _ in progress_events] == sorted(v for v, _ in progress_events)
        progress_events.clear()
        again = L.node_metric(True, remote=remote)
        assert again.name == "lpips-alex" and server.requests == [NAME] and progress_events == []
    assert not (models.parent / "torch-home").exists()


def test_cancel_stops_the_download_and_leaves_nothing(models):
    with serve({NAME: BODY}) as server:
        mm.interrupt_current_processing(True)
        try:
            with pytest.raises(mm.InterruptProcessingException):
                L.node_metric(True, remote=RemoteFile(server.url(NAME)))
        finally:
            mm.interrupt_current_processing(False)
    assert files_under(models) == []


def test_downloads_off_is_a_one_line_fallback(models, monkeypatch):
    monkeypatch.setenv(NO_DOWNLOAD_ENV, "1")
    with serve({NAME: BODY}) as server:
        metric = L.node_metric(True, remote=RemoteFile(server.url(NAME)))
        assert server.requests == []
    assert metric.name == "1-ssim" and "\n" not in metric.warning and f"{NO_DOWNLOAD_ENV}=1" in metric.warning
    assert str(models / "otcache" / "lpips" / NAME) in metric.warning
