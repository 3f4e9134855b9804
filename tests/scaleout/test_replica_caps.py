"""Real gateway processes (`tokenomy up`) sharing PostgreSQL + Redis with a billing plan capped
at N requests (issue 9): across 3 replicas at most N are admitted, not N per replica. The
counters' fail mode from the YAML (`counters: {fail_mode}`) and `up --redis-fail-mode`:
closed -> 503 naming it while Redis is away; open -> served, the cap then held per replica."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import aiohttp

from .tcpproxy import TcpProxy
from .test_gateway_replicas import ADMIN, BODY, Gateway

from tokenomy.metering.backends import open_metering

CAP = 12
CONFIG = f"""
deployments:
  - name: small
    emulate: {{model: llama-3-8b, accelerator: h100, time_scale: 0.001}}
    pricing: {{list: {{input: 1, output: 1}}}}
model_groups:
  chat: {{deployments: [small]}}
plans:
  capped:
    subscription_usd: 20
    caps: [{{window: 1h, limit: {CAP}, unit: requests, at_cap: block}}]
tenants:
  - {{name: acme, plan: capped}}
"""


class CapGateway(Gateway):
    """`tokenomy up` with extra arguments."""

    def __init__(self, config, data_dir, env, extra=()):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokenomy", "up", "--config", str(config), "--port", "0", "--data-dir",
             str(data_dir), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines = []
        self.url = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()


def _start(tmp_path, env: dict, n: int, config_text: str = CONFIG, extra=()) -> tuple[list[CapGateway], list[str]]:
    config = tmp_path / f"tokenomy{len(list(tmp_path.glob('tokenomy*.yaml')))}.yaml"
    config.write_text(config_text)
    gws = [CapGateway(config, tmp_path / f"gw-{config.stem}-{i}", env, extra) for i in range(n)]
    return gws, [g.wait_ready() for g in gws]


async def _fire(urls: list[str], key: str, n: int) -> list[tuple[int, dict]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        async def one(i: int):
            async with s.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=BODY,
                              headers={"Authorization": f"Bearer {key}"}) as r:
                return r.status, await r.json()

        return await asyncio.gather(*(one(i) for i in range(n)))


def _env(pg, redis_url, redis_prefix, **extra) -> dict:
    env = {**os.environ, "TOKENOMY_LEDGER_URL": pg, "TOKENOMY_REDIS_URL": redis_url,
           "TOKENOMY_REDIS_PREFIX": redis_prefix, "TOKENOMY_ADMIN_KEY": ADMIN, **extra}
    env.pop("TOKENOMY_REDIS_FAIL_MODE", None)
    return env


async def test_a_plan_cap_of_n_requests_admits_n_across_3_replicas(pg, redis_url, redis_prefix, tmp_path):
    observer = open_metering(tmp_path / "observer", ledger_url=pg, redis_url=redis_url, redis_prefix=redis_prefix,
                             admin_key=ADMIN)
    gws: list[CapGateway] = []
    try:
        _, key = observer.create_key("acme")
        gws, urls = await asyncio.to_thread(_start, tmp_path, _env(pg, redis_url, redis_prefix), 3)
        results = await _fire(urls, key, 6 * CAP)  # all at once, spread over the replicas
        statuses = [s for s, _ in results]
        assert statuses.count(200) == CAP, statuses  # not 3 x CAP
        assert statuses.count(429) == 5 * CAP
        assert {b["error"]["code"] for s, b in results if s == 429} == {"plan_cap_reached"}
        # later requests, on any replica, are still refused: the recorded usage is shared
        assert {s for s, _ in await _fire(urls, key, 6)} == {429}
        assert observer.usage("acme")["requests"] == CAP
    finally:
        for g in gws:
            g.stop()
        observer.shutdown()


async def test_yaml_fail_mode_closed_503_and_the_up_flag_overrides_it(pg, redis_url, redis_prefix, tmp_path):
    observer = open_metering(tmp_path / "observer", ledger_url=pg, redis_url=redis_url, redis_prefix=redis_prefix,
                             admin_key=ADMIN)
    parts = urlsplit(redis_url)
    closed_yaml = CONFIG + "counters: {fail_mode: closed}\n"
    gws: list[CapGateway] = []
    try:
        _, key = observer.create_key("acme")
        with TcpProxy(parts.hostname, parts.port or 6379) as proxy:
            via = redis_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
            # the environment says open: the YAML's closed wins over it
            env = _env(pg, via, redis_prefix, TOKENOMY_REDIS_FAIL_MODE="open")
            closed, closed_urls = await asyncio.to_thread(_start, tmp_path, env, 1, closed_yaml)
            opened, open_urls = await asyncio.to_thread(_start, tmp_path, env, 1, closed_yaml,
                                                        ("--redis-fail-mode", "open"))
            gws = closed + opened
            proxy.stop()
            (status, body), = await _fire(closed_urls, key, 1)
            assert status == 503 and body["error"]["code"] == "service_unavailable"
            assert "Redis" in body["error"]["message"] and "fail_mode is 'closed'" in body["error"]["message"]
            results = await _fire(open_urls, key, 2 * CAP)  # served, the cap held by this replica alone
            assert [s for s, _ in results].count(200) == CAP and [s for s, _ in results].count(429) == CAP
            assert all(g.proc.poll() is None for g in gws)
    finally:
        for g in gws:
            g.stop()
        observer.shutdown()


def test_up_rejects_a_bad_redis_fail_mode_in_one_line(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(CONFIG + "counters: {fail_mode: sometimes}\n")
    for args in (["--redis-fail-mode", "sometimes"], ["--config", str(bad_yaml)]):
        r = subprocess.run([sys.executable, "-m", "tokenomy", "up", "--data-dir", str(tmp_path / "d"), *args],
                           capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        field = "--redis-fail-mode" if args[0] == "--redis-fail-mode" else "counters.fail_mode"
        assert lines[0].startswith("error: ") and field in lines[0] and "'closed' or 'open'" in lines[0]
