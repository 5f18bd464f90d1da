"""Download test fixtures: a real HTTP server on 127.0.0.1 (there is no internet here, and none is needed)
and the files it serves.

``serve({"name": bytes})`` serves each file at ``/name``, records every request path, and can announce a
longer ``Content-Length`` than it sends (a connection that drops mid-file). ``refused_url`` names a loopback
port nothing listens on.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class Served:
    def __init__(self, port: int):
        self.port = port
        self.requests: list[str] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def serve(files: dict[str, bytes], short: dict[str, int] | None = None) -> Iterator[Served]:
    """Serve ``files``; for names in ``short``, announce that many extra bytes and close early."""
    short = short or {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            name = self.path.lstrip("/")
            served.requests.append(name)
            if name not in files:
                self.send_error(404)
                return
            body = files[name]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body) + short.get(name, 0)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served = Served(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def refused_url(name: str) -> str:
    """A URL on a loopback port that was just free: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def hashed_name(stem: str, body: bytes, suffix: str = ".pth") -> str:
    """``stem-<first 8 hex digits of the SHA-256>.suffix``: torchvision's naming, so the name carries the checksum."""
    return f"{stem}-{hashlib.sha256(body).hexdigest()[:8]}{suffix}"


@functools.lru_cache(maxsize=None)
def alexnet_like_file(seed: int = 0) -> bytes:
    """A torch file holding AlexNet's five convolution layers (``features.*``, seeded): what LPIPS loads from
    torchvision's backbone, at 10 MB instead of 233."""
    import torch
    from torchvision.models import alexnet

    torch.manual_seed(seed)
    state = {k: v for k, v in alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()
