"""Gateway replicas on PostgreSQL + Redis: added latency (p50/p99 vs the upstream direct) and
sustained RPS of 1 replica on the default SQLite ledger, 1 replica on PostgreSQL + Redis and
2 replicas on PostgreSQL + Redis (load split evenly, as a round-robin balancer would), in the
same run, alternating short slices so drift in the shared machine's load hits all alike.

Reuses benchmarks/gateway_overhead.py (upstream, open-loop Poisson load generator without
coordinated omission, CPU accounting). Needs the gateway to open metering with
tokenomy.metering.backends.open_metering (env TOKENOMY_LEDGER_URL / TOKENOMY_REDIS_URL).
Checks afterwards that the ledger holds exactly one event per answered request.

    .venv/bin/python benchmarks/gateway_replicas.py [--rates 100,200,400] [--duration-s 6] [--json]

On a 2-core machine two replicas share the cores with the upstream, the load generator and
PostgreSQL/Redis: expect no throughput gain here; the figures show the cost of shared state.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("gateway_overhead", HERE / "gateway_overhead.py")
go = importlib.util.module_from_spec(_spec)
sys.modules["gateway_overhead"] = go
_spec.loader.exec_module(go)

PG_URL = os.environ.get("TOKENOMY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TOKENOMY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def start_replicas(procs, work: Path, name: str, n: int, cfg: Path, env: dict) -> list[str]:
    tokenomy = str(Path(sys.executable).with_name("tokenomy"))
    urls = []
    for i in range(n):
        port = go.free_port()
        log = work / f"{name}-{i}.log"
        proc = procs.start([tokenomy, "up", "--host", "127.0.0.1", "--port", str(port), "--config", str(cfg),
                            "--data-dir", str(work / f"{name}-{i}")], log, env)
        go.wait_ready(f"http://127.0.0.1:{port}/health", proc, log, 90)
        go.PGIDS[f"{name}#{i}"] = proc.pid
        urls.append(f"http://127.0.0.1:{port}/v1/chat/completions")
    return urls


def slice_parts(name: str, urls: list[str], key: str, rps: float, duration_s: float, seed: int) -> list[dict]:
    """One slice of load split evenly over the replicas (one load generator each, in parallel)."""
    with ThreadPoolExecutor(len(urls)) as pool:
        futures = [pool.submit(go.load_part, f"{name}#{i}" if name != "direct" else name, url, key,
                               rps / len(urls), duration_s, 10, seed * 10 + i) for i, url in enumerate(urls)]
        parts = [f.result() for f in futures]
    for part in parts:  # the parts ran side by side: one slice of wall time, not len(urls)
        part["elapsed_s"] /= len(urls)
        part["schedule_s"] /= len(urls)
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="100,200,400")
    ap.add_argument("--duration-s", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pg-url", default=PG_URL)
    ap.add_argument("--redis-url", default=REDIS_URL)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import redis
    import sqlalchemy as sa
    import yaml

    from tokenomy.metering import Metering
    from tokenomy.metering.backends import open_metering
    from tokenomy.metering.postgres_ledger import split_url

    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    rates = [float(r) for r in args.rates.split(",") if r]
    schema = f"tk_bench_{uuid.uuid4().hex[:8]}"
    pg = f"{args.pg_url}{'&' if '?' in args.pg_url else '?'}schema={schema}"
    prefix = f"tkbench:{uuid.uuid4().hex[:8]}:"
    work = Path(tempfile.mkdtemp(prefix="tokenomy-replicas-"))
    procs = go.Procs()
    shared = None
    try:
        up_port = go.free_port()
        up_log = work / "upstream.log"
        up = procs.start([sys.executable, str(HERE / "gateway_overhead.py"), "--role", "upstream", "--port",
                          str(up_port)], up_log)
        go.wait_ready(f"http://127.0.0.1:{up_port}/v1/models", up, up_log, 30)
        go.PGIDS["direct"] = up.pid
        upstream = f"http://127.0.0.1:{up_port}/v1"
        cfg = work / "tokenomy.yaml"
        cfg.write_text(yaml.safe_dump(go.gateway_config(upstream), sort_keys=False))
        base_env = {"TOKENOMY_ADMIN_KEY": go.ADMIN_KEY}
        pg_env = {**base_env, "TOKENOMY_LEDGER_URL": pg, "TOKENOMY_REDIS_URL": args.redis_url,
                  "TOKENOMY_REDIS_PREFIX": prefix}
        local = Metering.open(work / "sqlite-1-0", admin_key=go.ADMIN_KEY)
        _, sqlite_key = local.create_key("bench")
        local.shutdown()
        shared = open_metering(work / "observer", ledger_url=pg, redis_url=args.redis_url, redis_prefix=prefix,
                               admin_key=go.ADMIN_KEY)
        _, pg_key = shared.create_key("bench")
        targets = {"direct": ([f"{upstream}/chat/completions"], "none"),
                   "sqlite-1": (start_replicas(procs, work, "sqlite-1", 1, cfg, base_env), sqlite_key),
                   "pg+redis-1": (start_replicas(procs, work, "pg+redis-1", 1, cfg, pg_env), pg_key),
                   "pg+redis-2": (start_replicas(procs, work, "pg+redis-2", 2, cfg, pg_env), pg_key)}
        loadavg = os.getloadavg()
        say(f"# {os.cpu_count()} cores shared by upstream, load generators, replicas, PostgreSQL and Redis; "
            f"load average before: {' '.join(f'{x:.2f}' for x in loadavg)}")
        for name, (urls, key) in targets.items():  # warm-up (and: the key must authenticate)
            w = go.merge(name, slice_parts(name, urls, key, 50, 2.0, 99))
            if w.errors:
                raise SystemExit(f"{name} warm-up failed: {w.error_samples} "
                                 "(pg targets: is the gateway opening metering with open_metering?)")
        results: dict[str, dict[float, object]] = {name: {} for name in targets}
        for i, rps in enumerate(rates):
            parts: dict[str, list[dict]] = {name: [] for name in targets}
            for rnd in range(args.rounds):
                for name, (urls, key) in targets.items():
                    parts[name] += slice_parts(name, urls, key, rps, args.duration_s / args.rounds, 1000 * i + rnd)
            for name in targets:
                results[name][rps] = go.merge(name, parts[name])
        summary = {"cores": os.cpu_count(), "loadavg_before": loadavg, "rates": {}}
        say(f"\n{'target':11} {'RPS':>5} {'p50 ms':>7} {'p99 ms':>7} {'+p50 ms':>8} {'+p99 ms':>8} {'errors':>7} "
            f"{'achieved':>8} {'CPU ms/req':>10}")
        for rps in rates:
            base = results["direct"][rps]
            row = {}
            for name in targets:
                r = results[name][rps]
                a50, a99 = r.p50_ms - base.p50_ms, r.p99_ms - base.p99_ms
                say(f"{name:11} {rps:5.0f} {go.fmt(r.p50_ms):>7} {go.fmt(r.p99_ms):>7} {go.fmt(a50):>8} "
                    f"{go.fmt(a99):>8} {r.error_rate:7.2%} {r.achieved_rps:8.1f} {go.fmt(r.cpu_ms_per_request):>10}"
                    + ("" if r.sustained else "  (not sustained)"))
                row[name] = {"p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "added_p50_ms": a50, "added_p99_ms": a99,
                             "error_rate": r.error_rate, "achieved_rps": r.achieved_rps,
                             "cpu_ms_per_request": r.cpu_ms_per_request, "sustained": r.sustained}
            summary["rates"][str(int(rps))] = row
        sustained = {name: max([rps for rps in rates if results[name][rps].sustained], default=0.0)
                     for name in targets}
        summary["max_sustained_rps_tested"] = sustained
        say("highest sustained rate tested (errors < 1%, p99 < 500 ms): "
            + ", ".join(f"{n} {v:.0f}" for n, v in sustained.items()))
        ok_pg = sum(v for k, v in go.OK_RESPONSES.items() if k.startswith("pg+redis"))
        deadline = time.monotonic() + 30
        while shared.usage("bench")["requests"] < ok_pg and time.monotonic() < deadline:
            time.sleep(0.2)
        recorded = shared.usage("bench")["requests"]
        summary["pg_ok_responses"], summary["pg_events"] = ok_pg, recorded
        say(f"exactly once: {ok_pg} answered requests on the pg replicas, {recorded} events in PostgreSQL")
        if args.json:
            print(json.dumps(summary))
    finally:
        procs.stop_all()
        if shared is not None:
            shared.shutdown()
        engine = sa.create_engine(split_url(args.pg_url)[0])
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
        client = redis.Redis.from_url(args.redis_url)
        for k in client.scan_iter(match=prefix + "*"):
            client.delete(k)
        client.close()


if __name__ == "__main__":
    main()
