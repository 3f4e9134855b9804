"""Gateway replicas on PostgreSQL + Redis: added latency (p50/p99 vs the upstream direct) and
sustained RPS of 1 replica on the default SQLite ledger, 1 replica on PostgreSQL + Redis and
2 replicas on PostgreSQL + Redis (load split evenly, as a round-robin balancer would), in the
same run, alternating short slices so drift in the shared machine's load hits all alike.
With --litellm, LiteLLM's proxy runs side by side as 1 and 2 replicas (separate processes,
the same client-side split) against the same upstream, with Redis for its shared router
state (usage-based-routing-v2: per-deployment RPM/TPM counters in Redis), and the script
reports the ratios litellm-N / pg+redis-N.

Reuses benchmarks/gateway_overhead.py (upstream, open-loop Poisson load generator without
coordinated omission, CPU accounting, LiteLLM venv). Needs the gateway to open metering with
tokenomy.metering.backends.open_metering (env TOKENOMY_LEDGER_URL / TOKENOMY_REDIS_URL).
Checks afterwards that the ledger holds exactly one event per answered request.

    .venv/bin/python benchmarks/gateway_replicas.py [--rates 100,200,400] [--duration-s 6] [--json]
    .venv/bin/python benchmarks/gateway_replicas.py --litellm      # rates 10,25,50,100,200,400

Max sustained RPS (errors < 1%, p99 < 500 ms): the highest rate sustained in the table, then
refined by a ladder (--max-rates) between it and the table's first unsustained rate, stopping
at the first failed step. LiteLLM runs without a database (its Postgres support needs prisma,
which downloads engine binaries at first use): master key only, no spend logs, which favours it.

On a 2-core machine two replicas share the cores with the upstream, the load generator and
PostgreSQL/Redis: expect no throughput gain here; the figures show the cost of shared state.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
import urllib.parse
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
# (LiteLLM target, the tokenomy target with the same topology): the ratios are litellm / tokenomy
PAIRS = (("litellm-1", "pg+redis-1"), ("litellm-2", "pg+redis-2"))
MAX_RATES = "10,15,20,30,40,50,75,100,150,200,250,300,400,500,600,800,1000,1200,1500,2000"
RATIO_FLOOR_MS = 0.1  # an added latency below this is noise: floor the denominator (ratio is then ">=")
# LiteLLM deployment limits: tracked in Redis on every request, far above any rate tested here
LITELLM_RPM = 10_000_000
LITELLM_TPM = 10_000_000_000


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


def litellm_config(upstream_base_url: str, redis_url: str, namespace: str) -> dict:
    """LiteLLM proxy config: one deployment on the bench upstream, router state in Redis.

    usage-based-routing-v2 with RPM/TPM limits on the deployment makes every request
    increment the deployment's counters in Redis (atomic pre-call RPM check, post-call TPM),
    the state LiteLLM shares between proxy instances. Response caching stays off."""
    parsed = urllib.parse.urlparse(redis_url)
    cache_kwargs: dict = {"namespace": namespace}
    db = (parsed.path or "/0").lstrip("/") or "0"
    if db != "0":
        cache_kwargs["db"] = int(db)
    router: dict = {"routing_strategy": "usage-based-routing-v2", "redis_host": parsed.hostname or "127.0.0.1",
                    "redis_port": parsed.port or 6379, "cache_kwargs": cache_kwargs}
    if parsed.password:
        router["redis_password"] = urllib.parse.unquote(parsed.password)
    return {
        "model_list": [{"model_name": go.MODEL, "litellm_params": {
            "model": f"openai/{go.MODEL}", "api_base": upstream_base_url, "api_key": "sk-upstream",
            "rpm": LITELLM_RPM, "tpm": LITELLM_TPM}}],
        "router_settings": router,
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }


def start_litellm_replicas(procs, work: Path, names_n: list[tuple[str, int]], upstream_base_url: str,
                           redis_url: str, namespace: str) -> list[tuple[str, int, object, Path]]:
    """Start every LiteLLM proxy process at once (startup takes tens of seconds each; call
    wait_litellm later). Each replica is its own process (one worker) on its own port."""
    import yaml

    exe = go.ensure_litellm()
    cfg = work / "litellm_config.yaml"
    cfg.write_text(yaml.safe_dump(litellm_config(upstream_base_url, redis_url, namespace), sort_keys=False))
    env = {"LITELLM_MASTER_KEY": go.LITELLM_MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}
    started = []
    for name, n in names_n:
        for i in range(n):
            port = go.free_port()
            log = work / f"{name}-{i}.log"
            proc = procs.start([str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                                "--num_workers", "1"], log, env)
            go.PGIDS[f"{name}#{i}"] = proc.pid
            started.append((name, port, proc, log))
    return started


def wait_litellm(started: list[tuple[str, int, object, Path]]) -> dict[str, list[str]]:
    """Chat URLs per LiteLLM target once every replica answers its liveliness probe."""
    urls: dict[str, list[str]] = {}
    for name, port, proc, log in started:
        go.wait_ready(f"http://127.0.0.1:{port}/health/liveliness", proc, log, 300)
        urls.setdefault(name, []).append(f"http://127.0.0.1:{port}/v1/chat/completions")
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


class RedisCommands:
    """Commands the Redis server processed, charged to the target whose slice was running.
    Every client of this Redis counts (other work on the machine too): `direct` shows that floor."""

    def __init__(self, client) -> None:
        self.client = client
        self.total: dict[str, int] = {}

    def now(self) -> int:
        return int(self.client.info("stats")["total_commands_processed"])

    def run(self, name: str, fn):
        before = self.now()
        out = fn()
        self.total[name] = self.total.get(name, 0) + self.now() - before - 1  # minus this INFO
        return out


def ratio(num: float, den: float, floor: float = RATIO_FLOOR_MS) -> tuple[float, bool]:
    """num / den with den floored (an added latency below `floor` ms is noise); True if floored."""
    if den is None or num is None or math.isnan(num) or math.isnan(den):
        return math.nan, False
    return num / max(den, floor), den < floor


def strict_json(value):
    """NaN (a ratio with nothing to divide) as null: the --json output stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def ladder_steps(max_rates: list[float], table: dict) -> list[float]:
    """Ladder steps worth running: above the highest rate sustained in the table and below its
    first unsustained rate (the table already decided everything outside that gap)."""
    best = max((r for r, res in table.items() if res.sustained), default=0.0)
    first_fail = min((r for r, res in table.items() if not res.sustained), default=math.inf)
    return [r for r in max_rates if best < r < first_fail]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default=None,
                    help="offered RPS levels (default 100,200,400; with --litellm 10,25,50,100,200,400)")
    ap.add_argument("--duration-s", type=float, default=6.0, help="seconds of arrivals per target and rate")
    ap.add_argument("--rounds", type=int, default=3, help="alternating slices per target and rate (pooled)")
    ap.add_argument("--max-rates", default=MAX_RATES,
                    help="ladder of rates refining the max sustained RPS ('' to skip)")
    ap.add_argument("--litellm", action="store_true",
                    help="also run LiteLLM's proxy as 1 and 2 replicas (own venv, see gateway_overhead.py)")
    ap.add_argument("--gateway-src", default=None,
                    help="run tokenomy (replicas and this script's ledger reads) from this source tree (a src/ dir), "
                         "e.g. a snapshot while the working tree is mid-edit: "
                         "mkdir -p /tmp/snap && git archive HEAD src | tar -x -C /tmp/snap; then /tmp/snap/src")
    ap.add_argument("--key-rpm", type=int, default=None,
                    help="requests/min limit on the tokenomy tenant keys, so every request takes from a rate "
                         "bucket (in Redis on pg+redis). Default: none; with --litellm the same limit LiteLLM's "
                         f"deployment gets ({LITELLM_RPM}), far above the load: both sides do the rate-limit work. "
                         "0 = no limit")
    ap.add_argument("--pg-url", default=PG_URL)
    ap.add_argument("--redis-url", default=REDIS_URL)
    ap.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness for every process started (e.g. -10 as root on a busy shared machine; the same "
                         "for every target; PostgreSQL and Redis keep theirs)")
    args = ap.parse_args()
    go.NICE = args.nice  # read by go.Procs.start and go.load_part
    if args.gateway_src:
        sys.path.insert(0, str(Path(args.gateway_src).resolve()))
    import redis
    import sqlalchemy as sa
    import yaml

    from tokenomy.metering import Metering
    from tokenomy.metering.backends import open_metering
    from tokenomy.metering.postgres_ledger import split_url

    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    key_rpm = (LITELLM_RPM if args.litellm else None) if args.key_rpm is None else (args.key_rpm or None)
    rates = [float(r) for r in (args.rates or ("10,25,50,100,200,400" if args.litellm else "100,200,400")).split(",")
             if r]
    max_rates = [float(r) for r in args.max_rates.split(",") if r]
    schema = f"tk_bench_{uuid.uuid4().hex[:8]}"
    pg = f"{args.pg_url}{'&' if '?' in args.pg_url else '?'}schema={schema}"
    prefix = f"tkbench:{uuid.uuid4().hex[:8]}:"
    litellm_ns = f"tkbench-litellm-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="tokenomy-replicas-"))
    procs = go.Procs()
    shared = None
    rclient = redis.Redis.from_url(args.redis_url)
    t0 = time.monotonic()
    try:
        up_port = go.free_port()
        up_log = work / "upstream.log"
        up = procs.start([sys.executable, str(HERE / "gateway_overhead.py"), "--role", "upstream", "--port",
                          str(up_port)], up_log)
        go.wait_ready(f"http://127.0.0.1:{up_port}/v1/models", up, up_log, 30)
        go.PGIDS["direct"] = up.pid
        upstream = f"http://127.0.0.1:{up_port}/v1"
        litellm_started = []
        if args.litellm:  # slow to start: first, so the tokenomy replicas start meanwhile
            say("# starting LiteLLM proxies (1 + 2 processes; tens of seconds each) ...")
            litellm_started = start_litellm_replicas(procs, work, [("litellm-1", 1), ("litellm-2", 2)], upstream,
                                                     args.redis_url, litellm_ns)
        cfg = work / "tokenomy.yaml"
        cfg.write_text(yaml.safe_dump(go.gateway_config(upstream), sort_keys=False))
        base_env = go._gateway_env(args.gateway_src)  # admin key (+ PYTHONPATH with --gateway-src)
        pg_env = {**base_env, "TOKENOMY_LEDGER_URL": pg, "TOKENOMY_REDIS_URL": args.redis_url,
                  "TOKENOMY_REDIS_PREFIX": prefix}
        local = Metering.open(work / "sqlite-1-0", admin_key=go.ADMIN_KEY)
        _, sqlite_key = local.create_key("bench", rpm=key_rpm)
        local.shutdown()
        shared = open_metering(work / "observer", ledger_url=pg, redis_url=args.redis_url, redis_prefix=prefix,
                               admin_key=go.ADMIN_KEY)
        _, pg_key = shared.create_key("bench", rpm=key_rpm)
        targets = {"direct": ([f"{upstream}/chat/completions"], "none"),
                   "sqlite-1": (start_replicas(procs, work, "sqlite-1", 1, cfg, base_env), sqlite_key),
                   "pg+redis-1": (start_replicas(procs, work, "pg+redis-1", 1, cfg, pg_env), pg_key),
                   "pg+redis-2": (start_replicas(procs, work, "pg+redis-2", 2, cfg, pg_env), pg_key)}
        for name, urls in wait_litellm(litellm_started).items():  # url i is replica name#i (PGIDS), as for tokenomy
            targets[name] = (urls, go.LITELLM_MASTER_KEY)
        loadavg = os.getloadavg()
        say(f"# {os.cpu_count()} cores shared by upstream, load generators, replicas, PostgreSQL and Redis; "
            f"load average before: {' '.join(f'{x:.2f}' for x in loadavg)}; tokenomy keys: "
            + (f"rpm limit {key_rpm}" if key_rpm else "no rate limit"))
        rc = RedisCommands(rclient)
        for name, (urls, key) in targets.items():  # warm-up (and: the key must authenticate)
            slow = name.startswith("litellm")
            w = go.merge(name, slice_parts(name, urls, key, 10 if slow else 50, 3.0 if slow else 2.0, 99))
            if w.errors:
                raise SystemExit(f"{name} warm-up failed: {w.error_samples} "
                                 "(pg targets: is the gateway opening metering with open_metering?)")
        results: dict[str, dict[float, object]] = {name: {} for name in targets}
        saturated: set[str] = set()
        for i, rps in enumerate(rates):
            parts: dict[str, list[dict]] = {name: [] for name in targets}
            for rnd in range(args.rounds):
                for name, (urls, key) in targets.items():
                    if name in saturated:
                        continue
                    parts[name] += rc.run(name, lambda: slice_parts(name, urls, key, rps,
                                                                    args.duration_s / args.rounds, 1000 * i + rnd))
            for name in targets:
                if parts[name]:
                    results[name][rps] = r = go.merge(name, parts[name])
                    if name.startswith("litellm") and not r.sustained:
                        saturated.add(name)  # bounded run: don't pile seconds of backlog on LiteLLM
        summary: dict = {"cores": os.cpu_count(), "loadavg_before": loadavg, "duration_s": args.duration_s,
                         "gateway_src": args.gateway_src, "nice": args.nice, "tokenomy_key_rpm": key_rpm,
                         "rounds": args.rounds, "rates": {}}
        if args.litellm:
            summary["litellm"] = {"version": go.LITELLM_VERSION, "config": litellm_config(upstream, args.redis_url,
                                                                                          litellm_ns),
                                  "database": "none (LiteLLM's Postgres support needs prisma: not run)"}
        say(f"\n{'target':11} {'RPS':>5} {'p50 ms':>7} {'p99 ms':>7} {'+p50 ms':>8} {'+p99 ms':>8} {'errors':>7} "
            f"{'achieved':>8} {'CPU ms/req':>10}")
        for rps in rates:
            base = results["direct"][rps]
            row: dict = {}
            for name in targets:
                r = results[name].get(rps)
                if r is None:
                    say(f"{name:11} {rps:5.0f}  (skipped: not sustained at a lower rate)")
                    row[name] = {"skipped": "not sustained at a lower rate"}
                    continue
                a50, a99 = r.p50_ms - base.p50_ms, r.p99_ms - base.p99_ms
                say(f"{name:11} {rps:5.0f} {go.fmt(r.p50_ms):>7} {go.fmt(r.p99_ms):>7} {go.fmt(a50):>8} "
                    f"{go.fmt(a99):>8} {r.error_rate:7.2%} {r.achieved_rps:8.1f} {go.fmt(r.cpu_ms_per_request):>10}"
                    + ("" if r.sustained else "  (not sustained)"))
                if r.error_samples:
                    say(f"{'':11} errors e.g. {r.error_samples[0]}")
                row[name] = {"p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "added_p50_ms": a50, "added_p99_ms": a99,
                             "error_rate": r.error_rate, "achieved_rps": r.achieved_rps, "ok": r.ok,
                             "cpu_ms_per_request": r.cpu_ms_per_request, "sustained": r.sustained}
            ratios = {}
            for lite, tok in PAIRS:
                if "added_p50_ms" not in row.get(lite, {}) or "added_p50_ms" not in row.get(tok, {}):
                    continue
                r50, f50 = ratio(row[lite]["added_p50_ms"], row[tok]["added_p50_ms"])
                r99, f99 = ratio(row[lite]["added_p99_ms"], row[tok]["added_p99_ms"])
                ratios[f"{lite}/{tok}"] = {"added_p50": r50, "added_p50_floored": f50,
                                           "added_p99": r99, "added_p99_floored": f99,
                                           "litellm_sustained": row[lite]["sustained"]}
                say(f"{'':11} {lite} / {tok} at {rps:.0f} RPS: added p50 {'>= ' if f50 else ''}{r50:.1f}x, "
                    f"added p99 {'>= ' if f99 else ''}{r99:.1f}x"
                    + ("" if row[lite]["sustained"] else f" ({lite} not sustained: queueing)"))
            if ratios:
                row["litellm_over_tokenomy"] = ratios
            summary["rates"][str(int(rps))] = row

        # CPU per request pooled over every rate: the figure least disturbed by other work.
        cpu: dict[str, float] = {}
        for name in targets:
            ok = sum(r.ok for r in results[name].values())
            if ok:
                cpu[name] = sum(r.cpu_ms_per_request * r.ok for r in results[name].values() if r.ok) / ok
        summary["cpu_ms_per_request"] = cpu
        say("\nCPU ms per request (pooled; the target's processes): "
            + ", ".join(f"{n} {v:.3f}" for n, v in cpu.items()))
        ok_total = {name: sum(r.ok for r in results[name].values()) for name in targets}
        redis_per_req = {n: rc.total.get(n, 0) / ok_total[n] for n in targets if ok_total[n]}
        summary["redis_commands_per_request"] = redis_per_req
        say("Redis commands per answered request (whole server, incl. those run inside Lua scripts and other "
            "clients; direct = that floor): "
            + ", ".join(f"{n} {v:.2f}" for n, v in redis_per_req.items()))

        sustained = {name: max([rps for rps, r in results[name].items() if r.sustained], default=0.0)
                     for name in targets}
        summary["max_sustained_rps_tested"] = dict(sustained)
        best = dict(sustained)
        if max_rates:
            for j, (name, (urls, key)) in enumerate(targets.items()):
                for k, rps in enumerate(ladder_steps(max_rates, results[name])):
                    r = go.merge(name, slice_parts(name, urls, key, rps, min(args.duration_s, 4.0),
                                                   500 + 50 * j + k))
                    say(f"max-rps {name:11} {rps:6.0f}: errors {r.error_rate:.2%} achieved {r.achieved_rps:7.1f} "
                        f"p99 {go.fmt(r.p99_ms)} ms -> {'ok' if r.sustained else 'NOT sustained'}")
                    if not r.sustained:
                        break
                    best[name] = rps
        summary["max_sustained_rps"] = best
        top = max([*rates, *max_rates])
        summary["max_sustained_rps_at_top"] = [n for n, v in best.items() if v >= top]  # a lower bound only
        say("max sustained RPS (errors < 1%, p99 < 500 ms): "
            + ", ".join(f"{n} {'>= ' if v >= top else ''}{v:.0f}" for n, v in best.items())
            + "  (direct = the harness ceiling)")
        for a, b in (("pg+redis-2", "pg+redis-1"), ("litellm-2", "litellm-1")):
            if a in best and best.get(b):
                summary.setdefault("two_over_one_replica_max_rps", {})[f"{a}/{b}"] = best[a] / best[b]
                say(f"max RPS {a} / {b}: {best[a] / best[b]:.2f}x")
        if args.litellm:
            overall = {}
            for lite, tok in PAIRS:
                entry = {"max_rps": best[lite] / best[tok] if best.get(tok) else math.nan,
                         "cpu_ms_per_request": cpu[lite] / cpu[tok] if cpu.get(lite) and cpu.get(tok) else math.nan}
                overall[f"{lite}/{tok}"] = entry
                say(f"{lite} / {tok}: max sustained RPS {entry['max_rps']:.3f}x, "
                    f"CPU per request {entry['cpu_ms_per_request']:.1f}x")
            summary["litellm_over_tokenomy"] = overall

        ok_pg = sum(v for k, v in go.OK_RESPONSES.items() if k.startswith("pg+redis"))
        deadline = time.monotonic() + 30
        while shared.usage("bench")["requests"] < ok_pg and time.monotonic() < deadline:
            time.sleep(0.2)
        recorded = shared.usage("bench")["requests"]
        summary["pg_ok_responses"], summary["pg_events"] = ok_pg, recorded
        say(f"exactly once: {ok_pg} answered requests on the pg replicas, {recorded} events in PostgreSQL")
        summary["elapsed_s"] = time.monotonic() - t0
        summary["loadavg_after"] = os.getloadavg()
        say(f"elapsed {summary['elapsed_s']:.0f} s; load average after: "
            + " ".join(f"{x:.2f}" for x in summary["loadavg_after"])
            + (f"; logs kept in {work}" if os.environ.get("TOKENOMY_BENCH_KEEP") == "1" else ""))
        if args.json:
            print(json.dumps(strict_json(summary), allow_nan=False))
    finally:
        procs.stop_all()
        if shared is not None:
            shared.shutdown()
        engine = sa.create_engine(split_url(args.pg_url)[0])
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
        for pattern in (prefix + "*", litellm_ns + ":*"):
            for k in rclient.scan_iter(match=pattern):
                rclient.delete(k)
        rclient.close()
        if os.environ.get("TOKENOMY_BENCH_KEEP") != "1":
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
