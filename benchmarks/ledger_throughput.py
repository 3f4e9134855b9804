"""Ledger throughput: group commit vs one commit per event, side by side in the same run.

For each concurrency level, C asyncio tasks commit N events in total through
`Metering.commit` (durable on return, synchronous=FULL by default):
  - group:    the default writer (all pending events in one transaction, up to 512)
  - baseline: the same writer with max_batch=1 (one transaction + fsync per event)
Reports events/s, the speed-up, commit latency p50/p99 and the mean batch size.

    .venv/bin/python benchmarks/ledger_throughput.py [--events 2000] [--concurrency 1,16,64] [--synchronous FULL] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from tokenomy.metering import Metering, UsageEvent


def _event(i: int) -> UsageEvent:
    return UsageEvent(
        id=f"bench-{i}", ts=time.time(), tenant="bench", key_id="k", model="llama-3-8b", deployment="h100",
        input_tokens=512, cached_input_tokens=0, output_tokens=128, reasoning_tokens=0,
        cost_usd=Decimal("0.0000123"), price_usd=Decimal("0.0000456"), energy_joules=42.0, ttft_ms=25.0,
        latency_ms=900.0, status="ok", extra={"policy": "cost"})


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(events: int, concurrency: int, max_batch: int, synchronous: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="tokenomy-bench-", dir=Path.cwd()) as d:
        m = Metering.open(Path(d), admin_key="bench", synchronous=synchronous, max_batch=max_batch)
        await m.start()
        latencies: list[float] = []
        counter = iter(range(events))

        async def worker() -> None:
            for i in counter:
                t0 = time.perf_counter()
                await m.commit(_event(i))
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        batches = m._writer.batches
        assert m.usage(None)["requests"] == events
        await m.close()
    return {
        "events_per_s": events / elapsed,
        "p50_ms": _pct(latencies, 0.50) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
        "mean_batch": events / batches,
        "seconds": elapsed,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for c in (int(x) for x in args.concurrency.split(",")):
        group = await run(args.events, c, 512, args.synchronous)
        base = await run(args.events, c, 1, args.synchronous)
        rows.append({"concurrency": c, "group": group, "baseline": base,
                     "speedup": group["events_per_s"] / base["events_per_s"]})
    if args.json:
        print(json.dumps({"events": args.events, "synchronous": args.synchronous, "rows": rows}))
        return
    print(f"{args.events} events per run, synchronous={args.synchronous}, data dir under {Path.cwd()}")
    print(f"{'conc':>4} | {'group ev/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'batch':>6} | "
          f"{'1/commit ev/s':>13} {'p50 ms':>7} {'p99 ms':>7} | speed-up")
    for r in rows:
        g, b = r["group"], r["baseline"]
        print(f"{r['concurrency']:>4} | {g['events_per_s']:>10.0f} {g['p50_ms']:>7.2f} {g['p99_ms']:>7.2f} "
              f"{g['mean_batch']:>6.1f} | {b['events_per_s']:>13.0f} {b['p50_ms']:>7.2f} {b['p99_ms']:>7.2f} | "
              f"{r['speedup']:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
