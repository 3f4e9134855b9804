"""Prefix caching through the REAL gateway: a Mooncake slice replayed against 4 emulated replicas.

Each request of the shipped Mooncake conversation slice gets a prompt BUILT TO MATCH ITS HASHES:
hash id h becomes a fixed 512-word text block (one word = one token for the emulator's
tokenizer), so two requests share a prefix of k blocks exactly when their first k hash ids are
equal. The prompts go (as /v1/completions, arrivals replayed at the trace's times x
--time-scale) through the gateway (lean front + aiohttp, in-process) to 4 emulators
(llama-3.1-8b on h100, prefix cache with 512-token blocks, the emulator's engine = the
simulator's). The gateway routes with `weighted` (equal weights: uniform random, the
gateway's cache-oblivious spread) or `prefix-affinity`. The hit share (sum of
usage.prompt_tokens_details.cached_tokens / prompt tokens) is compared with `simulate` on the
same requests with round-robin and prefix-affinity (same engine config: reserve KV, no
watermark, as the emulator). Goal: the same ordering, hit shares within 10 %.

    nice -n 10 .venv/bin/python benchmarks/prefix_gateway.py [--requests 200] [--time-scale 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import string
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import numpy as np
import orjson

from tokenomy.engine.scheduler import SchedulerConfig
from tokenomy.fleet.deployment import make_deployment
from tokenomy.fleet.simulator import simulate
from tokenomy.fleet.workload import head, load_trace

MODEL, ACC = "llama-3.1-8b", "h100"
BLOCK = 512


def _word(n: int) -> str:
    letters = string.ascii_lowercase
    s = ""
    while True:
        n, r = divmod(n, 26)
        s = letters[r] + s
        if n == 0:
            break
    return "x" + s  # letters only: one regex piece (= one token) with its leading space


def build_prompt(hash_ids: tuple[int, ...], input_tokens: int) -> str:
    words: list[str] = []
    for i, h in enumerate(hash_ids):
        k = min(BLOCK, input_tokens - BLOCK * i)
        if k <= 0:
            break
        words += [_word(h * BLOCK + j) for j in range(k)]
    words += [_word(10**9 + j) for j in range(max(0, input_tokens - len(words)))]
    return " ".join(words)


async def replay(policy: str, tr, time_scale: float) -> dict:
    from tokenomy.config import parse_config
    from tokenomy.emulator import EmulatorConfig, serve_emulators
    from tokenomy.gateway.app import build_app
    from tokenomy.metering import Metering

    sys_path = Path(__file__).resolve().parents[1] / "tests" / "gateway"
    import sys

    sys.path.insert(0, str(sys_path))
    from gw_helpers import serve_gateway  # the lean front, as `tokenomy up` serves

    cfgs = [EmulatorConfig(model=MODEL, accelerator=ACC, time_scale=time_scale, kv_block_tokens=BLOCK,
                           max_body_bytes=64 << 20, served_model_name=f"r{i}") for i in range(4)]
    async with serve_emulators(cfgs) as urls:
        group: dict = {"deployments": [f"r{i}" for i in range(4)], "policy": policy}
        if policy == "weighted":
            group["weights"] = {f"r{i}": 1.0 for i in range(4)}
        cfg = parse_config({
            "server": {"max_body_bytes": 64 << 20},
            "timeouts": {"total_s": 600, "first_byte_s": 600},
            "deployments": [{"name": f"r{i}", "base_url": u, "model": f"r{i}",
                             "pricing": {"list": {"input": 0.1, "output": 0.4, "cached_input": 0.01}}}
                            for i, u in enumerate(urls)],
            "model_groups": {"m": group}}, "<bench>")
        with tempfile.TemporaryDirectory() as d:
            metering = Metering.open(Path(d), admin_key="sk-admin-bench", synchronous="OFF")
            key = metering.create_key("bench")[1]
            async with serve_gateway(build_app(cfg, metering)) as (gw_url, _):
                prompts = [build_prompt(h, int(p)) for h, p in zip(tr.hashes, tr.prompt_tokens)]
                t0 = time.perf_counter()
                base = tr.arrived_at[0]
                results: list[tuple[int, int, str, str] | None] = [None] * len(tr)
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as s:
                    async def one(i: int) -> None:
                        delay = (tr.arrived_at[i] - base) * time_scale - (time.perf_counter() - t0)
                        if delay > 0:
                            await asyncio.sleep(delay)
                        body = {"model": "m", "prompt": prompts[i], "max_tokens": int(tr.output_tokens[i])}
                        async with s.post(f"{gw_url}/v1/completions", data=orjson.dumps(body),
                                          headers={"Authorization": f"Bearer {key}",
                                                   "Content-Type": "application/json"}) as r:
                            data = orjson.loads(await r.read())
                            if r.status != 200:
                                raise RuntimeError(f"request {i}: HTTP {r.status}: {data}")
                            u = data["usage"]
                            results[i] = (u["prompt_tokens"], (u.get("prompt_tokens_details") or {}).get(
                                "cached_tokens", 0), r.headers.get("x-tokenomy-deployment", ""),
                                r.headers.get("x-tokenomy-prefix-affinity", ""))
                    await asyncio.gather(*(one(i) for i in range(len(tr))))
                wall = time.perf_counter() - t0
            await metering.close()
    prompt = sum(r[0] for r in results)
    cached = sum(r[1] for r in results)
    routed = sum(1 for r in results if r[3].startswith("routed"))
    return {"hit_share": cached / prompt, "wall_s": wall, "replicas_used": len({r[2] for r in results}),
            "affinity_routed": routed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--time-scale", type=float, default=0.2, help="wall seconds per model second")
    a = ap.parse_args()
    tr = head(load_trace("mooncake"), a.requests)
    dep = make_deployment(MODEL, ACC)
    cfg = SchedulerConfig(kv_policy="reserve", kv_watermark=0.0)
    sim = {lb: simulate(tr, dep.step_model, replicas=4, config=replace(cfg, lb=lb)).prefix_cache_hit_share
           for lb in ("round-robin", "prefix-affinity")}
    gw = {p: asyncio.run(replay(p, tr, a.time_scale)) for p in ("weighted", "prefix-affinity")}
    print(f"{len(tr)} Mooncake requests ({tr.duration_seconds:.0f} s of trace, mean prompt "
          f"{tr.prompt_tokens.mean():,.0f} tokens), 4 x {MODEL}@{ACC}, time scale {a.time_scale}")
    print(f"  {'':34s} {'hit share':>9s}")
    print(f"  simulator round-robin              {sim['round-robin']:9.1%}")
    print(f"  simulator prefix-affinity          {sim['prefix-affinity']:9.1%}")
    for p, label in (("weighted", "gateway weighted (uniform random)"), ("prefix-affinity", "gateway prefix-affinity")):
        g = gw[p]
        print(f"  {label:34s} {g['hit_share']:9.1%}   ({g['wall_s']:.1f} s wall, {g['replicas_used']} replicas, "
              f"{g['affinity_routed']} routed for affinity)")
    same_order = (gw["prefix-affinity"]["hit_share"] > gw["weighted"]["hit_share"]) and (
        sim["prefix-affinity"] > sim["round-robin"])
    rel = abs(gw["prefix-affinity"]["hit_share"] - sim["prefix-affinity"]) / max(sim["prefix-affinity"], 1e-9)
    rel_rr = abs(gw["weighted"]["hit_share"] - sim["round-robin"]) / max(sim["round-robin"], 1e-9)
    print(f"  same ordering: {'OK' if same_order else 'MISSED'}; prefix-affinity hit share gateway vs simulator: "
          f"{rel:.1%} apart, spread baseline {rel_rr:.1%} apart (goal <= 10 %)")


if __name__ == "__main__":
    main()
