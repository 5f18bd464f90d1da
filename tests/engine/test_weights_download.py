"""LPIPS with no manual step: the backbone download against a real HTTP server on 127.0.0.1.

Covers the download itself (checksum from the name, temp file in the destination, atomic rename, progress,
once), its refusals (wrong checksum, truncated, no checksum, turned off, connection refused, cancelled by the
progress callback) and the perceptual metric built on it, which falls back to 1 - SSIM in one line.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from download_fixtures import alexnet_like_file, hashed_name, refused_url, serve
from otcache_engine import metrics as M
from otcache_engine.weights_download import NO_DOWNLOAD_ENV, DownloadError, RemoteFile, fetch

BLOB = os.urandom(3 * (1 << 20) + 12345)      # several chunks, the last one partial
NAME = hashed_name("blob", BLOB, ".bin")


def files_under(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def no_hub(tmp_path, monkeypatch):
    """Downloads allowed, and an empty torch hub cache the tests can check stays untouched."""
    monkeypatch.delenv(NO_DOWNLOAD_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def test_a_file_is_fetched_once_verified_with_progress_and_nothing_else_written(tmp_path):
    dest = tmp_path / "models" / "lpips"
    calls = []
    with serve({NAME: BLOB}) as server:
        path = fetch(RemoteFile(server.url(NAME)), dest, progress=lambda done, total: calls.append((done, total)))
        assert path == dest / NAME and path.read_bytes() == BLOB
        again = fetch(RemoteFile(server.url(NAME)), dest, progress=lambda done, total: calls.append("again"))
        assert again == path and server.requests == [NAME]          # the second use does not download
    assert calls[0] == (0, len(BLOB)) and calls[-1] == (len(BLOB), len(BLOB)) and "again" not in calls
    assert len(calls) >= 5 and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert files_under(tmp_path) == [Path("models/lpips") / NAME]   # no temp file left, nothing elsewhere


def test_a_wrong_checksum_is_refused_and_not_kept(tmp_path):
    wrong = "blob-00000000.bin" if not NAME.startswith("blob-00000000") else "blob-11111111.bin"
    with serve({wrong: BLOB}) as server:
        with pytest.raises(DownloadError, match="wrong checksum.*not kept"):
            fetch(RemoteFile(server.url(wrong)), tmp_path / "lpips")
    assert files_under(tmp_path) == []


def test_a_full_sha256_given_explicitly_is_checked_in_full(tmp_path):
    import hashlib
    digest = hashlib.sha256(BLOB).hexdigest()
    almost = digest[:-1] + ("0" if digest[-1] != "0" else "1")      # same name prefix, last digit differs
    with serve({NAME: BLOB}) as server:
        with pytest.raises(DownloadError, match="wrong checksum"):
            fetch(RemoteFile(server.url(NAME), sha256=almost), tmp_path / "a")
        assert fetch(RemoteFile(server.url(NAME), sha256=digest), tmp_path / "b").read_bytes() == BLOB
    assert files_under(tmp_path) == [Path("b") / NAME]


def test_a_dropped_connection_leaves_nothing_behind(tmp_path):
    with serve({NAME: BLOB}, short={NAME: 1000}) as server:
        with pytest.raises(DownloadError):
            fetch(RemoteFile(server.url(NAME)), tmp_path / "lpips")
    assert files_under(tmp_path) == []


def test_a_missing_file_on_the_server_is_one_sentence(tmp_path):
    with serve({}) as server:
        with pytest.raises(DownloadError, match=r"downloading .* failed \(HTTPError: Not Found\)"):
            fetch(RemoteFile(server.url(NAME)), tmp_path / "lpips")
    assert files_under(tmp_path) == []


def test_a_name_without_checksum_is_never_downloaded(tmp_path):
    with serve({"blob.bin": BLOB}) as server:
        with pytest.raises(DownloadError, match="no checksum"):
            fetch(RemoteFile(server.url("blob.bin")), tmp_path / "lpips")
        assert server.requests == []
    assert files_under(tmp_path) == []


def test_cancelling_from_the_progress_callback_removes_the_partial_file(tmp_path):
    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done > 0:
            raise Cancelled

    with serve({NAME: BLOB}) as server:
        with pytest.raises(Cancelled):
            fetch(RemoteFile(server.url(NAME)), tmp_path / "lpips", progress=cancel)
    assert files_under(tmp_path) == []


def test_turned_off_nothing_is_requested(tmp_path, monkeypatch):
    monkeypatch.setenv(NO_DOWNLOAD_ENV, "1")
    with serve({NAME: BLOB}) as server:
        with pytest.raises(DownloadError, match=f"turned off \\({NO_DOWNLOAD_ENV}=1\\)"):
            fetch(RemoteFile(server.url(NAME)), tmp_path / "lpips")
        assert server.requests == []
    assert files_under(tmp_path) == []


# --- the perceptual metric on top of it ----------------------------------------------------------------

@pytest.fixture(scope="module")
def backbone() -> tuple[bytes, str]:
    body = alexnet_like_file()
    return body, hashed_name("alexnet-test", body)


def test_lpips_fetches_its_backbone_on_first_use_then_reuses_it(backbone, tmp_path, caplog):
    body, name = backbone
    folder = tmp_path / "models" / "otcache" / "lpips"
    seen = []
    with serve({name: body}) as server:
        remote = RemoteFile(server.url(name), size_mb=10)
        with caplog.at_level(logging.INFO, logger="otcache"):
            metric = M.perceptual_metric(True, folders=[folder], remote=remote,
                                         progress=lambda d, t: seen.append((d, t)))
        assert metric.name == "lpips-alex" and metric.warning is None
        assert "downloading the LPIPS backbone" in caplog.text and str(folder) in caplog.text
        first_conv = dict(metric.fn.net.net.named_parameters())["slice1.0.weight"]
        assert torch.equal(first_conv, torch.load(folder / name, weights_only=True)["features.0.weight"])
        again = M.perceptual_metric(True, folders=[folder], remote=remote, progress=lambda d, t: seen.append(0))
        assert again.name == "lpips-alex" and server.requests == [name]
    assert seen[-1] == (len(body), len(body)) and 0 not in seen
    assert files_under(tmp_path) == [Path("models/otcache/lpips") / name]   # hub cache untouched


def test_a_backbone_in_the_torch_hub_cache_is_used_without_download(backbone, tmp_path):
    body, name = backbone
    hub = M.alexnet_weights_path(name)
    hub.parent.mkdir(parents=True)
    hub.write_bytes(body)
    with serve({}) as server:
        metric = M.perceptual_metric(True, folders=[tmp_path / "lpips"], remote=RemoteFile(server.url(name)))
        assert metric.name == "lpips-alex" and server.requests == []
    assert not (tmp_path / "lpips").exists()


def one_line_fallback(metric, caplog) -> str:
    assert metric.name == "1-ssim" and metric.on == "image"
    assert "\n" not in metric.warning and metric.warning.startswith("LPIPS unavailable, using 1 - SSIM instead: ")
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage() == f"[OTCache] {metric.warning}"
    return metric.warning


def test_offline_the_metric_falls_back_in_one_line(backbone, tmp_path, caplog):
    name = backbone[1]
    folder = tmp_path / "lpips"
    url = refused_url(name)
    with caplog.at_level(logging.WARNING, logger="otcache"):
        metric = M.perceptual_metric(True, folders=[folder], remote=RemoteFile(url))
    warning = one_line_fallback(metric, caplog)
    assert f"downloading {url} failed" in warning and f"save {url} as {folder / name}" in warning
    assert files_under(tmp_path) == []


def test_with_downloads_off_the_metric_says_so_and_how_to_fix(backbone, tmp_path, monkeypatch, caplog):
    body, name = backbone
    monkeypatch.setenv(NO_DOWNLOAD_ENV, "1")
    folder = tmp_path / "lpips"
    with serve({name: body}) as server:
        with caplog.at_level(logging.WARNING, logger="otcache"):
            metric = M.perceptual_metric(True, folders=[folder], remote=RemoteFile(server.url(name)))
        assert server.requests == []
    warning = one_line_fallback(metric, caplog)
    assert f"{NO_DOWNLOAD_ENV}=1" in warning and str(folder / name) in warning


def test_a_corrupt_download_with_the_right_name_falls_back(tmp_path, caplog):
    junk = b"not a torch file"
    name = hashed_name("alexnet-junk", junk)
    with serve({name: junk}) as server, caplog.at_level(logging.WARNING, logger="otcache"):
        metric = M.perceptual_metric(True, folders=[tmp_path], remote=RemoteFile(server.url(name)))
    assert "loading LPIPS failed" in one_line_fallback(metric, caplog)


def test_the_standard_backbone_is_torchvisions_alexnet_with_its_name_checksum():
    from torchvision.models import AlexNet_Weights
    assert M.ALEXNET.url == AlexNet_Weights.IMAGENET1K_V1.url
    assert M.ALEXNET.expected_hash == "7be5be79" and M.ALEXNET.name == M.ALEXNET_FILE
    assert M.ALEXNET.size_mb == pytest.approx(AlexNet_Weights.IMAGENET1K_V1.meta["_file_size"], abs=0.1)
