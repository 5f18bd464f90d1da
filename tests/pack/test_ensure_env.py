"""scripts/ensure_env.sh tells what it will install, how large each part is, and which step it is on.

Run for real on a stand-in venv that needs nothing (its ``bin/python`` runs this test's Python, which has
torch and torchvision, and refuses ``-m pip`` so that no test can install anything), and with ``--dry-run`` on
a venv that does not exist yet. No venv is created, nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ensure_env.sh"


def run(*args: str) -> str:
    out = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def stand_in_venv(folder: Path, requirements_stamp: bool = True) -> Path:
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    python.write_text(f'#!/bin/sh\n[ "$1 $2" = "-m pip" ] && {{ echo "pip was called" >&2; exit 97; }}\n'
                      f'exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    if requirements_stamp:
        reqs = (ROOT / "requirements.txt").read_bytes() + (ROOT / "requirements-dev.txt").read_bytes()
        (folder / ".otcache-deps").write_text(hashlib.sha1(reqs).hexdigest()[:12] + "\n")
    return folder


def test_a_venv_that_needs_nothing_is_ready_at_once_and_left_alone(tmp_path):
    venv = stand_in_venv(tmp_path / "venv")
    before = sorted(p.name for p in venv.rglob("*"))
    assert run(str(venv), "", "2.14").splitlines() == [f"[env] ready: {venv} (nothing to install)"]
    assert sorted(p.name for p in venv.rglob("*")) == before          # not even the pins file is rewritten


def test_only_what_is_due_is_announced_with_its_step_and_size(tmp_path):
    venv = stand_in_venv(tmp_path / "venv", requirements_stamp=False)
    lines = run("--dry-run", str(venv), "", "2.14").splitlines()
    assert lines[0] == f"[env] {venv}: 1 step(s) to do; pip shows each download and its size"
    assert lines[1].startswith("[env] step 1/1: the pack's requirements: numpy, scipy, optuna, lpips")
    assert lines[1].endswith("(about 0.5 GB on disk)") and "nothing was installed" in lines[-1]


@pytest.mark.parametrize("flavour, torch_line", [
    ("2.14", "torch 2.14.1 + torchvision 0.29.1 with their CUDA libraries (about 5.5 GB on disk)"),
    ("2.9", "torch 2.9.1 + torchvision 0.24.1 + torchaudio 2.9 with their CUDA libraries (about 7 GB on disk)")])
def test_a_fresh_install_lists_every_step_with_its_size_and_installs_nothing_in_a_dry_run(tmp_path, flavour,
                                                                                         torch_line):
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "requirements.txt").write_text("torch\nnumpy\n")
    venv = tmp_path / "fresh"
    lines = run("--dry-run", str(venv), str(comfy), flavour).splitlines()
    assert lines[0] == f"[env] {venv}: 4 step(s) to do; pip shows each download and its size"
    assert [line.split(":", 1)[0] for line in lines[1:5]] == [f"[env] step {i}/4" for i in range(1, 5)]
    assert lines[1].startswith(f"[env] step 1/4: a virtualenv at {venv}")
    assert lines[2] == f"[env] step 2/4: {torch_line}"
    assert "the pack's requirements" in lines[3] and f"ComfyUI's requirements from {comfy}" in lines[4]
    assert "GB on disk" in lines[4] and lines[5] == f"[env] dry run: nothing was installed into {venv}"
    assert not venv.exists()
