"""Speed of the fleet simulator: the whole splitwise_conv trace (19,366 requests) on 4 replicas.

Prints simulated requests per second next to a baseline run in the same process: a no-op
discrete-event loop (heapq) over the same arrivals and completions, i.e. the floor cost of any
Python event simulator touching each request twice. Target: the full trace in <= 20 s.

    .venv/bin/python benchmarks/simulator_speed.py [--replicas 4] [--model llama-3-8b] [--accelerator h100]
"""

from __future__ import annotations

import argparse
import heapq
import time

from tokenomy.catalog import load_catalog
from tokenomy.fleet.deployment import make_deployment
from tokenomy.fleet.simulator import SchedulerConfig, simulate
from tokenomy.fleet.workload import load_trace


def noop_event_loop(arrivals: list[float], durations: list[float]) -> int:
    """Baseline: push every arrival, pop it, push its completion, pop that. Returns events."""
    heap = [(t, 0, i) for i, t in enumerate(arrivals)]
    heapq.heapify(heap)
    events = 0
    while heap:
        t, kind, i = heapq.heappop(heap)
        events += 1
        if kind == 0:
            heapq.heappush(heap, (t + durations[i], 1, i))
    return events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default="conv")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--accelerator", default="h100")
    ap.add_argument("--lb", default="least-loaded")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    trace = load_trace(args.trace)
    dep = make_deployment(args.model, args.accelerator, catalog=load_catalog())
    arrivals = trace.arrived_at.tolist()
    durations = (trace.output_tokens * 0.01).tolist()

    sim_times, base_times = [], []
    result = None
    for _ in range(args.repeat):
        t = time.perf_counter()
        noop_event_loop(arrivals, durations)
        base_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        result = simulate(trace, dep.step_model, replicas=args.replicas, config=SchedulerConfig(lb=args.lb))
        sim_times.append(time.perf_counter() - t)
    n = len(trace)
    sim, base = min(sim_times), min(base_times)
    print(f"trace {trace.name}: {n} requests, {args.replicas} x {dep.label}, lb={args.lb}, best of {args.repeat}")
    print(f"simulator : {sim:8.3f} s  {n / sim:12,.0f} requests/s  "
          f"({int(result.steps.sum()):,} engine steps, {int(result.steps.sum()) / sim:,.0f} steps/s)")
    print(f"baseline  : {base:8.3f} s  {n / base:12,.0f} requests/s  (no-op heapq event loop)")
    print(f"ratio     : simulator is {sim / base:.1f}x the no-op loop's time; "
          f"full trace in {sim:.2f} s (target <= 20 s): {'OK' if sim <= 20 else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
