"""Provider adapters' overhead: for each provider (openai, azure, anthropic, gemini, vertex,
bedrock) the latency `tokenomy up` adds over calling that provider's server directly, and the
gateway's CPU per request, with ratios against the OpenAI-compatible path, side by side in one run.

  * upstream (its own process): the local servers of tests/providers/fakes.py, each speaking one
    provider's wire format (Anthropic Messages, Gemini / Vertex generateContent + an OAuth2
    token endpoint, Bedrock Converse with its SigV4 check), plus an OpenAI / Azure OpenAI
    chat server; every one answers a fixed short completion. The fakes validate each request
    against the provider's published schema (the SDKs' types, botocore's service model);
    that costs 10-60 ms, so here a distinct body is validated once and the verdict reused
    (the bodies of a run are identical).
  * gateway: `tokenomy up` with one deployment per provider, one model group per provider.
  * load (this process): open-loop Poisson arrivals (benchmarks/gateway_overhead.py `_load`),
    alternating short slices: direct (the provider's own request, built once by the same
    adapter) and through the gateway (an OpenAI chat request), per provider, pooled.

Added latency = gateway quantile - direct quantile of the same provider; its ratio and the CPU
ratio are against the openai row (the passthrough path). Unary requests only.

    .venv/bin/python benchmarks/provider_overhead.py               # ~50 s
    .venv/bin/python benchmarks/provider_overhead.py --rps 100 --rounds 4 --duration-s 2 --json
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROVIDERS = ("openai", "azure", "anthropic", "gemini", "vertex", "bedrock")
TEXT = "Hello there, how are you?"
CHAT = {"messages": [{"role": "user", "content": "Say hello in five words."}], "max_tokens": 16}
BEDROCK_MODEL = "anthropic.claude-sonnet-4-6-v1:0"
# a good direct answer contains this (per provider wire format)
MARKERS = {"openai": b'"choices"', "azure": b'"choices"', "anthropic": b'"content"', "gemini": b'"candidates"',
           "vertex": b'"candidates"', "bedrock": b'"output"'}
ENV = {"BENCH_AZ_KEY": "az-key", "BENCH_ANTHROPIC_KEY": "sk-ant-bench", "BENCH_GEMINI_KEY": "AIza-bench",
       "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_CONFIG_FILE": "/nonexistent",
       "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def _house():
    """benchmarks/gateway_overhead.py: processes, readiness, CPU accounting, the load generator."""
    spec = importlib.util.spec_from_file_location("gateway_overhead", Path(__file__).with_name("gateway_overhead.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gateway_overhead"] = mod  # dataclasses look their module up while it loads
    spec.loader.exec_module(mod)
    return mod


go = _house()


# --------------------------------------------------------------------------- upstream role
def _memo(check):
    """A fake's schema check, run once per distinct request (the verdict reused after)."""
    import orjson

    seen: dict[bytes, object] = {}

    def wrapped(*args):
        key = orjson.dumps([a if isinstance(a, (dict, str, bool)) else repr(a) for a in args])
        if key not in seen:
            seen[key] = check(*args)
        return seen[key]
    return wrapped


def run_upstream(ports_file: Path) -> None:
    sys.path.insert(0, str(REPO))
    import orjson
    from aiohttp import web

    from tests.providers import fakes

    for name in ("check_typed", "check_gemini", "check_converse"):
        setattr(fakes, name, _memo(getattr(fakes, name)))
    anthropic, gemini, bedrock = fakes.FakeAnthropic(), fakes.FakeGemini(), fakes.FakeBedrock()
    anthropic.script = [(200, fakes.anthropic_message([{"type": "text", "text": TEXT}]))]
    gemini.script = [(200, fakes.gemini_response([{"text": TEXT}], usage={
        "promptTokenCount": 14, "candidatesTokenCount": 7, "totalTokenCount": 21}))]
    bedrock.script = [(200, fakes.converse_response([{"text": TEXT}]))]
    completion = orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": TEXT}}],
        "usage": {"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21}})

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=completion, content_type="application/json")

    openai = web.Application()
    openai.router.add_post("/v1/chat/completions", chat)
    openai.router.add_post("/openai/deployments/{dep}/chat/completions", chat)
    apps = {"openai": openai, "anthropic": anthropic.app, "gemini": gemini.app, "bedrock": bedrock.app}

    async def serve() -> None:
        ports = {}
        for fake in (anthropic, gemini, bedrock):  # keep no history: the run is long
            fake.requests = _Forget()
        for name, app in apps.items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            ports[name] = site._server.sockets[0].getsockname()[1]
        ports_file.write_text(json.dumps(ports))
        await asyncio.Event().wait()

    go._use_uvloop()
    asyncio.run(serve())


class _Forget(list):
    """A fake's request log that keeps only the count (the fakes index their script by it)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def append(self, _item) -> None:  # noqa: D401
        self.n += 1

    def __len__(self) -> int:
        return self.n


# --------------------------------------------------------------------------- setup
def _service_account(work: Path, token_url: str) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = work / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "project_id": "bench", "private_key_id": "k1",
                                "private_key": pem, "client_email": "gw@bench.iam.gserviceaccount.com",
                                "client_id": "1", "token_uri": token_url}))
    return path


def deployments(ports: dict[str, int]) -> dict[str, dict]:
    """One tokenomy deployment per provider (schema: tokenomy.config.Deployment)."""
    url = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    per = {
        "openai": {"base_url": url["openai"] + "/v1", "model": "bench-model"},
        "azure": {"provider": "azure", "base_url": url["openai"], "api_key_env": "BENCH_AZ_KEY", "model": "my-gpt",
                  "api_version": "2024-10-21"},
        "anthropic": {"provider": "anthropic", "base_url": url["anthropic"], "api_key_env": "BENCH_ANTHROPIC_KEY",
                      "model": "claude-sonnet-4-6"},
        "gemini": {"provider": "gemini", "base_url": url["gemini"], "api_key_env": "BENCH_GEMINI_KEY",
                   "model": "gemini-2.5-flash"},
        "vertex": {"provider": "vertex", "base_url": url["gemini"], "model": "gemini-2.5-flash", "project": "bench",
                   "region": "europe-west4"},
        "bedrock": {"provider": "bedrock", "base_url": url["bedrock"], "model": BEDROCK_MODEL, "region": "eu-west-1"},
    }
    return {p: {"name": f"{p}-bench", "pricing": {"list": {"input": 1.0, "output": 2.0}}, **d} for p, d in per.items()}


def direct_requests(deps: dict[str, dict]) -> dict[str, tuple[str, dict[str, str], bytes]]:
    """Each provider's own request for CHAT, built once by its adapter (url, headers, body)."""
    sys.path.insert(0, str(REPO))
    from tests.providers.fakes import Runtime
    from tokenomy.config import Deployment
    from tokenomy.gateway.providers import adapter_for

    out = {}
    for p, d in deps.items():
        cfg = Deployment(**d)
        ad = adapter_for(cfg)
        if ad.needs_prepare:
            asyncio.run(ad.prepare())  # Vertex: a token from the fake's OAuth2 endpoint
        req = ad.build_request({"model": p, **CHAT}, Runtime(cfg, cfg.base_url), stream=False)
        headers = dict(req.headers)
        if p == "openai":
            headers["Content-Type"] = "application/json"
        out[p] = (req.url, headers, req.body)
    return out


# --------------------------------------------------------------------------- measuring
def _slice(url: str, headers: dict[str, str], body: bytes, marker: bytes, args, seed: int,
           pgid: int | None) -> dict:
    cpu0 = go.group_cpu_s(pgid)
    part = asyncio.run(go._load(url, "", args.rps, int(args.rps * args.duration_s * 1.5) + 1, args.duration_s,
                                10.0, seed, body=body, headers=headers, marker=marker))
    part["cpu_s"] = go.group_cpu_s(pgid) - cpu0
    return part


def bench(args) -> dict:
    import urllib.request

    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    procs = go.Procs()
    work = Path(tempfile.mkdtemp(prefix="tokenomy-provider-bench-"))
    try:
        ports_file = work / "ports.json"
        up = procs.start([sys.executable, __file__, "--role", "upstream", "--ports-file", str(ports_file)],
                         work / "upstream.log")
        deadline = time.monotonic() + 60
        while not ports_file.exists():
            if up.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"upstream did not start; log:\n{go._tail(work / 'upstream.log')}")
            time.sleep(0.1)
        ports = json.loads(ports_file.read_text())
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(
            _service_account(work, f"http://127.0.0.1:{ports['gemini']}/token"))
        deps = deployments(ports)
        config = {"deployments": list(deps.values()),
                  "model_groups": {p: {"deployments": [d["name"]]} for p, d in deps.items()}}
        env = {**ENV, "GOOGLE_APPLICATION_CREDENTIALS": os.environ["GOOGLE_APPLICATION_CREDENTIALS"]}
        gw_url, key = go.start_gateway(procs, work, "", config=config, extra_env=env)
        pgid = procs.procs[-1].pid  # `tokenomy up` leads its own session (go.Procs)
        direct = direct_requests(deps)
        gw_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        gw_bodies = {p: json.dumps({"model": p, **CHAT}).encode() for p in PROVIDERS}
        for p in PROVIDERS:  # warm-up (connections, the fakes' one validation, Vertex token) and a check
            for url, headers, body, marker in ((*direct[p], MARKERS[p]), (gw_url, gw_headers, gw_bodies[p], b'"choices"')):
                req = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=30) as r:
                    got = r.read()
                if marker not in got:
                    raise SystemExit(f"{p}: unexpected answer from {url}: {got[:300]!r}")
        parts: dict[tuple[str, str], list[dict]] = {}
        seed = 0
        for rnd in range(args.rounds):
            for p in PROVIDERS:
                order = ("direct", "gateway") if rnd % 2 == 0 else ("gateway", "direct")
                for target in order:
                    seed += 1
                    if target == "direct":
                        part = _slice(*direct[p], MARKERS[p], args, seed, None)
                    else:
                        part = _slice(gw_url, gw_headers, gw_bodies[p], b'"choices"', args, seed, pgid)
                    parts.setdefault((p, target), []).append(part)
        results = {k: go.merge(f"{k[0]}:{k[1]}", v) for k, v in parts.items()}
        usage = go.gateway_usage(work)
    finally:
        procs.stop_all()
    return _report(results, usage)


def _report(results: dict, usage: dict | None) -> dict:
    rows = {}
    for p in PROVIDERS:
        d, g = results[(p, "direct")], results[(p, "gateway")]
        rows[p] = {"direct_p50_ms": d.p50_ms, "direct_p99_ms": d.p99_ms, "gateway_p50_ms": g.p50_ms,
                   "gateway_p99_ms": g.p99_ms, "added_p50_ms": g.p50_ms - d.p50_ms, "added_p99_ms": g.p99_ms - d.p99_ms,
                   "gateway_cpu_ms_per_request": g.cpu_ms_per_request, "ok": g.ok, "errors": d.errors + g.errors,
                   "error_samples": d.error_samples + g.error_samples, "offered_rps": g.offered_rps}
    base = rows["openai"]
    for r in rows.values():
        r["added_p50_vs_openai"] = r["added_p50_ms"] / base["added_p50_ms"] if base["added_p50_ms"] > 0 else None
        r["added_p99_vs_openai"] = r["added_p99_ms"] / base["added_p99_ms"] if base["added_p99_ms"] > 0 else None
        r["cpu_vs_openai"] = r["gateway_cpu_ms_per_request"] / base["gateway_cpu_ms_per_request"]
    served = sum(r["ok"] for r in rows.values())
    return {"providers": rows, "ledger_requests": (usage or {}).get("requests"), "gateway_ok": served}


def _print(out: dict, args) -> None:
    print(f"provider overhead: {args.rps:g} rps open loop, {args.rounds} x {args.duration_s:g} s slices per target, "
          f"unary, 2 shared cores (load, gateway and fakes compete)")
    hdr = (f"{'provider':<10} {'direct p50/p99 ms':>18} {'gateway p50/p99 ms':>19} {'added p50/p99 ms':>17} "
           f"{'added vs openai':>16} {'CPU ms/req':>10} {'CPU vs openai':>13} {'err':>4}")
    print(hdr)

    def ratio(x):
        return "-" if x is None else f"{x:.2f}x"
    for p, r in out["providers"].items():
        print(f"{p:<10} {r['direct_p50_ms']:>8.2f}/{r['direct_p99_ms']:<9.2f} {r['gateway_p50_ms']:>8.2f}/"
              f"{r['gateway_p99_ms']:<10.2f} {r['added_p50_ms']:>7.2f}/{r['added_p99_ms']:<9.2f} "
              f"{ratio(r['added_p50_vs_openai']):>7}/{ratio(r['added_p99_vs_openai']):<8} "
              f"{r['gateway_cpu_ms_per_request']:>10.2f} {r['cpu_vs_openai']:>12.2f}x {r['errors']:>4}")
        for e in r["error_samples"]:
            print(f"    error: {e}")
    ok = out["ledger_requests"] == out["gateway_ok"] + len(PROVIDERS)  # + the warm-up requests
    print(f"ledger: {out['ledger_requests']} requests recorded for {out['gateway_ok']} measured + {len(PROVIDERS)} "
          f"warm-up answers ({'match' if ok else 'MISMATCH'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=["bench", "upstream"], default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--ports-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--rps", type=float, default=60.0, help="offered rate per slice (open loop)")
    ap.add_argument("--duration-s", type=float, default=1.2, help="seconds of arrivals per slice")
    ap.add_argument("--rounds", type=int, default=2, help="alternating slices per provider and target (pooled)")
    ap.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    args = ap.parse_args()
    if args.role == "upstream":
        run_upstream(args.ports_file)
        return
    out = bench(args)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print(out, args)


if __name__ == "__main__":
    main()
