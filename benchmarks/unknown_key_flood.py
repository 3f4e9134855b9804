"""A legitimate client's latency while a flood of unknown key ids hits the gateway, vs no
flood, in the same run, on the PostgreSQL ledger (issue 14 §4; goal: p50 and p99 within 2x).

Every flood request carries a well-formed key with a fresh random key id (`tk-<id>-<secret>`),
so no cache can answer it: each one costs the gateway a ledger look-up. The legitimate client
sends one request after another with a valid key and records each latency. Phases alternate:
quiet, flood, quiet, flood, ...; the flood runs in its own process (closed loop, N connections).

    .venv/bin/python benchmarks/unknown_key_flood.py [--phase-s 5] [--rounds 2] [--flood-concurrency 16] [--json]

Needs PostgreSQL (TOKENOMY_TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432/test); the
ledger lives in a schema of its own, dropped at the end. Reuses benchmarks/gateway_overhead.py.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("gateway_overhead", HERE / "gateway_overhead.py")
go = importlib.util.module_from_spec(_spec)
sys.modules["gateway_overhead"] = go
_spec.loader.exec_module(go)

PG_URL = os.environ.get("TOKENOMY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def legit(url: str, key: str, duration_s: float) -> list[float]:
    """One request after another for duration_s; latencies in ms (200s only)."""
    import aiohttp

    body = json.dumps(go.REQUEST_BODY).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    out: list[float] = []
    end = time.monotonic() + duration_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 200:
                    out.append((time.perf_counter() - t0) * 1000)
    return out


async def flood(url: str, duration_s: float, concurrency: int) -> dict:
    import aiohttp

    body = json.dumps(go.REQUEST_BODY).encode()
    sent = 0
    statuses: dict[int, int] = {}
    end = time.monotonic() + duration_s

    async def one(session):
        nonlocal sent
        while time.monotonic() < end:
            key = f"tk-{secrets.token_hex(6)}-{secrets.token_urlsafe(16)}"
            try:
                async with session.post(url, data=body, headers={"Authorization": f"Bearer {key}",
                                                                 "Content-Type": "application/json"}) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                statuses[0] = statuses.get(0, 0) + 1
            sent += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
    return {"sent": sent, "rps": sent / duration_s, "statuses": statuses}


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase-s", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--flood-concurrency", type=int, default=16)
    p.add_argument("--json", action="store_true")
    p.add_argument("--role", choices=["bench", "flood"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "flood":
        go._use_uvloop()
        print(json.dumps(asyncio.run(flood(args.url, args.phase_s, args.flood_concurrency))))
        return
    if args.phase_s <= 0 or args.rounds < 1 or args.flood_concurrency < 1:
        p.error("--phase-s must be > 0, --rounds and --flood-concurrency >= 1")

    import sqlalchemy as sa

    schema = f"tk_flood_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in PG_URL else "?"
    os.environ["TOKENOMY_LEDGER_URL"] = f"{PG_URL}{sep}schema={schema}"
    os.environ.pop("TOKENOMY_REDIS_URL", None)
    procs = go.Procs()
    work = Path(tempfile.mkdtemp(prefix="tokenomy-flood-"))
    try:
        up_port = go.free_port()
        up = procs.start([sys.executable, str(HERE / "gateway_overhead.py"), "--role", "upstream",
                          "--port", str(up_port)], work / "upstream.log")
        go.wait_ready(f"http://127.0.0.1:{up_port}/v1/models", up, work / "upstream.log", 30)
        url, key = go.start_gateway(procs, work, f"http://127.0.0.1:{up_port}/v1")
        asyncio.run(legit(url, key, 1.0))  # warm-up
        rows = []
        for _ in range(args.rounds):
            rows.append(("quiet", asyncio.run(legit(url, key, args.phase_s)), None))
            flooder = subprocess.Popen([sys.executable, __file__, "--role", "flood", "--url", url, "--phase-s",
                                        str(args.phase_s + 1.0), "--flood-concurrency", str(args.flood_concurrency)],
                                       stdout=subprocess.PIPE, text=True, preexec_fn=go._renice)
            time.sleep(0.5)  # the flood is under way
            lat = asyncio.run(legit(url, key, args.phase_s))
            out, _ = flooder.communicate(timeout=args.phase_s + 60)
            rows.append(("flood", lat, json.loads(out.strip().splitlines()[-1])))
        quiet = [x for name, lat, _ in rows if name == "quiet" for x in lat]
        flooded = [x for name, lat, _ in rows if name == "flood" for x in lat]
        floods = [f for _, _, f in rows if f]
        res = {
            "quiet": {"n": len(quiet), "p50_ms": quantile(quiet, 0.5), "p99_ms": quantile(quiet, 0.99)},
            "flood": {"n": len(flooded), "p50_ms": quantile(flooded, 0.5), "p99_ms": quantile(flooded, 0.99),
                      "flood_rps": sum(f["rps"] for f in floods) / len(floods),
                      "flood_statuses": {k: sum(f["statuses"].get(k, 0) for f in floods)
                                         for k in {s for f in floods for s in f["statuses"]}}},
        }
        res["ratio_p50"] = res["flood"]["p50_ms"] / res["quiet"]["p50_ms"]
        res["ratio_p99"] = res["flood"]["p99_ms"] / res["quiet"]["p99_ms"]
        res["goal"] = 2.0
        if args.json:
            print(json.dumps(res))
            return
        q, f = res["quiet"], res["flood"]
        print(f"PostgreSQL ledger; legitimate client one request after another; flood of unknown key ids "
              f"x{args.flood_concurrency} connections; {args.rounds} x ({args.phase_s:g} s quiet + {args.phase_s:g} s flood)")
        print(f"  quiet  n={q['n']:6d}  p50 {q['p50_ms']:7.2f} ms  p99 {q['p99_ms']:7.2f} ms")
        print(f"  flood  n={f['n']:6d}  p50 {f['p50_ms']:7.2f} ms  p99 {f['p99_ms']:7.2f} ms   "
              f"(flood {f['flood_rps']:.0f} req/s, statuses {f['flood_statuses']})")
        print(f"flood / quiet: p50 {res['ratio_p50']:.2f}x, p99 {res['ratio_p99']:.2f}x  (goal <= 2x)")
    finally:
        procs.stop_all()
        engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


if __name__ == "__main__":
    main()
