"""Prefix caching on Kimi's production Mooncake conversation trace: routing policies side by side.

For R replicas (default 4 and 8) the trace (rate scaled to load the fleet) is simulated with the
shared engine model (tokenomy.engine: prefix cache of 512-token hashed blocks, LRU eviction)
under round-robin, least-loaded and prefix-affinity routing, and once as ONE shared cache of
the same total size: a pooled engine with R x the KV capacity and R x the compute (step time
/ R) serving the whole trace (the same requests in flight, the same KV, the same compute; only
the cache is shared). Prints the prompt-token hit
share, TTFT p50/p99 and $/Mtok per policy, and the goal ratios:
    prefix-affinity / round-robin hit share >= 2, prefix-affinity / shared cache >= 0.85.

    nice -n 10 .venv/bin/python benchmarks/prefix_cache.py [--trace PATH|mooncake] [--replicas 4,8]
        [--rate-scale 0.5] [--model llama-3-8b] [--accelerator h200] [--json]

The full trace (12,031 requests) is read from ../shared/data/traces/mooncake/ when present (an
optional benchmark input); otherwise the shipped 3,000-request slice.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from tokenomy.engine.scheduler import SchedulerConfig
from tokenomy.fleet.deployment import make_deployment
from tokenomy.fleet.metrics import summarize
from tokenomy.fleet.simulator import simulate
from tokenomy.fleet.workload import load_trace, scale_rate

FULL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "traces" / "mooncake" / "conversation_trace.jsonl"
POLICIES = ("round-robin", "least-loaded", "prefix-affinity")


class Pooled:
    """R replicas as one engine: R x the KV, R x the compute (a step of R x the work takes the time
    of one replica's share of it), so only the sharing of the cache differs from the fleet."""

    def __init__(self, inner, r: int) -> None:
        self.inner, self.r = inner, r
        self.max_kv_tokens = r * int(inner.max_kv_tokens)
        self.idle_watts = r * inner.idle_watts

    def step_seconds(self, **kw) -> float:
        return self.inner.step_seconds(**_share(kw, self.r))

    def step_watts(self, **kw) -> float:
        return self.r * self.inner.step_watts(**_share(kw, self.r))


def _share(kw: dict, r: int) -> dict:
    out = dict(kw)
    for k in ("prefill_tokens", "decode_seqs", "kv_tokens", "prefill_context", "prefill_seqs"):
        if k in out:
            out[k] = -(-int(out[k]) // r) if k in ("decode_seqs", "prefill_seqs") else int(out[k]) // r
    return out


def _row(res, dep) -> dict:
    s = summarize(res, replica_usd_per_hour=dep.usd_per_hour)
    return {"hit_share": s["prefix_cache_hit_share"], "ttft_p50_ms": s["ttft_ms"]["p50"],
            "ttft_p99_ms": s["ttft_ms"]["p99"], "usd_per_mtok": s["usd_per_mtok"], "busy_share": s["busy_share"],
            "affinity_routed_share": s["affinity_routed_share"], "preemptions": s["preemptions"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=str(FULL) if FULL.is_file() else "mooncake")
    ap.add_argument("--replicas", default="4,8")
    ap.add_argument("--rate-scale", type=float, default=None,
                    help="arrival-rate multiplier (default: R/8, i.e. the full rate on 8 replicas)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--accelerator", default="h200")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    trace = load_trace(a.trace)
    if a.limit:
        from tokenomy.fleet.workload import head

        trace = head(trace, a.limit)
    dep = make_deployment(a.model, a.accelerator)
    cfg = SchedulerConfig()
    report = {"trace": trace.summary(), "deployment": dep.label, "max_kv_tokens": int(dep.step_model.max_kv_tokens),
              "runs": []}
    for R in [int(x) for x in a.replicas.split(",")]:
        scale = a.rate_scale if a.rate_scale is not None else R / 8
        tr = scale_rate(trace, scale)
        run = {"replicas": R, "rate_scale": scale, "rate_per_s": round(tr.rate_per_s, 3)}
        t0 = time.perf_counter()
        for lb in POLICIES:
            run[lb] = _row(simulate(tr, dep.step_model, replicas=R, config=replace(cfg, lb=lb)), dep)
        shared_sm = Pooled(dep.step_model, R)
        run["shared-cache"] = _row(simulate(tr, shared_sm, replicas=1,
                                            config=replace(cfg, max_num_seqs=R * cfg.max_num_seqs,
                                                           max_batched_tokens=R * cfg.max_batched_tokens)), dep)
        run["seconds"] = round(time.perf_counter() - t0, 2)
        pa, rr, sh = run["prefix-affinity"]["hit_share"], run["round-robin"]["hit_share"], run["shared-cache"]["hit_share"]
        run["affinity_over_round_robin"] = round(pa / rr, 3) if rr else None
        run["affinity_over_shared"] = round(pa / sh, 3) if sh else None
        report["runs"].append(run)
    if a.json:
        print(json.dumps(report))
        return
    print(f"trace {report['trace']['name']}: {report['trace']['requests']} requests, {dep.label}, "
          f"KV {report['max_kv_tokens']:,} tokens/replica")
    for run in report["runs"]:
        print(f"\n{run['replicas']} replicas, rate x{run['rate_scale']:g} ({run['rate_per_s']} req/s), "
              f"{run['seconds']} s")
        print(f"  {'policy':16s} {'hit share':>9s} {'TTFT p50':>10s} {'TTFT p99':>10s} {'$/Mtok':>8s} {'busy':>6s}")
        for lb in POLICIES:
            r = run[lb]
            print(f"  {lb:16s} {r['hit_share']:9.1%} {r['ttft_p50_ms']:8.0f}ms {r['ttft_p99_ms']:8.0f}ms "
                  f"{r['usd_per_mtok']:8.4f} {r['busy_share']:6.1%}")
        print(f"  {'shared-cache':16s} {run['shared-cache']['hit_share']:9.1%}   (reference for the hit share only: "
              "one pooled engine)")
        ok1 = (run["affinity_over_round_robin"] or 0) >= 2.0
        ok2 = (run["affinity_over_shared"] or 0) >= 0.85
        print(f"  prefix-affinity / round-robin hit share = {run['affinity_over_round_robin']}x (goal >= 2): "
              f"{'OK' if ok1 else 'MISSED'}")
        print(f"  prefix-affinity / one shared cache     = {run['affinity_over_shared']} (goal >= 0.85): "
              f"{'OK' if ok2 else 'MISSED'}")


if __name__ == "__main__":
    main()
