"""Helpers of the tracking tests: a real ``mlflow server`` on loopback, and a proxy that records
the Authorization header of every request it forwards to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def mlflow_server_at(folder: Path) -> Iterator[str]:
    """A real MLflow tracking server (SQLite store ``folder/server.db``, artifacts served from
    ``folder/artifacts``) on a free loopback port; stopped by its process group at the end."""
    port = free_port()
    executable = Path(sys.executable).with_name("mlflow")
    with open(folder / "server.log", "w") as server_log:
        server = subprocess.Popen(
            [str(executable), "server", "--backend-store-uri", f"sqlite:///{folder}/server.db",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            cwd=folder, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


class RecordingProxy(BaseHTTPRequestHandler):
    """Forwards every request to ``target`` and records its Authorization header in ``seen``."""

    target = ""
    seen: list[str | None] = []

    def _forward(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        length = int(self.headers.get("Content-Length") or 0)
        headers = {key: value for key, value in self.headers.items() if key.lower() != "host"}
        request = urllib.request.Request(self.target + self.path, data=self.rfile.read(length) or None,
                                         method=self.command, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            body = response.read()
            self.send_response(response.status)
            self.send_header("Content-Type", response.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def recording_proxy(target: str) -> Iterator[tuple[int, list[str | None]]]:
    """A proxy to ``target`` on a free loopback port: yields its port and the headers it saw."""
    RecordingProxy.target, RecordingProxy.seen = target, []
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), RecordingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield proxy.server_address[1], RecordingProxy.seen
    finally:
        proxy.shutdown()
        proxy.server_close()
