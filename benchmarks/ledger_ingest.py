"""Ledger ingest: events/s sustained into SQLite and into PostgreSQL, durability on, batched
(group commit) vs one commit per event (baseline), in the same run.

Durability: SQLite WAL with synchronous=FULL (fsync per commit); PostgreSQL with
synchronous_commit=on (the server's fsync setting is printed - if it is off, the server
itself is not durable and the PostgreSQL figure is optimistic).

Three ways for each store:
  per-event   ledger.append([e])                 one transaction per event (the baseline)
  batched     ledger.append(batch of --batch)    what the writer thread does under load
  metering    Metering.commit() x --concurrency  the real path: asyncio callers, group commit

    .venv/bin/python benchmarks/ledger_ingest.py [--events 60000] [--pg-url postgresql://...] [--json]

Before/after in one run: --baseline-ledger FILE loads another version of postgres_ledger.py
(e.g. `git show HEAD~1:src/tokenomy/metering/postgres_ledger.py > /tmp/old_pg.py`, run against
this tree's migrations) and measures it first, side by side, in a schema of its own:

    .venv/bin/python benchmarks/ledger_ingest.py --events 30000 --batch 1024 --baseline-ledger /tmp/old_pg.py
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from tokenomy.metering import Metering, UsageEvent

PG_URL = os.environ.get("TOKENOMY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def events(n: int, tag: str, t0: float) -> list[UsageEvent]:
    return [UsageEvent(id=f"{tag}-{i}", ts=t0 + i * 0.001, tenant=f"t{i % 10}", key_id=f"k{i % 50}",
                       model=("llama-3-8b", "llama-3-70b", "gpt-4o-mini")[i % 3], deployment=f"d{i % 4}",
                       input_tokens=500 + i % 300, cached_input_tokens=i % 64, output_tokens=120 + i % 50,
                       reasoning_tokens=0, cost_usd=Decimal("0.0000375"), price_usd=Decimal("0.00012"),
                       energy_joules=3.2, ttft_ms=40.0, latency_ms=900.0, status="ok",
                       extra={"route": "cheapest", "deployment": f"d{i % 4}"}) for i in range(n)]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (here: the PostgreSQL backend serving us)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_event(ledger, evs) -> float:
    start = time.perf_counter()
    for e in evs:
        ledger.append([e])
    return len(evs) / (time.perf_counter() - start)


def batched(ledger, evs, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(evs), batch):
        ledger.append(evs[i:i + batch])
    return len(evs) / (time.perf_counter() - start)


def through_metering(m: Metering, evs, concurrency: int) -> float:
    async def run() -> float:
        queue = iter(evs)

        async def worker():
            for e in queue:
                await m.commit(e)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        return len(evs) / elapsed

    return asyncio.run(run())


def bench_sqlite(args, t0) -> dict:
    from tokenomy.metering.sqlite_ledger import SqliteLedger

    with tempfile.TemporaryDirectory() as d:
        ledger = SqliteLedger.open(Path(d) / "a", synchronous="FULL")
        base = per_event(ledger, events(args.baseline_events, "s1", t0))
        fast = batched(ledger, events(args.events, "s2", t0), args.batch)
        count = ledger.count_event("s2-0")
        ledger.close()
        m = Metering.open(Path(d) / "b", admin_key="bench", synchronous="FULL", max_batch=args.batch)
        real = through_metering(m, events(args.events, "s3", t0), args.concurrency)
        assert m.usage(None)["requests"] == args.events
        m.shutdown()
    assert count == 1
    return {"per_event": base, "batched": fast, "metering": real, "durability": "WAL synchronous=FULL"}


def load_ledger_class(path: str | None):
    """PostgresLedger of this tree, or of another version's postgres_ledger.py (with this tree's migrations)."""
    from tokenomy.metering import postgres_ledger

    if path is None:
        return postgres_ledger.PostgresLedger
    spec = importlib.util.spec_from_file_location("baseline_postgres_ledger", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.MIGRATIONS_DIR = postgres_ledger.MIGRATIONS_DIR
    return module.PostgresLedger


def bench_postgres(args, t0, ledger_cls=None, *, metering: bool = True) -> dict:
    import sqlalchemy as sa

    from tokenomy.metering.backends import open_metering
    from tokenomy.metering.postgres_ledger import PostgresLedger, split_url

    ledger_cls = ledger_cls or PostgresLedger
    schema = f"tk_bench_{uuid.uuid4().hex[:8]}"
    url = f"{args.pg_url}{'&' if '?' in args.pg_url else '?'}schema={schema}"
    ledger = ledger_cls.open(url)
    tag = uuid.uuid4().hex[:6]
    try:
        with ledger.engine.connect() as conn:
            fsync = conn.exec_driver_sql("SHOW fsync").scalar()
            sync_commit = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
        base = per_event(ledger, events(args.baseline_events, f"p1{tag}", t0))
        evs = events(args.events, f"p2{tag}", t0)
        ledger.ensure_partitions([e.ts for e in evs])
        with ledger.engine.connect() as conn:  # the pool hands this same connection to append
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        server0, client0 = proc_cpu_s(backend), time.process_time()
        fast = batched(ledger, evs, args.batch)
        server_s, client_s = proc_cpu_s(backend) - server0, time.process_time() - client0
        real = None
        if metering:
            with tempfile.TemporaryDirectory() as d:
                m = open_metering(d, ledger_url=url, admin_key="bench", max_batch=args.batch)
                real = through_metering(m, events(args.events, f"p3{tag}", t0), args.concurrency)
                assert m.usage(None)["requests"] == args.events * 2 + args.baseline_events
                m.shutdown()
        assert ledger.count_event(f"p2{tag}-0") == 1
    finally:
        ledger.close()
        engine = sa.create_engine(split_url(args.pg_url)[0])
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
    return {"per_event": base, "batched": fast, "metering": real,
            "cpu_us_per_event": {"client": client_s / args.events * 1e6, "server": server_s / args.events * 1e6},
            "durability": f"synchronous_commit={sync_commit}, server fsync={fsync}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=60_000, help="events per batched / metering run")
    ap.add_argument("--baseline-events", type=int, default=1_000, help="events in the per-event baseline")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--concurrency", type=int, default=2_000, help="concurrent Metering.commit callers")
    ap.add_argument("--pg-url", default=PG_URL)
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--baseline-ledger", metavar="FILE",
                    help="another version's postgres_ledger.py, measured first in the same run (before/after)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    out = {"events": args.events, "baseline_events": args.baseline_events, "batch": args.batch,
           "sqlite": bench_sqlite(args, t0)}
    if not args.skip_postgres:
        if args.baseline_ledger:  # the Metering path always runs this tree's ledger: baseline skips it
            out["postgres_baseline"] = bench_postgres(args, t0, load_ledger_class(args.baseline_ledger),
                                                      metering=False)
        out["postgres"] = bench_postgres(args, t0)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"ledger ingest, events/s (durability on; {args.events} events batched by {args.batch}, "
          f"{args.baseline_events} one per commit)")
    print(f"{'store':18} {'per-event':>10} {'batched':>10} {'x':>6} {'Metering':>10} {'x':>6}  durability")
    for store in ("sqlite", "postgres_baseline", "postgres"):
        if store not in out:
            continue
        r = out[store]
        real = "-" if r["metering"] is None else f"{r['metering']:,.0f}"
        real_x = "-" if r["metering"] is None else f"{r['metering'] / r['per_event']:.1f}"
        print(f"{store:18} {r['per_event']:10,.0f} {r['batched']:10,.0f} {r['batched'] / r['per_event']:6.1f} "
              f"{real:>10} {real_x:>6}  {r['durability']}")
    if "postgres_baseline" in out:
        print(f"postgres batched after/before: {out['postgres']['batched'] / out['postgres_baseline']['batched']:.2f}x"
              f" (baseline: {args.baseline_ledger})")
    for store in ("postgres_baseline", "postgres"):
        if store not in out:
            continue
        cpu = out[store]["cpu_us_per_event"]
        total = cpu["client"] + cpu["server"]
        print(f"{store} batched CPU per event: client {cpu['client']:.1f} us + server backend {cpu['server']:.1f} us "
              f"= {total:.1f} us -> {1e6 / total:,.0f} events/s per core of CPU (independent of other load; "
              f"load average now {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
