"""Packaging: what ComfyUI-Manager and the Comfy Registry read, and what a `git clone` must ship."""
from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_project_metadata():
    p = _pyproject()["project"]
    assert p["name"] == "comfyui-otcache"
    assert re.fullmatch(r"\d+\.\d+\.\d+", p["version"])
    assert len(p["description"]) > 40
    assert (ROOT / p["license"]["file"]).is_file()
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert p["urls"]["Repository"].startswith("https://")


def test_dependencies_are_the_requirements_and_never_torch():
    deps = _pyproject()["project"]["dependencies"]
    assert deps == _requirements()
    for d in deps:
        assert not re.match(r"(torch|torchvision|torchaudio)\b", d), d


def test_comfy_registry_fields():
    comfy = _pyproject()["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
        assert comfy.get(key), key
    assert comfy["requires-comfyui"].startswith(">=0.3.")
    # the icon URL points into this repository's main branch: the file must ship
    icon = comfy["Icon"].split("/main/", 1)
    assert len(icon) == 2 and (ROOT / icon[1]).is_file(), comfy["Icon"]


def test_web_directory_holds_only_frontend_modules():
    files = sorted(p.name for p in (ROOT / "web").iterdir())
    assert "otcache.js" in files
    assert all(f.endswith(".js") for f in files), files  # ComfyUI serves and imports every .js file there
    main = (ROOT / "web" / "otcache.js").read_text()
    assert 'from "../../scripts/app.js"' in main and "registerExtension" in main
    assert "onDrawForeground" not in main  # no canvas hook: a DOM widget works in both renderers


def test_example_workflows_mirror_workflows():
    wf = {p.name: p.read_text() for p in (ROOT / "workflows").glob("*.json")}
    ex = {p.name: p.read_text() for p in (ROOT / "example_workflows").glob("*.json")}
    assert wf and wf == ex
    for name, text in wf.items():
        data = json.loads(text)
        assert data["nodes"] and "links" in data, name


def test_no_bytecode_or_symlinks_are_tracked():
    try:
        out = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for line in out.splitlines():
        mode, _sha, _stage, path = line.split(None, 3)
        assert mode != "120000", f"symlink tracked: {path}"  # governed ComfyUI builds refuse packs with symlinks
        assert not path.endswith((".pyc", ".pyo")) and "__pycache__" not in path, path
        assert "node_modules/" not in path, path
