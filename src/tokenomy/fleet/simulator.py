"""Discrete-event simulation of replicas of one deployment in virtual time.

Each replica is the shared engine model (`tokenomy.engine`: continuous batching with chunked
prefill, a KV block manager with a prefix cache, the perf model's step time), the same one
the emulator drives in real time, so a plan and a digital twin cannot disagree. This module
only routes arrivals to replicas and advances their clocks:
- "least-loaded": fewest outstanding requests at the arrival (a step that crosses the arrival
  finishes its requests after it);
- "round-robin";
- "prefix-affinity": the replica believed to hold the longest leading run of the prompt's
  blocks, under a bounded load (`tokenomy.engine.affinity`, the gateway's policy).

Requests whose prompt + output exceed the KV capacity can never run: they are rejected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tokenomy.engine.affinity import PrefixAffinityRouter
from tokenomy.engine.predictor import StepModelLike, StepPredictor
from tokenomy.engine.request import RequestTable
from tokenomy.engine.scheduler import ReplicaScheduler, SchedulerConfig
from tokenomy.errors import TokenomyError
from tokenomy.fleet.workload import Trace

__all__ = ["SchedulerConfig", "SimResult", "StepModelLike", "simulate"]


@dataclass
class SimResult:
    """Per-request times (seconds; NaN where undefined) and per-replica totals."""

    arrived_at: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    first_token_at: np.ndarray  # NaN: rejected
    finished_at: np.ndarray  # NaN: rejected
    finish_count: np.ndarray  # times each request finished (conservation: all 1, or 0 if rejected)
    replica: np.ndarray  # replica index per request
    rejected: np.ndarray  # bool: could never fit in the KV cache
    busy_seconds: np.ndarray  # per replica
    idle_seconds: np.ndarray
    energy_joules: np.ndarray  # per replica, busy + idle
    peak_kv_tokens: np.ndarray
    max_kv_tokens: int
    steps: np.ndarray
    preemptions: int
    queue_at_arrival: np.ndarray  # requests waiting (not admitted) on the chosen replica at each arrival
    start_seconds: float
    end_seconds: float
    cached_tokens: np.ndarray | None = None  # prompt tokens served from the prefix cache, per request
    affinity_routed: np.ndarray | None = None  # bool per request: routed for prefix affinity
    slot_seconds: np.ndarray | None = None  # per replica: sum of running sequences x step time
    token_seconds: np.ndarray | None = None  # per replica: sum of tokens processed x step time
    max_num_seqs: int = 256
    max_batched_tokens: int = 2048
    extras: dict = field(default_factory=dict)

    @property
    def ttft_seconds(self) -> np.ndarray:
        return self.first_token_at - self.arrived_at

    @property
    def e2e_seconds(self) -> np.ndarray:
        return self.finished_at - self.arrived_at

    @property
    def tpot_seconds(self) -> np.ndarray:
        """(e2e - ttft) / (output - 1); NaN for single-token outputs."""
        n = self.output_tokens - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (self.finished_at - self.first_token_at) / n
        return np.where(n > 0, t, np.nan)

    @property
    def duration_seconds(self) -> float:
        return self.end_seconds - self.start_seconds

    @property
    def completed(self) -> int:
        return int((self.finish_count == 1).sum())

    @property
    def prefix_cache_hit_share(self) -> float:
        """Share of the completed requests' prompt tokens served from the prefix cache."""
        done = self.finish_count == 1
        total = int(self.prompt_tokens[done].sum())
        if self.cached_tokens is None or total == 0:
            return 0.0
        return float(self.cached_tokens[done].sum()) / total


def simulate(
    trace: Trace,
    step_model: StepModelLike,
    *,
    replicas: int = 1,
    config: SchedulerConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimResult:
    """Simulate `replicas` identical replicas serving `trace` (all requests run to completion).

    A trace with block hashes (`Trace.hashes`, e.g. Mooncake's) feeds the prefix cache; its
    hash block size overrides `config.block_tokens`."""
    cfg = config or SchedulerConfig()
    if replicas < 1:
        raise TokenomyError(f"replicas must be >= 1, got {replicas}")
    if int(step_model.max_kv_tokens) < 1:
        raise TokenomyError("the deployment has no KV-cache room (model weights fill the memory)")
    if trace.hashes is not None and trace.hash_block_tokens and trace.hash_block_tokens != cfg.block_tokens:
        from dataclasses import replace

        cfg = replace(cfg, block_tokens=trace.hash_block_tokens)
    n = len(trace)
    arrival = trace.arrived_at.tolist()
    prompt = trace.prompt_tokens.tolist()
    out = trace.output_tokens.tolist()
    req = RequestTable()
    req.extend(arrival, prompt, out, trace.hashes if cfg.prefix_caching else None)
    pred = StepPredictor(step_model)
    reps = [ReplicaScheduler(pred, cfg, req) for _ in range(replicas)]
    idle = [0.0] * replicas
    rejected = [False] * n
    replica_of = [-1] * n
    queue_at_arrival = [0] * n
    affinity = [False] * n
    t_start = arrival[0] if n else 0.0
    for r in reps:
        r.clock = t_start
    idle_watts = pred.idle_watts
    lb = cfg.lb
    cap = reps[0].cap
    router = None
    if lb == "prefix-affinity":
        router = PrefixAffinityRouter(replicas, capacity_blocks=max(1, cap // cfg.block_tokens),
                                      block_tokens=cfg.block_tokens)
    hashes = req.hashes
    rr = 0
    report_every = max(1, n // 200)
    for rid in range(n):
        t = arrival[rid]
        if prompt[rid] + out[rid] > cap:
            rejected[rid] = True
            continue
        if lb == "round-robin":
            ridx = rr
            rr = (rr + 1) % replicas
        else:
            # Outstanding requests at time t: a step that crosses t finishes its requests after t.
            loads = []
            for r in reps:
                if r.next_event <= t:
                    r.advance(t)
                loads.append(r.outstanding + (r.fin_count if r.fin_time > t else 0))
            if router is not None:
                ridx, _ = router.choose(hashes[rid], loads)
                affinity[rid] = router.last_affinity
            else:
                ridx = min(range(replicas), key=lambda i: (loads[i], i))
        r = reps[ridx]
        if r.clock < t:
            r.advance(t)
            if r.clock < t:  # no work left: idle until the arrival
                idle[ridx] += t - r.clock
                r.energy += idle_watts * (t - r.clock)
                r.clock = t
        replica_of[rid] = ridx
        queue_at_arrival[rid] = len(r.waiting)
        r.submit(rid)
        if progress is not None and rid % report_every == 0:
            progress(rid, n)
    for r in reps:
        r.advance(math.inf)
    end = max([r.clock for r in reps] + [t_start])
    for i, r in enumerate(reps):  # idle until the last replica finishes
        if r.clock < end:
            idle[i] += end - r.clock
            r.energy += idle_watts * (end - r.clock)
            r.clock = end
    if progress is not None:
        progress(n, n)
    return SimResult(
        arrived_at=trace.arrived_at,
        prompt_tokens=trace.prompt_tokens,
        output_tokens=trace.output_tokens,
        first_token_at=np.array(req.first_token_s, dtype=np.float64),
        finished_at=np.array(req.finished_s, dtype=np.float64),
        finish_count=np.array(req.finish_count, dtype=np.int64),
        replica=np.array(replica_of, dtype=np.int64),
        rejected=np.array(rejected, dtype=bool),
        busy_seconds=np.array([r.busy for r in reps]),
        idle_seconds=np.array(idle),
        energy_joules=np.array([r.energy for r in reps]),
        peak_kv_tokens=np.array([r.peak_kv for r in reps], dtype=np.int64),
        max_kv_tokens=cap,
        steps=np.array([r.steps for r in reps], dtype=np.int64),
        preemptions=sum(r.preemptions for r in reps),
        queue_at_arrival=np.array(queue_at_arrival, dtype=np.int64),
        start_seconds=t_start,
        end_seconds=end,
        cached_tokens=np.array(req.cached_tokens, dtype=np.int64),
        affinity_routed=np.array(affinity, dtype=bool),
        slot_seconds=np.array([r.slot_seconds for r in reps]),
        token_seconds=np.array([r.token_seconds for r in reps]),
        max_num_seqs=cfg.max_num_seqs,
        max_batched_tokens=cfg.max_batched_tokens,
    )
