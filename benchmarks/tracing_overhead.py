"""Tracing overhead: the gateway's added latency and CPU per request with OpenTelemetry tracing
off, on at sample_ratio 1 % and on at 100 %, side by side in one run (goal: < 0.1 ms p50
added at 1 %).

The harness of benchmarks/gateway_overhead.py (separate upstream, load-generator and gateway
processes; open-loop Poisson arrivals; short alternating slices pooled per target), with
these targets against the same upstream:
  * direct                 the upstream itself (the baseline of "added")
  * off                    `tokenomy up`, no `tracing:`
  * sample 1%              tracing: {endpoint: <collector>, sample_ratio: 0.01}
  * sample 100%            sample_ratio 1.0 (every request: 4 spans, exported)
  * 100% aiohttp           sample_ratio 1.0 with TOKENOMY_GATEWAY_FASTPATH=0: the cost of handing
                           traced requests to aiohttp instead of tracing them on the lean front
The collector is a real OTLP/HTTP receiver process (POST /v1/traces, protobuf decoded with
opentelemetry-proto) that counts the spans it got; the spans exported are checked against the
requests answered.

    .venv/bin/python benchmarks/tracing_overhead.py                  # ~1 min on 2 cores
    .venv/bin/python benchmarks/tracing_overhead.py --rps 300 --duration-s 12 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway_overhead as go  # noqa: E402  (the shared harness)

TARGETS = {  # name -> (tracing sample ratio or None for off, extra environment)
    "off": (None, {}),
    "sample 1%": (0.01, {}),
    "sample 100%": (1.0, {}),
    "100% aiohttp": (1.0, {"TOKENOMY_GATEWAY_FASTPATH": "0"}),
}


def run_collector(port: int) -> None:
    """An OTLP/HTTP trace receiver: counts spans; GET /count answers the total."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                          ExportTraceServiceResponse)

    counts = {"spans": 0, "requests": 0}
    ok = ExportTraceServiceResponse().SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            req = ExportTraceServiceRequest()
            req.ParseFromString(raw)
            counts["requests"] += 1
            counts["spans"] += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(ok)))
            self.end_headers()
            self.wfile.write(ok)

        def do_GET(self):  # noqa: N802
            body = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def start_gateway(procs: go.Procs, work: Path, upstream: str, name: str, ratio: float | None,
                  collector: str, env: dict[str, str]) -> tuple[str, str]:
    import yaml

    tokenomy = str(Path(sys.executable).with_name("tokenomy"))
    slug = name.replace(" ", "-").replace("%", "pct")
    data_dir, cfg, log = work / f"{slug}-data", work / f"{slug}.yaml", work / f"{slug}.log"
    conf = go.gateway_config(upstream)
    if ratio is not None:
        # the default export schedule (a batch every 5 s): an export's fixed cost is part of the figures
        conf["tracing"] = {"endpoint": collector, "sample_ratio": ratio}
    cfg.write_text(yaml.safe_dump(conf, sort_keys=False))
    full_env = {**go._gateway_env(None), **env}
    created = go.subprocess.run([tokenomy, "keys", "create", "--tenant", "bench", "--data-dir", str(data_dir), "--json"],
                                capture_output=True, text=True, env={**os.environ, **full_env}, timeout=60)
    if created.returncode != 0:
        raise SystemExit(f"tokenomy keys create failed: {created.stderr.strip()}")
    port = go.free_port()
    proc = procs.start([tokenomy, "up", "--host", "127.0.0.1", "--port", str(port), "--config", str(cfg),
                        "--data-dir", str(data_dir)], log, full_env)
    go.wait_ready(f"http://127.0.0.1:{port}/health", proc, log, 60)
    go.PGIDS[name] = proc.pid
    return f"http://127.0.0.1:{port}/v1/chat/completions", json.loads(created.stdout)["key"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=["bench", "collector"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--rps", type=float, default=200.0, help="offered requests per second (default 200)")
    p.add_argument("--duration-s", type=float, default=9.0, help="seconds of arrivals per target (default 9)")
    p.add_argument("--rounds", type=int, default=3, help="alternating slices per target (pooled; default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object with every figure on stdout")
    args = p.parse_args()
    if args.role == "collector":
        return run_collector(args.port)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    procs = go.Procs()
    work = Path(tempfile.mkdtemp(prefix="tokenomy-tracing-bench-"))
    try:
        up_port, col_port = go.free_port(), go.free_port()
        up = procs.start([sys.executable, go.__file__, "--role", "upstream", "--port", str(up_port)], work / "up.log")
        go.wait_ready(f"http://127.0.0.1:{up_port}/v1/models", up, work / "up.log", 30)
        col = procs.start([sys.executable, __file__, "--role", "collector", "--port", str(col_port)], work / "col.log")
        collector = f"http://127.0.0.1:{col_port}"
        go.wait_ready(collector + "/count", col, work / "col.log", 30)
        upstream = f"http://127.0.0.1:{up_port}/v1"
        targets = {"direct": (f"{upstream}/chat/completions", "none")}
        go.PGIDS["direct"] = up.pid
        for name, (ratio, env) in TARGETS.items():
            targets[name] = start_gateway(procs, work, upstream, name, ratio, collector, env)
        for name, (url, key) in targets.items():  # warm-up
            w = go.load(name, url, key, 100, 1.5, 10, seed=99)
            if w.errors:
                raise SystemExit(f"{name} warm-up failed: {w.error_samples}")
        spans_before = _spans(collector)
        go.OK_RESPONSES.clear()
        parts: dict[str, list[dict]] = {n: [] for n in targets}
        for rnd in range(args.rounds):  # alternating slices: machine drift hits every target alike
            for name, (url, key) in targets.items():
                parts[name].append(go.load_part(name, url, key, args.rps, args.duration_s / args.rounds, 10,
                                                seed=rnd))
        results = {n: go.merge(n, parts[n]) for n in targets}
        time.sleep(6.0)  # the last export batch (schedule_delay_ms 5000)
        spans = _spans(collector) - spans_before

        base, off = results["direct"], results["off"]
        say(f"# tracing overhead at {args.rps:.0f} RPS offered, {args.duration_s:g} s per target in {args.rounds} "
            f"alternating slices, {os.cpu_count()} cores shared by every process (load average before: "
            + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ")")
        say(f"{'target':13} {'p50 ms':>7} {'p99 ms':>7} {'+p50 ms':>8} {'+p50 vs off':>11} {'+p99 vs off':>11} "
            f"{'CPU ms/req':>10} {'CPU / off':>9} {'errors':>7}")
        summary: dict = {"rps": args.rps, "duration_s": args.duration_s, "targets": {}}
        for name, r in results.items():
            added = r.p50_ms - base.p50_ms
            vs_off50 = r.p50_ms - off.p50_ms
            vs_off99 = r.p99_ms - off.p99_ms
            cpu_ratio = r.cpu_ms_per_request / off.cpu_ms_per_request if name != "direct" else float("nan")
            say(f"{name:13} {go.fmt(r.p50_ms):>7} {go.fmt(r.p99_ms):>7} {go.fmt(added):>8} "
                f"{go.fmt(vs_off50 if name != 'direct' else float('nan')):>11} "
                f"{go.fmt(vs_off99 if name != 'direct' else float('nan')):>11} {go.fmt(r.cpu_ms_per_request):>10} "
                f"{go.fmt(cpu_ratio):>9} {r.error_rate:7.2%}")
            summary["targets"][name] = {"p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "added_p50_ms": added,
                                        "p50_vs_off_ms": vs_off50, "p99_vs_off_ms": vs_off99,
                                        "cpu_ms_per_request": r.cpu_ms_per_request, "cpu_over_off": cpu_ratio,
                                        "ok": r.ok, "errors": r.errors}
        traced_ok = results["sample 100%"].ok + results["100% aiohttp"].ok
        summary["spans_exported"] = spans
        say(f"spans exported since the warm-up: {spans} (4 per traced request: the 100% targets answered "
            f"{traced_ok} -> {4 * traced_ok}, plus ~1% of {results['sample 1%'].ok} and the warm-up's last batch)")
        one = summary["targets"]["sample 1%"]
        say(f"added p50 at 1% vs off: {one['p50_vs_off_ms']:+.3f} ms (goal < 0.1 ms); CPU per request 1%/off "
            f"{one['cpu_over_off']:.3f}x, 100%/off {summary['targets']['sample 100%']['cpu_over_off']:.3f}x, "
            f"100% on aiohttp / 100% on the lean front "
            f"{results['100% aiohttp'].cpu_ms_per_request / results['sample 100%'].cpu_ms_per_request:.2f}x")
        if args.json:
            print(json.dumps(summary))
    finally:
        procs.stop_all()


def _spans(collector: str) -> int:
    with urllib.request.urlopen(collector + "/count", timeout=5) as r:
        return json.loads(r.read())["spans"]


if __name__ == "__main__":
    main()
