"""Throughput of a key without limits while the gateway's Redis is paused, vs Redis healthy,
in the same run (issue 14 §4; goal >= 80 %).

A private redis-server on a free port backs the gateway's counters (fail_mode closed: the
strictest); the key has no budget, rate limit or plan cap, so no request needs shared state.
Alongside it (--limited-concurrency, default 2) a key with a budget and a rate limit sends
requests too: those need Redis, so while it is paused they wait and fail (503, fail_mode
closed) - if they waited on the event loop, the unlimited key would stall with them.
A closed-loop client (N concurrent connections) drives `tokenomy up` through alternating
phases: healthy, paused (SIGSTOP on the private redis-server), healthy, paused, ...; each
phase's completed requests/s is counted. The ratio paused / healthy is the figure.

    .venv/bin/python benchmarks/redis_pause.py [--phase-s 5] [--rounds 2] [--concurrency 8] [--json]

Reuses benchmarks/gateway_overhead.py (upstream, gateway start, process groups).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("gateway_overhead", HERE / "gateway_overhead.py")
go = importlib.util.module_from_spec(_spec)
sys.modules["gateway_overhead"] = go
_spec.loader.exec_module(go)


def start_redis(procs, work: Path) -> tuple[subprocess.Popen, str]:
    port = go.free_port()
    proc = procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(work)], work / "redis.log")
    deadline = time.monotonic() + 20
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    while time.monotonic() < deadline:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return proc, url
        except redis.exceptions.RedisError:
            time.sleep(0.1)
    raise SystemExit(f"private redis-server did not start; log {work / 'redis.log'}")


async def phase(url: str, key: str, duration_s: float, concurrency: int, timeout_s: float,
                limited_key: str | None = None, limited_concurrency: int = 0) -> dict:
    """Closed loop: `concurrency` clients send one request after another for duration_s (and
    `limited_concurrency` more with the limited key, counted apart)."""
    import aiohttp

    body = json.dumps(go.REQUEST_BODY).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    ok = failed = 0
    statuses: dict[int, int] = {}
    end = time.monotonic() + duration_s
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    limited: dict = {"ok": 0, "failed": 0, "statuses": {}}
    limited_headers = {**headers, "Authorization": f"Bearer {limited_key}"}

    async def limited_client(session):
        while time.monotonic() < end:
            try:
                async with session.post(url, data=body, headers=limited_headers) as resp:
                    await resp.read()
                    limited["ok" if resp.status == 200 else "failed"] += 1
                    if resp.status != 200:
                        limited["statuses"][resp.status] = limited["statuses"].get(resp.status, 0) + 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                limited["failed"] += 1

    async def client(session):
        nonlocal ok, failed
        while time.monotonic() < end:
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        ok += 1
                    else:
                        failed += 1
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                failed += 1

    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)),
                             *(limited_client(session) for _ in range(limited_concurrency if limited_key else 0)))
    elapsed = time.monotonic() - t0
    return {"ok": ok, "failed": failed, "statuses": statuses, "elapsed_s": elapsed, "rps": ok / elapsed,
            "limited": limited}


def create_limited_key(work: Path) -> str:
    """A key with a $1,000,000 budget and 1,000,000 requests/min: never refused for its limits,
    but every request needs the shared counters."""
    tokenomy = str(Path(sys.executable).with_name("tokenomy"))
    out = subprocess.run([tokenomy, "keys", "create", "--tenant", "limited", "--budget-usd", "1000000", "--rpm",
                          "1000000", "--data-dir", str(work / "tokenomy-data"), "--json"],
                         capture_output=True, text=True, env={**os.environ, "TOKENOMY_ADMIN_KEY": go.ADMIN_KEY},
                         timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"tokenomy keys create (limited) failed: {out.stderr.strip()}")
    return json.loads(out.stdout)["key"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase-s", type=float, default=5.0, help="seconds per phase (default 5)")
    p.add_argument("--rounds", type=int, default=2, help="healthy+paused pairs (default 2)")
    p.add_argument("--concurrency", type=int, default=8, help="clients of the key without limits")
    p.add_argument("--limited-concurrency", type=int, default=2,
                   help="clients of a key with a budget and a rate limit alongside (0: none)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = p.parse_args()
    if args.phase_s <= 0 or args.rounds < 1 or args.concurrency < 1:
        p.error("--phase-s must be > 0, --rounds and --concurrency >= 1")

    procs = go.Procs()
    work = Path(tempfile.mkdtemp(prefix="tokenomy-redis-pause-"))
    try:
        redis_proc, redis_url = start_redis(procs, work)
        up_port = go.free_port()
        up = procs.start([sys.executable, str(HERE / "gateway_overhead.py"), "--role", "upstream",
                          "--port", str(up_port)], work / "upstream.log")
        go.wait_ready(f"http://127.0.0.1:{up_port}/v1/models", up, work / "upstream.log", 30)
        os.environ["TOKENOMY_REDIS_URL"] = redis_url  # the gateway and `keys create` inherit it
        os.environ["TOKENOMY_REDIS_FAIL_MODE"] = "closed"
        url, key = go.start_gateway(procs, work, f"http://127.0.0.1:{up_port}/v1")
        limited_key = create_limited_key(work)
        lc = args.limited_concurrency

        def run_phase(seconds: float) -> dict:
            return asyncio.run(phase(url, key, seconds, args.concurrency, 30, limited_key, lc))

        run_phase(1.0)  # warm-up (caches, connections, budget counters loaded)
        rows = []
        for _ in range(args.rounds):
            rows.append(("healthy", run_phase(args.phase_s)))
            os.kill(redis_proc.pid, signal.SIGSTOP)
            try:
                rows.append(("paused", run_phase(args.phase_s)))
            finally:
                os.kill(redis_proc.pid, signal.SIGCONT)
        healthy = [r for name, r in rows if name == "healthy"]
        paused = [r for name, r in rows if name == "paused"]

        def rps(rs):
            return sum(r["ok"] for r in rs) / sum(r["elapsed_s"] for r in rs)

        ratio = rps(paused) / rps(healthy) if rps(healthy) else 0.0
        out = {"healthy_rps": round(rps(healthy), 1), "paused_rps": round(rps(paused), 1),
               "ratio": round(ratio, 3), "goal": 0.8, "phase_s": args.phase_s, "rounds": args.rounds,
               "concurrency": args.concurrency, "limited_concurrency": lc,
               "failed": {"healthy": sum(r["failed"] for r in healthy), "paused": sum(r["failed"] for r in paused)},
               "phases": [{"phase": name, **r} for name, r in rows]}
        if args.json:
            print(json.dumps(out))
            return
        print(f"key without limits, closed loop x{args.concurrency} (+ x{lc} of a key with a budget and a rate "
              f"limit), {args.rounds} x ({args.phase_s:g} s healthy + {args.phase_s:g} s Redis SIGSTOPped), "
              "fail_mode closed, SQLite ledger")
        for name, r in rows:
            print(f"  {name:8s} {r['rps']:8.1f} req/s  ok {r['ok']:6d}  failed {r['failed']:4d} {r['statuses'] or ''}"
                  f"   limited key: ok {r['limited']['ok']}, refused {r['limited']['failed']} {r['limited']['statuses'] or ''}")
        print(f"paused / healthy = {ratio:.2f}  (goal >= 0.80){'' if ratio >= 0.8 else '  BELOW GOAL'}")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
