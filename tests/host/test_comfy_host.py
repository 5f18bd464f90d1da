"""How the host tests find ComfyUI (no ComfyUI import here: these run, and must pass, without one)."""

from __future__ import annotations

from pathlib import Path

import pytest

import comfy_host


def _fake_checkout(root: Path, version: str = "9.9.9") -> Path:
    (root / "comfy").mkdir(parents=True)
    (root / "comfy" / "model_management.py").write_text("")
    (root / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    return root


def test_env_var_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = _fake_checkout(tmp_path / "ComfyUI")
    monkeypatch.setenv("COMFYUI_PATH", str(checkout))
    loc = comfy_host.find_comfyui()
    assert loc.found and loc.path == checkout.resolve() and loc.source == "COMFYUI_PATH"
    assert comfy_host.read_version(loc.path) == "9.9.9"
    assert "9.9.9" in comfy_host.describe()


def test_bad_env_var_gives_reason_and_no_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "missing"))
    loc = comfy_host.find_comfyui()
    assert not loc.found and "COMFYUI_PATH" in loc.reason
    assert "not found" in comfy_host.describe()


def test_enclosing_custom_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = _fake_checkout(tmp_path / "ComfyUI")
    pack = checkout / "custom_nodes" / "ComfyUI-OTCache"
    pack.mkdir(parents=True)
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.setattr(comfy_host, "REPO_ROOT", pack)
    loc = comfy_host.find_comfyui()
    assert loc.found and loc.path == checkout.resolve() and loc.source == "custom_nodes"


def test_default_then_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.setattr(comfy_host, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(comfy_host, "DEFAULT_PATH", _fake_checkout(tmp_path / "home" / "ComfyUI"))
    assert comfy_host.find_comfyui().source == "default"
    monkeypatch.setattr(comfy_host, "DEFAULT_PATH", tmp_path / "nowhere")
    loc = comfy_host.find_comfyui()
    assert not loc.found and "COMFYUI_PATH" in loc.reason
    assert comfy_host.read_version(tmp_path) == "unknown"
