"""The pack loaded the way ComfyUI loads it (``nodes.load_custom_node``), healthy and with a broken dependency.

A copy of the pack (what `git clone` puts into custom_nodes) goes into a temporary folder. With a
deliberately broken import inside it, ComfyUI's loader must carry on (start-up never breaks) and the log must
carry one clear line naming the pack and the cause, not a traceback wall.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from comfy_host import require_comfy

COMFY_VERSION = require_comfy()

import nodes as comfy_nodes  # noqa: E402  (ComfyUI's nodes.py; the path is set by require_comfy)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("__init__.py", "nodes", "otcache_engine", "web", "presets", "pyproject.toml", "requirements.txt",
           "LICENSE")
MISSING = "otcache_simulated_missing_dependency"


def _copy_pack(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in SHIPPED:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dst / name)
    return dst


@pytest.fixture
def registry_snapshot():
    """Undo what a load registers, so other tests see ComfyUI's tables unchanged."""
    saved = (dict(comfy_nodes.NODE_CLASS_MAPPINGS), dict(comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS),
             dict(comfy_nodes.EXTENSION_WEB_DIRS))
    yield
    for table, old in zip((comfy_nodes.NODE_CLASS_MAPPINGS, comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS,
                           comfy_nodes.EXTENSION_WEB_DIRS), saved):
        table.clear()
        table.update(old)


def _load(path: Path) -> bool:
    return asyncio.run(comfy_nodes.load_custom_node(str(path), ignore=set(), module_parent="custom_nodes"))


def test_healthy_pack_registers_nodes_and_web_directory(tmp_path, registry_snapshot):
    if not (REPO_ROOT / "__init__.py").exists():
        pytest.fail("the pack has no root __init__.py: ComfyUI cannot load it")
    pack = _copy_pack(tmp_path / "ComfyUI-OTCache")
    assert _load(pack) is True
    for node_id in ("OTCacheApply", "OTCacheCalibrate", "OTCacheAnchorSearch", "OTCacheSaveSchedule",
                    "OTCacheLoadSchedule"):
        assert node_id in comfy_nodes.NODE_CLASS_MAPPINGS, node_id
        assert comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_id, "").startswith("OTCache")
    web_dirs = {Path(p).resolve() for p in comfy_nodes.EXTENSION_WEB_DIRS.values()}
    assert (pack / "web").resolve() in web_dirs


def test_broken_dependency_never_breaks_startup_and_logs_one_clear_line(tmp_path, registry_snapshot, caplog):
    pack = _copy_pack(tmp_path / "ComfyUI-OTCache")
    engine_init = pack / "otcache_engine" / "__init__.py"
    engine_init.write_text(f"import {MISSING}  # simulated: a requirement that failed to install\n"
                           + engine_init.read_text())
    before = set(comfy_nodes.NODE_CLASS_MAPPINGS)
    with caplog.at_level(logging.DEBUG):
        _load(pack)  # must not raise
    # ComfyUI's own nodes are untouched and none of ours is half-registered
    assert before <= set(comfy_nodes.NODE_CLASS_MAPPINGS)
    assert not any(k.startswith("OTCache") for k in set(comfy_nodes.NODE_CLASS_MAPPINGS) - before)
    mentioning = [r for r in caplog.records if MISSING in r.getMessage()]
    assert len(mentioning) == 1, [r.getMessage()[:300] for r in mentioning]
    line = mentioning[0]
    assert line.levelno >= logging.WARNING and line.exc_info is None
    text = line.getMessage()
    assert "OTCache" in text and "\n" not in text.strip(), text
    assert not any("Traceback (most recent call last)" in r.getMessage() for r in caplog.records
                   if "OTCache" in r.getMessage() or str(pack) in r.getMessage())
