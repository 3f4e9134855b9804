"""Gateway overhead: added latency and max sustained throughput of `tokenomy up`, metering on.

Three separate processes so the load generator and the upstream do not starve the gateway
(the machine has 2 cores; every figure below includes that contention, the same for every
target):
  * upstream: a minimal OpenAI-compatible aiohttp server answering a fixed small chat
    completion with `usage`, ~0 latency;
  * load generator: open-loop Poisson arrivals at a fixed rate (latency measured from the
    *scheduled* send time, so a slow target cannot hide queueing: no coordinated omission),
    bounded in count and time;
  * target: direct (the upstream itself: the baseline), the tokenomy gateway (`tokenomy up
    --config <generated yaml> --data-dir <tmp>`, a tenant key from `tokenomy keys create`),
    and with --litellm, LiteLLM's proxy against the same upstream, side by side in one run.

Added latency = target quantile - direct quantile at the same offered rate, measured back to
back (alternating short slices, pooled). Max sustained RPS: the highest stepped rate with
< 1% errors and p99 < 500 ms (an open-loop target that cannot keep up queues, so its p99
explodes within seconds).

    .venv/bin/python benchmarks/gateway_overhead.py                # gateway vs direct
    .venv/bin/python benchmarks/gateway_overhead.py --litellm      # + LiteLLM side by side
    .venv/bin/python benchmarks/gateway_overhead.py --no-gateway --litellm   # harness check

LiteLLM lives in its own venv (default ~/.cache/tokenomy/litellm-venv; created with
`pip install 'litellm[proxy]==1.108.7'` when missing, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "bench-model"
LITELLM_VERSION = "1.108.7"
LITELLM_MASTER_KEY = "sk-bench-litellm-master"
ADMIN_KEY = "sk-bench-admin-0123456789"
REQUEST_BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 16,
}
SUSTAINED_ERROR_RATE = 0.01
SUSTAINED_P99_MS = 500.0  # a target that cannot keep up queues: its p99 grows past this within seconds


# --------------------------------------------------------------------------- upstream role

def run_upstream(port: int) -> None:
    """Fixed-answer OpenAI-compatible server. Streams too (with a usage chunk)."""
    import orjson
    from aiohttp import web

    completion = {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello there, how are you?"}}],
        "usage": {"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21},
    }
    body_bytes = orjson.dumps(completion)
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
    stream_bytes = b"".join(
        b"data: " + orjson.dumps(c) + b"\n\n"
        for c in (
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello there,"}}]},
            {**chunk, "choices": [{"index": 0, "delta": {"content": " how are you?"}, "finish_reason": "stop"}]},
            {**chunk, "choices": [], "usage": completion["usage"]},
        )
    ) + b"data: [DONE]\n\n"

    async def chat(request: web.Request) -> web.StreamResponse:
        req = orjson.loads(await request.read())
        if req.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(stream_bytes)
            await resp.write_eof()
            return resp
        return web.Response(body=body_bytes, content_type="application/json")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    _use_uvloop()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -------------------------------------------------------------------------- load generator

@dataclass
class LoadResult:
    target: str
    offered_rps: float
    sent: int
    ok: int
    errors: int
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    error_samples: list[str]
    cpu_ms_per_request: float  # CPU time of the target's processes / answered requests

    @property
    def error_rate(self) -> float:
        return self.errors / self.sent if self.sent else 1.0

    @property
    def sustained(self) -> bool:
        return self.error_rate < SUSTAINED_ERROR_RATE and self.p99_ms < SUSTAINED_P99_MS


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[idx]


async def _load(url: str, key: str, rps: float, count: int, duration_s: float,
                timeout_s: float, seed: int, *, body: bytes | None = None, headers: dict[str, str] | None = None,
                marker: bytes = b'"choices"') -> dict:
    """One open-loop run. `body` / `headers` / `marker` (what a good answer contains): a chat
    request with the key by default; benchmarks/provider_overhead.py sends providers' own."""
    import aiohttp

    rng = random.Random(seed)
    body = json.dumps(REQUEST_BODY).encode() if body is None else body
    if headers is None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies_ms: list[float] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=512, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    # Timestamps from perf_counter, not loop.time(): uvloop's clock is libuv's, in whole
    # milliseconds and frozen for a loop iteration, which blurred every latency by up to 1 ms
    # (plus a per-run offset from truncating `start`): too coarse for sub-millisecond overheads.
    clock = time.perf_counter

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one(scheduled: float) -> None:
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    payload = await resp.read()
                    if resp.status != 200:
                        errors.append(f"HTTP {resp.status}: {payload[:160]!r}")
                        return
                    if marker not in payload:
                        errors.append(f"bad body: {payload[:160]!r}")
                        return
                latencies_ms.append((clock() - scheduled) * 1000.0)
            except Exception as exc:  # noqa: BLE001 - every failure is a counted error
                errors.append(f"{type(exc).__name__}: {exc}"[:160])

        # Open loop: precomputed Poisson schedule; requests go out when due, never gated on
        # earlier responses. Bounded by count and by duration.
        schedule, t = [], 0.0
        while len(schedule) < count:
            t += rng.expovariate(rps)
            if t > duration_s:
                break
            schedule.append(t)
        tasks: list[asyncio.Task] = []
        start = clock()
        i = 0
        while i < len(schedule):
            now = clock() - start
            while i < len(schedule) and schedule[i] <= now:
                tasks.append(asyncio.create_task(one(start + schedule[i])))
                i += 1
            if i < len(schedule):
                await asyncio.sleep(max(0.0, schedule[i] - (clock() - start)))
        if tasks:
            await asyncio.wait(tasks)
        elapsed = clock() - start

    return {"sent": len(schedule), "schedule_s": schedule[-1] if schedule else 0.0, "elapsed_s": elapsed,
            "latencies_ms": [round(x, 4) for x in latencies_ms], "errors": len(errors),
            "error_samples": sorted(set(errors))[:3]}


def merge(target: str, parts: list[dict]) -> LoadResult:
    """Pool the latencies of several short runs of one target into one result."""
    lat = sorted(x for p in parts for x in p["latencies_ms"])
    sent = sum(p["sent"] for p in parts)
    schedule_s = sum(p["schedule_s"] for p in parts)
    elapsed_s = sum(p["elapsed_s"] for p in parts)
    return LoadResult(
        target=target,
        offered_rps=sent / schedule_s if schedule_s > 0 else 0.0,  # the realised Poisson rate
        sent=sent, ok=len(lat), errors=sum(p["errors"] for p in parts),
        achieved_rps=len(lat) / elapsed_s if elapsed_s > 0 else 0.0,
        p50_ms=quantile(lat, 0.50), p90_ms=quantile(lat, 0.90), p99_ms=quantile(lat, 0.99),
        max_ms=lat[-1] if lat else math.nan,
        error_samples=sorted({e for p in parts for e in p["error_samples"]})[:3],
        cpu_ms_per_request=sum(p.get("cpu_s", 0.0) for p in parts) * 1000.0 / len(lat) if lat else math.nan,
    )


def run_loadgen(args: argparse.Namespace) -> None:
    _use_uvloop()
    result = asyncio.run(_load(args.url, args.key, args.rps, args.count, args.duration_s,
                               args.timeout_s, args.seed))
    print(json.dumps(result))


# --------------------------------------------------------------------------- orchestration

def _use_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


NICE = 0  # --nice: niceness increment for every process this script starts (same for all targets)


def _renice() -> None:
    if NICE:
        os.nice(NICE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float,
               headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[:3]} exited ({proc.returncode}); log {log}:\n{_tail(log)}")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} not ready after {timeout_s:.0f} s; log {log}:\n{_tail(log)}")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Procs:
    """Every child process started here; all stopped (by pid) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(log, "wb") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, start_new_session=True,
                                    preexec_fn=_renice)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)  # its own session: includes its workers
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def group_cpu_s(pgid: int | None) -> float:
    """User + system CPU seconds of every live process in a process group (the target and its
    workers). Robust on a shared machine: CPU per request does not depend on what else runs."""
    if pgid is None:
        return 0.0
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


LOADAVG_BEFORE: tuple[float, float, float] | None = None
PGIDS: dict[str, int] = {}  # target -> process group whose CPU is charged to it


def load_part(target: str, url: str, key: str, rps: float, duration_s: float, timeout_s: float,
              seed: int) -> dict:
    count = max(1, int(rps * duration_s * 1.5))
    cmd = [sys.executable, __file__, "--role", "loadgen", "--url", url, "--key", key,
           "--rps", str(rps), "--count", str(count), "--duration-s", str(duration_s),
           "--timeout-s", str(timeout_s), "--seed", str(seed)]
    cpu0 = group_cpu_s(PGIDS.get(target))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 60,
                         preexec_fn=_renice)
    cpu_s = group_cpu_s(PGIDS.get(target)) - cpu0
    if out.returncode != 0:
        raise SystemExit(f"load generator failed:\n{out.stderr[-2000:]}")
    part = json.loads(out.stdout.strip().splitlines()[-1])
    part["cpu_s"] = cpu_s
    OK_RESPONSES[target] = OK_RESPONSES.get(target, 0) + len(part["latencies_ms"])
    return part


def load(target: str, url: str, key: str, rps: float, duration_s: float, timeout_s: float,
         seed: int) -> LoadResult:
    return merge(target, [load_part(target, url, key, rps, duration_s, timeout_s, seed)])


OK_RESPONSES: dict[str, int] = {}  # per target, over the whole run (checked against the ledger)


def gateway_config(upstream_base_url: str) -> dict:
    """A one-deployment tokenomy config (schema: tokenomy.config.GatewayConfig)."""
    return {
        "deployments": [{
            "name": "bench-upstream",
            "base_url": upstream_base_url,
            "model": MODEL,
            "pricing": {"list": {"input": 0.15, "output": 0.60}},
        }],
        "model_groups": {MODEL: {"deployments": ["bench-upstream"]}},
    }


def _gateway_env(src: str | None) -> dict[str, str]:
    env = {"TOKENOMY_ADMIN_KEY": ADMIN_KEY}
    if src:  # run tokenomy from another source tree (e.g. a copy of the previous version)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(src).resolve()), os.environ.get("PYTHONPATH")) if p)
    return env


def start_gateway(procs: Procs, work: Path, upstream_base_url: str, name: str = "tokenomy",
                  src: str | None = None, config: dict | None = None,
                  extra_env: dict[str, str] | None = None) -> tuple[str, str]:
    """Start `tokenomy up` against the upstream (or with `config`); returns (chat URL, tenant key)."""
    import yaml

    tokenomy = str(Path(sys.executable).with_name("tokenomy"))
    data_dir = work / f"{name}-data"
    cfg = work / "tokenomy.yaml"
    cfg.write_text(yaml.safe_dump(config or gateway_config(upstream_base_url), sort_keys=False))
    env = {**_gateway_env(src), **(extra_env or {})}
    created = subprocess.run([tokenomy, "keys", "create", "--tenant", "bench", "--data-dir", str(data_dir), "--json"],
                             capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    if created.returncode != 0:
        raise SystemExit(f"tokenomy keys create failed: {created.stderr.strip()}")
    key = json.loads(created.stdout)["key"]
    port = free_port()
    log = work / f"{name}.log"
    proc = procs.start([tokenomy, "up", "--host", "127.0.0.1", "--port", str(port), "--config", str(cfg),
                        "--data-dir", str(data_dir)], log, env)
    wait_ready(f"http://127.0.0.1:{port}/health", proc, log, 60)
    return f"http://127.0.0.1:{port}/v1/chat/completions", key


def gateway_usage(work: Path, name: str = "tokenomy", src: str | None = None) -> dict | None:
    tokenomy = str(Path(sys.executable).with_name("tokenomy"))
    out = subprocess.run([tokenomy, "usage", "--tenant", "bench", "--data-dir", str(work / f"{name}-data"), "--json"],
                         capture_output=True, text=True, env={**os.environ, **_gateway_env(src)}, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else None


def litellm_venv() -> Path:
    return Path(os.environ.get("TOKENOMY_LITELLM_VENV", Path.home() / ".cache/tokenomy/litellm-venv"))


def ensure_litellm() -> Path:
    venv = litellm_venv()
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"[bench] installing litellm[proxy]=={LITELLM_VERSION} into {venv} (one time)", file=sys.stderr)
    subprocess.run([shutil.which("python3") or "python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    return exe


def start_litellm(procs: Procs, work: Path, upstream_base_url: str) -> tuple[str, str]:
    import yaml

    exe = ensure_litellm()
    cfg = work / "litellm_config.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": upstream_base_url, "api_key": "sk-upstream"}}],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }, sort_keys=False))
    port = free_port()
    log = work / "litellm.log"
    env = {"LITELLM_MASTER_KEY": LITELLM_MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}
    proc = procs.start([str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                        "--num_workers", "1"], log, env)
    wait_ready(f"http://127.0.0.1:{port}/health/liveliness", proc, log, 180)
    return f"http://127.0.0.1:{port}/v1/chat/completions", LITELLM_MASTER_KEY


def fmt(v: float) -> str:
    return "   n/a" if v is None or math.isnan(v) else f"{v:6.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=["bench", "upstream", "loadgen"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--rates", default=None,
                   help="offered RPS levels (comma-separated; default 100,200,500, with --litellm 20,50,100,200,500)")
    p.add_argument("--duration-s", type=float, default=6.0, help="seconds of arrivals per target and rate")
    p.add_argument("--rounds", type=int, default=3, help="alternating slices per target and rate (pooled)")
    p.add_argument("--max-rates", default="200,300,400,500,750,1000,1500,2000",
                   help="stepped rates for the max sustained RPS search ('' to skip)")
    p.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy side by side")
    p.add_argument("--no-gateway", action="store_true", help="skip tokenomy (validate the harness)")
    p.add_argument("--gateway-src", default=None,
                   help="run the 'tokenomy' target from this source tree (a src/ dir) instead of the installed one")
    p.add_argument("--baseline-src", default=None,
                   help="also run a 'baseline' tokenomy target from this source tree (e.g. the previous version: "
                        "mkdir -p /tmp/base && git archive HEAD src | tar -x -C /tmp/base; then /tmp/base/src), "
                        "side by side with alternating slices like every other target")
    p.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness for every process started (e.g. -10 as root on a busy shared machine, "
                        "so other work disturbs the figures less; the same for every target)")
    # role-internal arguments
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--key", default="none", help=argparse.SUPPRESS)
    p.add_argument("--rps", type=float, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--timeout-s", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.role == "upstream":
        return run_upstream(args.port)
    if args.role == "loadgen":
        return run_loadgen(args)
    bench(args)


def bench(args: argparse.Namespace) -> None:
    global NICE
    NICE = args.nice
    rates_arg = args.rates or ("20,50,100,200,500" if args.litellm else "100,200,500")
    rates = [float(r) for r in rates_arg.split(",") if r]
    max_rates = [float(r) for r in args.max_rates.split(",") if r]
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    procs = Procs()
    work = Path(tempfile.mkdtemp(prefix="tokenomy-bench-"))
    t0 = time.monotonic()
    try:
        up_port = free_port()
        up_log = work / "upstream.log"
        up = procs.start([sys.executable, __file__, "--role", "upstream", "--port", str(up_port)], up_log)
        wait_ready(f"http://127.0.0.1:{up_port}/v1/models", up, up_log, 30)
        upstream_base = f"http://127.0.0.1:{up_port}/v1"
        targets: dict[str, tuple[str, str]] = {"direct": (f"{upstream_base}/chat/completions", "none")}
        PGIDS["direct"] = up.pid  # each child runs in its own session: pgid == pid
        if not args.no_gateway:
            targets["tokenomy"] = start_gateway(procs, work, upstream_base, src=args.gateway_src)
            PGIDS["tokenomy"] = procs.procs[-1].pid
        if args.baseline_src:
            targets["baseline"] = start_gateway(procs, work, upstream_base, "baseline", src=args.baseline_src)
            PGIDS["baseline"] = procs.procs[-1].pid
        if args.litellm:
            targets["litellm"] = start_litellm(procs, work, upstream_base)
            PGIDS["litellm"] = procs.procs[-1].pid

        say(f"# gateway overhead on {os.cpu_count()} cores: load generator, upstream and each target run as "
            "separate processes sharing these cores; figures include that contention.")
        global LOADAVG_BEFORE
        LOADAVG_BEFORE = os.getloadavg()
        say("# load average before the run (other work on the machine): "
            + " ".join(f"{x:.2f}" for x in os.getloadavg()) + (f"; bench processes at nice {NICE}" if NICE else ""))
        for name, (url, key) in targets.items():  # warm up connections, caches, JITs
            w = load(name, url, key, 20 if name == "litellm" else 100, 2.0, 10, seed=99)
            if w.errors:
                raise SystemExit(f"{name} warm-up failed: {w.error_samples}")

        results: dict[str, dict[float, LoadResult]] = {name: {} for name in targets}
        saturated: set[str] = set()
        for i, rps in enumerate(rates):
            # Short runs alternating between targets, pooled per target: drift in the load of the
            # (shared) machine hits every target alike instead of whichever ran last.
            parts: dict[str, list[dict]] = {name: [] for name in targets}
            for rnd in range(args.rounds):
                for name, (url, key) in targets.items():
                    if name not in saturated:
                        parts[name].append(load_part(name, url, key, rps, args.duration_s / args.rounds, 10,
                                                     seed=1000 * i + rnd))
            for name in targets:
                if parts[name]:
                    results[name][rps] = r = merge(name, parts[name])
                    if name == "litellm" and not r.sustained:
                        saturated.add(name)  # bounded run: don't pile seconds of backlog on LiteLLM

        say(f"\n{'target':9} {'RPS':>6} {'p50 ms':>7} {'p99 ms':>7} {'+p50 ms':>8} {'+p99 ms':>8} "
            f"{'errors':>7} {'achieved':>8} {'CPU ms/req':>10}")
        summary: dict = {"cores": os.cpu_count(), "duration_s": args.duration_s, "nice": NICE,
                         "loadavg_before": LOADAVG_BEFORE, "rates": {}}
        for rps in rates:
            base = results["direct"].get(rps)
            row: dict = {}
            for name in targets:
                r = results[name].get(rps)
                if r is None:
                    say(f"{name:9} {rps:6.0f}  (skipped: saturated at a lower rate)")
                    row[name] = {"skipped": "saturated at a lower rate"}
                    continue
                added50 = r.p50_ms - base.p50_ms if name != "direct" else 0.0
                added99 = r.p99_ms - base.p99_ms if name != "direct" else 0.0
                say(f"{name:9} {rps:6.0f} {fmt(r.p50_ms):>7} {fmt(r.p99_ms):>7} {fmt(added50):>8} "
                    f"{fmt(added99):>8} {r.error_rate:7.2%} {r.achieved_rps:8.1f} {fmt(r.cpu_ms_per_request):>10}"
                    + ("  (not sustained)" if not r.sustained else ""))
                if r.error_samples:
                    say(f"          errors e.g. {r.error_samples[0]}")
                row[name] = {**asdict(r), "added_p50_ms": added50, "added_p99_ms": added99,
                             "error_rate": r.error_rate, "sustained": r.sustained}
            if "tokenomy" in row and "litellm" in row and "added_p99_ms" in row.get("litellm", {}) \
                    and "added_p99_ms" in row.get("tokenomy", {}):
                # Below 0.1 ms the difference of two p99s is noise: floor it (the ratio is then ">=").
                floor = 0.1
                t99 = row["tokenomy"]["added_p99_ms"]
                ratio = row["litellm"]["added_p99_ms"] / max(t99, floor)
                row["litellm_over_tokenomy_added_p99"] = ratio
                say(f"          LiteLLM added p99 / tokenomy added p99 at {rps:.0f} RPS: "
                    f"{'>= ' if t99 < floor else ''}{ratio:.1f}x"
                    + ("" if row["litellm"]["sustained"] else " (LiteLLM saturated: queueing)"))
            summary["rates"][str(int(rps))] = row
        # CPU per request, pooled over every rate: unlike latency, barely affected by whatever
        # else the shared machine is doing. 1000 / (CPU ms per request) = requests/s per core.
        summary["cpu_ms_per_request"] = {}
        for name in targets:
            ok = sum(r.ok for r in results[name].values())
            cpu_ms = sum(r.cpu_ms_per_request * r.ok for r in results[name].values() if r.ok)
            if ok:
                per = cpu_ms / ok
                summary["cpu_ms_per_request"][name] = per
                what = "upstream" if name == "direct" else name
                say(f"CPU per request ({what} processes): {per:.3f} ms -> at most {1000 / max(per, 1e-6):.0f} RPS per core")
        cpu = summary["cpu_ms_per_request"]
        if "tokenomy" in cpu and "baseline" in cpu:
            summary["baseline_over_tokenomy_cpu"] = cpu["baseline"] / cpu["tokenomy"]
            say(f"baseline CPU per request / tokenomy CPU per request: {cpu['baseline'] / cpu['tokenomy']:.2f}x")
        if "tokenomy" in cpu and "litellm" in cpu:
            summary["litellm_over_tokenomy_cpu"] = cpu["litellm"] / cpu["tokenomy"]
            say(f"LiteLLM CPU per request / tokenomy CPU per request: {cpu['litellm'] / cpu['tokenomy']:.1f}x")
        for name in saturated:
            say(f"note: {name} was not sustainable at some rate (errors >= 1% or p99 >= 500 ms); "
                "higher rates skipped for it")

        if max_rates:
            summary["max_sustained_rps"] = {}
            for name in [n for n in targets if n != "litellm"]:  # LiteLLM: see the table above
                best = 0.0
                url, key = targets[name]
                for j, rps in enumerate(max_rates):
                    r = load(name, url, key, rps, min(args.duration_s, 4.0), 10, seed=100 + j)
                    say(f"max-rps {name:9} {rps:6.0f}: errors {r.error_rate:.2%} achieved {r.achieved_rps:7.1f} "
                        f"p99 {fmt(r.p99_ms)} ms -> {'ok' if r.sustained else 'NOT sustained'}")
                    if not r.sustained:
                        break
                    best = rps
                summary["max_sustained_rps"][name] = best
                say(f"max sustained RPS ({name}): {best:.0f}"
                    + (" (harness ceiling: the load generator/upstream on 2 cores)" if name == "direct" else ""))

        for name in ("tokenomy", "baseline"):
            if name in targets:
                usage = gateway_usage(work, name, args.gateway_src if name == "tokenomy" else args.baseline_src)
                summary[f"{name}_ledger"] = usage
                say(f"metering on ({name}): ledger holds {usage.get('requests') if usage else '?'} requests for "
                    f"tenant 'bench'; the gateway answered {OK_RESPONSES.get(name, 0)} with 200")
        summary["elapsed_s"] = time.monotonic() - t0
        summary["loadavg_after"] = os.getloadavg()
        say(f"elapsed {summary['elapsed_s']:.0f} s"
            + (f"; logs kept in {work}" if os.environ.get("TOKENOMY_BENCH_KEEP") == "1" else ""))
        if args.json:
            print(json.dumps(summary))
    finally:
        procs.stop_all()
        if os.environ.get("TOKENOMY_BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
