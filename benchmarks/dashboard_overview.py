"""Dashboard overview on a large ledger: rollups vs a raw-events aggregate, side by side.

Seeds N events (default 1M, in time order over D days, 20 tenants, 6 deployments, half with
routing decisions) into a real SQLite ledger, folds them into the rollup tables once (timed:
the one-off catch-up cost on an existing ledger), then for several windows measures:
  - rollups:  GET /dashboard/api/overview served by the real aiohttp app (HTTP round trip on
              127.0.0.1, incremental fold included) - what a page waits for
  - baseline: the same figures (series per bucket x model x deployment) aggregated straight
              from the events table with one SQL GROUP BY - what a page would wait for without rollups
and a "live" case where 200 new events are committed between requests (so each request folds).
Prints median / p95 milliseconds and the speed-up. Goal: overview < 300 ms over 1M events.

    .venv/bin/python benchmarks/dashboard_overview.py [--events 1000000] [--days 30] [--repeat 15] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
from aiohttp import web

from tokenomy.dashboard import mount
from tokenomy.dashboard import plans as _plans, queries as _queries, routes as _routes  # noqa: F401  (load now)
from tokenomy.dashboard.rollups import Rollups
from tokenomy.metering import Metering, UsageEvent

ADMIN = "tk-admin-bench-dashboard"
DEPLOYMENTS = [("llama-3-8b", "8b@l4", 0.05, 0.1), ("llama-3-8b", "8b@h100", 0.08, 0.2),
               ("llama-3-70b", "70b@h100", 0.6, 1.2), ("llama-3-70b", "70b@api", 0.9, 0.9),
               ("gpt-4o-mini", "mini@api", 0.15, 0.6), ("gpt-4o-mini", "mini@azure", 0.165, 0.66)]


def _events(n: int, days: float, now: float, keys: list[tuple[str, str]], seed: int = 1, prefix: str = "b"):
    rng = random.Random(seed)
    t0 = now - days * 86400
    step = days * 86400 / n
    for i in range(n):
        model, dep, p_in, p_out = DEPLOYMENTS[rng.randrange(len(DEPLOYMENTS))]
        tenant, key_id = keys[rng.randrange(len(keys))]
        inp, out = rng.randint(20, 3000), rng.randint(5, 800)
        cost = (Decimal(inp) * Decimal(str(p_in)) + Decimal(out) * Decimal(str(p_out))).scaleb(-6)
        extra = {"policy": "cost"}
        if i % 2:
            extra["route"] = {"strong": model == "llama-3-70b", "predicted_quality": round(rng.random(), 3)}
        yield UsageEvent(id=f"{prefix}{i}", ts=t0 + i * step, tenant=tenant, key_id=key_id, model=model, deployment=dep,
                         input_tokens=inp, cached_input_tokens=0, output_tokens=out, reasoning_tokens=0,
                         cost_usd=cost, price_usd=cost * Decimal("1.25"), energy_joules=0.2 * (inp + out),
                         ttft_ms=rng.uniform(20, 400), latency_ms=rng.uniform(100, 8000),
                         status="ok" if rng.random() > 0.02 else "upstream_error", extra=extra)


def seed(data_dir: Path, n: int, days: float, now: float) -> tuple[Metering, list[tuple[str, str]]]:
    m = Metering.open(data_dir, admin_key=ADMIN, synchronous="OFF")
    keys = []
    for t in range(20):
        for _ in range(2):
            key_id, _secret = m.create_key(f"tenant-{t:02d}")
            keys.append((f"tenant-{t:02d}", key_id))
    batch = []
    done = 0
    for e in _events(n, days, now, keys):
        batch.append(e)
        if len(batch) == 50_000:
            m.ledger.append(batch)
            done += len(batch)
            batch = []
            print(f"  seeded {done:,} events", file=sys.stderr, end="\r")
    if batch:
        m.ledger.append(batch)
    print(file=sys.stderr)
    return m, keys


RAW_SQL = ("SELECT CAST(ts / {step} AS INTEGER) * {step} AS bucket, model, deployment, COUNT(*), SUM(status != 'ok'), "
           "SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens), SUM(reasoning_tokens), "
           "SUM(cost_pusd / 1000000), SUM(cost_pusd % 1000000), SUM(price_pusd / 1000000), SUM(price_pusd % 1000000), "
           "TOTAL(energy_joules) FROM events WHERE ts >= ? AND ts < ?{tenant} GROUP BY 1, 2, 3")


def raw_overview(path: Path, since: float, until: float, step: int, tenant: str | None) -> float:
    """The baseline: the overview's aggregates straight from the events (ms)."""
    with sqlite3.connect(path) as c:
        t = time.perf_counter()
        params: list = [since, until] + ([tenant] if tenant else [])
        c.execute(RAW_SQL.format(step=step, tenant=" AND tenant = ?" if tenant else ""), params).fetchall()
        return (time.perf_counter() - t) * 1000


def _stats(ms: list[float]) -> dict:
    s = sorted(ms)
    return {"median_ms": round(statistics.median(s), 1), "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))], 1)}


async def measure(m: Metering, keys, repeat: int, now: float, days: float) -> dict:
    app = web.Application()
    mount(app, m, config={"min_fold_interval_s": 0.0})
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {ADMIN}"}
    cases = [("30d", None), ("30d", "tenant-03"), ("7d", None), ("24h", None), ("1h", None)]
    results = {}
    async with aiohttp.ClientSession(headers=headers) as http:
        async def get(rng: str, tenant: str | None) -> tuple[float, dict]:
            params = {"range": rng, **({"tenant": tenant} if tenant else {})}
            t = time.perf_counter()
            async with http.get(f"{url}/dashboard/api/overview", params=params) as r:
                body = await r.json()
                assert r.status == 200, body
            return (time.perf_counter() - t) * 1000, body

        await get("24h", None)  # warm-up (opens rollups)
        for rng, tenant in cases:
            ms, body = [], None
            for _ in range(repeat):
                dt, body = await get(rng, tenant)
                ms.append(dt)
            meta = body["meta"]
            raw = [await asyncio.to_thread(raw_overview, m.ledger.path, meta["since"], meta["until"], meta["step_s"], tenant)
                   for _ in range(max(3, repeat // 3))]
            rs, bs = _stats(ms), _stats(raw)
            results[f"{rng}{'/' + tenant if tenant else ''}"] = {
                "requests_in_window": body["totals"]["requests"], "resolution": meta["resolution"],
                "points": len(body["tables"]["series"]), "rollups": rs, "raw_events": bs,
                "speedup": round(bs["median_ms"] / rs["median_ms"], 1)}
        # live: 200 new events land before each request, so every request folds them first
        ms = []
        gen = _events(200 * repeat, 1 / 24, now + 3600, keys, seed=99, prefix="live")
        for i in range(repeat):
            m.ledger.append([next(gen) for _ in range(200)])
            dt, body = await get("30d", None)
            ms.append(dt)
        results["30d live (+200 events per request)"] = {"rollups": _stats(ms)}
    await runner.cleanup()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="tokenomy-dash-bench-") as d:
        t = time.perf_counter()
        m, keys = seed(Path(d), args.events, args.days, now)
        seed_s = time.perf_counter() - t
        r = Rollups(m.ledger.path)
        t = time.perf_counter()
        folded = r.fold()
        fold_s = time.perf_counter() - t
        rows = {res: r.query(f"SELECT COUNT(*) FROM rollup_{res}")[0][0] for res in ("minute", "hour", "day")}
        print(f"  seeded in {seed_s:.1f} s; one-off fold {fold_s:.1f} s; rollup rows {rows}", file=sys.stderr)
        r.close()
        results = asyncio.run(measure(m, keys, args.repeat, now, args.days))
        m.shutdown()
    out = {"events": args.events, "days": args.days, "seed_s": round(seed_s, 1),
           "initial_fold_s": round(fold_s, 1), "fold_events_per_s": round(folded / fold_s), "rollup_rows": rows,
           "cases": results}
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.events:,} events over {args.days:g} days; seeded in {seed_s:.0f} s; "
          f"one-off fold into rollups {fold_s:.1f} s ({folded / fold_s:,.0f} events/s); rollup rows {rows}")
    print(f"{'window':<36}{'requests':>10}{'res':>8}{'rollups p50/p95 ms':>22}{'raw events p50 ms':>20}{'speed-up':>10}")
    for name, c in results.items():
        if "raw_events" in c:
            print(f"{name:<36}{c['requests_in_window']:>10,}{c['resolution']:>8}"
                  f"{c['rollups']['median_ms']:>13.1f} / {c['rollups']['p95_ms']:<7.1f}{c['raw_events']['median_ms']:>19.1f}"
                  f"{c['speedup']:>9.1f}x")
        else:
            print(f"{name:<36}{'':>10}{'':>8}{c['rollups']['median_ms']:>13.1f} / {c['rollups']['p95_ms']:<7.1f}")


if __name__ == "__main__":
    main()
