"""Start a real ComfyUI server on loopback with this pack installed, for the server and browser tests.

Everything the server writes lives in a temporary base directory (``--base-directory``): its
``custom_nodes`` holds a symlink to this repository (the pack, as a ``git clone`` would put it) and a copy of
the test-only conditioning pack; ``models/diffusion_models`` holds a tiny seeded Wan 2.1 file; user data,
inputs and outputs stay there too. Nothing is added to the ComfyUI checkout. The server runs with the Python
of the test session (the host's venv), CPU only, offline (``--disable-api-nodes``), and is stopped at the end.

Flags are taken from the host's ``main.py --help``: ``--base-directory`` (else the pack is linked into the
checkout's ``custom_nodes`` for the session and removed afterwards) and ``--database-url`` (an in-memory
database, so parallel servers on one checkout never share a lock).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_PACK = Path(__file__).resolve().parent / "comfy_test_pack"
PACK_DIR_NAME = "ComfyUI-OTCache"
TEST_PACK_NAME = "otcache_test_nodes"
TINY_MODEL = "otcache_tiny_wan21.safetensors"
START_TIMEOUT = float(os.environ.get("OTCACHE_SERVER_START_TIMEOUT", "240"))

_HELP_CACHE: dict[str, str] = {}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_help(comfy_dir: Path, python: str = sys.executable) -> str:
    """``main.py --help`` of a checkout (cached per checkout)."""
    key = f"{python}:{comfy_dir}"
    if key not in _HELP_CACHE:
        out = subprocess.run([python, "main.py", "--help"], cwd=comfy_dir, capture_output=True, text=True,
                             timeout=180, env=_env())
        _HELP_CACHE[key] = out.stdout + out.stderr
    return _HELP_CACHE[key]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the pack is imported from the repository: leave no caches there
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


@dataclass
class ComfyServer:
    comfy_dir: Path
    base_dir: Path
    python: str = sys.executable
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    linked_into_checkout: Path | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --------------------------------------------------------------------------------- set-up
    def prepare(self) -> None:
        help_text = server_help(self.comfy_dir, self.python)
        for sub in ("custom_nodes", "models/diffusion_models", "input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        if "--base-directory" in help_text:
            nodes_dir = self.base_dir / "custom_nodes"
            self.flags += ["--base-directory", str(self.base_dir)]
        else:  # older ComfyUI: link into the checkout for the session (removed in stop())
            nodes_dir = self.comfy_dir / "custom_nodes"
        if "--database-url" in help_text:
            self.flags += ["--database-url", "sqlite:///:memory:"]
        pack_link = nodes_dir / PACK_DIR_NAME
        if not pack_link.exists():
            pack_link.symlink_to(REPO_ROOT, target_is_directory=True)
        test_pack = nodes_dir / TEST_PACK_NAME
        if not test_pack.exists():
            shutil.copytree(TEST_PACK, test_pack, ignore=shutil.ignore_patterns("__pycache__"))
        if nodes_dir != self.base_dir / "custom_nodes":
            self.linked_into_checkout = pack_link
            self._checkout_test_pack = test_pack
        model = self.base_dir / "models" / "diffusion_models" / TINY_MODEL
        if not model.exists():
            subprocess.run([self.python, str(Path(__file__).with_name("make_tiny_checkpoint.py")),
                            str(self.comfy_dir), str(model)], check=True, timeout=300, env=_env(),
                           capture_output=True)

    def start(self) -> "ComfyServer":
        self.prepare()
        self.log_path = self.base_dir / "server.log"
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--disable-api-nodes", "--cache-none", *self.flags]
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=log, stderr=subprocess.STDOUT, env=_env())
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            self.process_wait(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def process_wait(self, seconds: float) -> None:
        """Wait for the server process up to ``seconds`` (returns early if it exits): a bounded poll step."""
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        if self.linked_into_checkout is not None:
            self.linked_into_checkout.unlink(missing_ok=True)
            shutil.rmtree(getattr(self, "_checkout_test_pack"), ignore_errors=True)
            self.linked_into_checkout = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AttributeError):
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    # --------------------------------------------------------------------------------- HTTP
    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                timeout: float = 60) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode()
                status = r.status
        except urllib.error.HTTPError as e:
            text, status = e.read().decode(errors="replace"), e.code
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def get(self, path: str, timeout: float = 60) -> Any:
        status, data = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {data}")
        return data

    def post(self, path: str, body: Any, timeout: float = 60) -> tuple[int, Any]:
        return self.request("POST", path, body, timeout=timeout)

    def run_prompt(self, prompt: dict, timeout: float = 600) -> dict:
        """Queue an API-format prompt and wait (polling /history, bounded) for its history entry."""
        status, data = self.post("/prompt", {"prompt": prompt, "client_id": "otcache-tests"})
        if status != 200:
            raise RuntimeError(f"/prompt refused the workflow: HTTP {status}: {json.dumps(data)[:4000]}")
        prompt_id = data["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            entry = hist.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited while running the prompt:\n{self.log_tail()}")
            self.process_wait(0.25)
        raise RuntimeError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")


def start_server(comfy_dir: Path, base_dir: Path) -> ComfyServer:
    server = ComfyServer(Path(comfy_dir), Path(base_dir))
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


# ------------------------------------------------------------------------------------------- API prompts

def defaults_for(object_info: dict, class_type: str) -> dict:
    """Default values of a node's required widget inputs, from /object_info (links are left out)."""
    spec = object_info[class_type]["input"]
    out = {}
    for name, entry in spec.get("required", {}).items():
        kind, opts = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
        if isinstance(kind, list):  # legacy combo
            if kind:
                out[name] = opts.get("default", kind[0])
        elif kind == "COMBO":
            options = opts.get("options") or []
            if options:
                out[name] = opts.get("default", options[0])
        elif kind in ("INT", "FLOAT", "BOOLEAN", "STRING"):
            if "default" in opts:
                out[name] = opts["default"]
            elif kind == "STRING":
                out[name] = ""
    return out


def combo_options(object_info: dict, class_type: str, name: str) -> list:
    for group in ("required", "optional"):
        entry = object_info[class_type]["input"].get(group, {}).get(name)
        if entry is None:
            continue
        if isinstance(entry[0], list):
            return list(entry[0])
        if entry[0] == "COMBO":
            return list((entry[1] or {}).get("options", []))
    raise KeyError(f"{class_type} has no combo input {name!r}")
