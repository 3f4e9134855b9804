"""Real processes for tests: a private redis-server and a `tokenomy up` gateway, both on 127.0.0.1.

Shared by the scale-out and routed-gateway suites (tests/ is on sys.path through tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def private_redis_server(directory: Path, what: str = "Redis"):
    """A redis-server of the test's own on a free port: yields (process, url); SIGCONT + terminate at
    the end (a test may have paused it). No binary: a failure in CI, a skip elsewhere."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"redis-server binary missing: in CI the {what} tests must run", pytrace=False)
        pytest.skip("redis-server binary not installed")
    import redis

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            break
        except redis.exceptions.RedisError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("private redis-server did not start")
            time.sleep(0.05)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.wait(timeout=10)


class GatewayProcess:
    """`python -m tokenomy up --port 0` in a child process; `wait_ready()` -> its base URL."""

    def __init__(self, config: Path, data_dir: Path, env: dict):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokenomy", "up", "--config", str(config), "--port", "0", "--data-dir",
             str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"tokenomy gateway on (http://[\d.]+:\d+)/v1", line)
            if m:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout_s: float = 60) -> str:
        self._ready.wait(timeout_s)
        assert self.url, "gateway did not start:\n" + "".join(self.lines[-30:])
        return self.url

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
