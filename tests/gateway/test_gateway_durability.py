"""kill -9 the gateway (a real `python -m tokenomy up` subprocess) under concurrent load, restart:
every response a client received complete has exactly one event; none is counted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import yaml

from gw_helpers import ADMIN_KEY, Stub, stubs

TENANT_KEY = "tk-loadtest01-0123456789abcdefghijklmnopqrstuv"
MSGS = [{"role": "user", "content": "tell me a story"}]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _start(cfg: Path, port: int, data_dir: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TOKENOMY_ADMIN_KEY": ADMIN_KEY}
    return subprocess.Popen([sys.executable, "-m", "tokenomy", "up", "--config", str(cfg), "--port", str(port),
                             "--data-dir", str(data_dir)], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            assert proc.poll() is None, log.read_text()
            try:
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway did not start: " + log.read_text())


async def _worker(url: str, i: int, done: list[str], stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {TENANT_KEY}"}
    async with aiohttp.ClientSession() as s:
        n = 0
        while not stop.is_set():
            n += 1
            stream = (i + n) % 2 == 0
            try:
                async with s.post(url + "/v1/chat/completions", headers=headers,
                                  json={"model": "m", "messages": MSGS, "stream": stream, "max_tokens": 20}) as r:
                    raw = await r.read()
                    if r.status != 200:
                        continue
                    rid = r.headers["x-tokenomy-request-id"]
                    if stream:
                        complete = raw.endswith(b"data: [DONE]\n\n")
                    else:
                        complete = orjson.loads(raw)["usage"]["completion_tokens"] == 20
                    if complete:
                        done.append(rid)
            except (aiohttp.ClientError, ConnectionError, ValueError, asyncio.TimeoutError):
                await asyncio.sleep(0.01)  # the gateway is gone


async def test_kill9_under_load_then_restart_exactly_once(tmp_path):
    async with stubs(Stub(out_tokens=20, delay_s=0.003, chunk_delay_s=0.001)) as (s,):
        cfg = tmp_path / "tokenomy.yaml"
        cfg.write_text(yaml.safe_dump({
            "deployments": [{"name": "d", "base_url": s.base_url, "pricing": {"list": {"input": 1.0, "output": 2.0}}}],
            "model_groups": {"m": {"deployments": ["d"]}},
            "tenants": [{"name": "load"}],
            "keys": [{"tenant": "load", "secret": TENANT_KEY}],
        }))
        data_dir, log, port = tmp_path / "data", tmp_path / "gateway.log", _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _start(cfg, port, data_dir, log)
        try:
            await _wait_ready(url, proc, log)
            done: list[str] = []
            stop = asyncio.Event()
            workers = [asyncio.create_task(_worker(url, i, done, stop)) for i in range(16)]
            for _ in range(1500):  # until a good number of responses completed (<= 30 s on a busy box)
                if len(done) >= 100:
                    break
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGKILL)  # mid-load: requests in flight everywhere
            proc.wait()
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*workers)
            assert len(done) >= 20, log.read_text()
            assert len(set(done)) == len(done)

            proc = _start(cfg, port, data_dir, log)
            await _wait_ready(url, proc, log)
            async with aiohttp.ClientSession() as sess:
                async with sess.get(url + "/admin/usage?tenant=load",
                                    headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
                    usage = await r.json()
            assert usage["requests"] >= len(done)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert proc.returncode == 0, log.read_text()  # graceful shutdown after the restart

    from tokenomy.metering import Metering

    with Metering.open(data_dir, ensure_admin=False) as m:
        events = m.events("load", limit=1_000_000)
        ids = [e.id for e in events]
        assert len(ids) == len(set(ids))  # none counted twice
        assert len(ids) == usage["requests"]
        recorded = set(ids)
        missing = [rid for rid in done if rid not in recorded]
        assert not missing, f"{len(missing)} complete responses without an event"
        assert all(m.ledger.count_event(rid) == 1 for rid in done)
        assert all(e.status == "ok" for e in events if e.id in set(done))


async def test_sigterm_drains_in_flight_streams(tmp_path):
    async with stubs(Stub(out_tokens=40, chunk_delay_s=0.02)) as (s,):
        cfg = tmp_path / "tokenomy.yaml"
        cfg.write_text(yaml.safe_dump({
            "deployments": [{"name": "d", "base_url": s.base_url, "pricing": {"list": {"input": 1.0, "output": 2.0}}}],
            "keys": [{"tenant": "load", "secret": TENANT_KEY}],
        }))
        data_dir, log, port = tmp_path / "data", tmp_path / "gateway.log", _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _start(cfg, port, data_dir, log)
        try:
            await _wait_ready(url, proc, log)
            async with aiohttp.ClientSession() as sess:
                async with sess.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {TENANT_KEY}"},
                                     json={"model": "d", "messages": MSGS, "stream": True}) as r:
                    first = await r.content.readline()
                    assert first.startswith(b"data: ")
                    proc.send_signal(signal.SIGTERM)  # mid-stream (40 tokens x 20 ms)
                    rest = await r.read()
                    rid = r.headers["x-tokenomy-request-id"]
            assert rest.endswith(b"data: [DONE]\n\n")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    from tokenomy.metering import Metering

    with Metering.open(data_dir, ensure_admin=False) as m:
        ev = m.events("load")[0]
        assert ev.id == rid and ev.status == "ok" and ev.output_tokens == 40
