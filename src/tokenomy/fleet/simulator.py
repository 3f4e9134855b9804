"""Discrete-event simulation of replicas of one deployment with vLLM-like continuous batching.

Each replica runs engine steps. A step decodes one token for every running sequence and
spends the rest of a token budget on (chunked) prefill of admitted requests, FCFS. The
step's duration and power come from the perf model (`StepModel.step_seconds/step_watts`).
The prefill step that finishes a prompt emits the request's first token (TTFT); each later
step emits one more (TPOT = (e2e - ttft) / (output_tokens - 1)).

Speed: between events (an arrival routed to the replica, a completion, a KV limit) the batch
is constant and only its KV grows by one token per sequence per step, so those decode steps
are taken together as one "macro step" whose time is the sum of a linear-in-KV step time
(exact when step time is affine in KV tokens, as in a roofline). The cost is then a few
perf-model calls per event instead of one per token.

KV cache (`max_kv_tokens`):
- "preempt" (vLLM): admit a request when its prompt fits; when decode growth would overflow,
  preempt the most recently arrived running sequence (free its KV, recompute later).
- "reserve": admit only when prompt + full output fits; never preempts.
Requests whose prompt + output exceed the capacity can never run: they are rejected.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from heapq import heappop, heappush, heapify
from typing import Protocol

import numpy as np

from tokenomy.errors import TokenomyError
from tokenomy.fleet.workload import Trace


class StepModelLike(Protocol):
    idle_watts: float
    max_kv_tokens: int

    def step_seconds(self, *, prefill_tokens: int = 0, decode_seqs: int = 0, kv_tokens: int = 0) -> float: ...
    def step_watts(self, *, prefill_tokens: int = 0, decode_seqs: int = 0, kv_tokens: int = 0) -> float: ...


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 256  # running sequences per replica (vLLM max_num_seqs)
    max_batched_tokens: int = 2048  # tokens per step: decodes + prefill chunks (chunked prefill)
    kv_policy: str = "preempt"  # "preempt" | "reserve"
    kv_watermark: float = 0.01  # share of KV kept free at admission (vLLM watermark)
    lb: str = "least-loaded"  # "least-loaded" | "round-robin"
    macro_steps: bool = True  # False: one decode step per event (slow; the reference for tests)

    def __post_init__(self) -> None:
        if self.kv_policy not in ("preempt", "reserve"):
            raise TokenomyError(f"unknown KV policy '{self.kv_policy}' (preempt or reserve)")
        if self.lb not in ("least-loaded", "round-robin"):
            raise TokenomyError(f"unknown load balancer '{self.lb}' (least-loaded or round-robin)")
        if self.max_num_seqs < 1 or self.max_batched_tokens < 2:
            raise TokenomyError("max_num_seqs must be >= 1 and max_batched_tokens >= 2")


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


def _accepts_prefill_context(sm: StepModelLike) -> bool:
    """Whether the step model takes the optional prefill_context/prefill_seqs arguments."""
    try:
        sm.step_seconds(prefill_tokens=1, prefill_context=0, prefill_seqs=1)
    except TypeError:
        return False
    return True


class _Replica:
    __slots__ = (
        "sm", "cfg", "cap", "admit_cap", "reserve", "clock", "waiting", "prefilling", "n_prefilling_tokens",
        "heap", "n_dec", "kv_dec", "kv_used", "kv_reserved", "counter", "busy", "idle", "energy",
        "next_event", "peak_kv", "steps", "outstanding", "preemptions", "fin_time", "fin_count",
        "step_seconds", "step_watts",
    )

    def __init__(self, sm: StepModelLike, cfg: SchedulerConfig) -> None:
        self.sm = sm
        self.cfg = cfg
        self.cap = int(sm.max_kv_tokens)
        self.admit_cap = self.cap - int(cfg.kv_watermark * self.cap)
        self.reserve = cfg.kv_policy == "reserve"
        self.clock = 0.0
        self.waiting: deque[int] = deque()
        self.prefilling: deque[list[int]] = deque()  # [rid, prompt tokens left]
        self.n_prefilling_tokens = 0
        self.heap: list[tuple[int, int]] = []  # (decode step at which rid finishes, rid)
        self.n_dec = 0  # sequences in decode
        self.kv_dec = 0  # KV tokens held by decoding sequences
        self.kv_used = 0  # KV tokens held by all admitted sequences
        self.kv_reserved = 0  # "reserve" policy: prompt + output of admitted sequences
        self.counter = 0  # decode steps done
        self.busy = 0.0
        self.idle = 0.0
        self.energy = 0.0
        self.next_event = math.inf
        self.peak_kv = 0
        self.steps = 0
        self.outstanding = 0
        self.preemptions = 0
        self.fin_time = -math.inf  # end of the last step that finished requests, and how many
        self.fin_count = 0
        self.step_seconds = sm.step_seconds
        self.step_watts = sm.step_watts


def simulate(
    trace: Trace,
    step_model: StepModelLike,
    *,
    replicas: int = 1,
    config: SchedulerConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimResult:
    """Simulate `replicas` identical replicas serving `trace` (all requests run to completion)."""
    cfg = config or SchedulerConfig()
    if replicas < 1:
        raise TokenomyError(f"replicas must be >= 1, got {replicas}")
    if int(step_model.max_kv_tokens) < 1:
        raise TokenomyError("the deployment has no KV-cache room (model weights fill the memory)")
    n = len(trace)
    arrival = trace.arrived_at.tolist()
    prompt = trace.prompt_tokens.tolist()
    out = trace.output_tokens.tolist()
    # Mutable per-request state.
    ctx = list(prompt)  # tokens to prefill (prompt, plus generated tokens after a preemption)
    remaining = list(out)  # tokens still to emit
    offset = [0] * n  # KV of a decoding sequence = offset + replica counter
    first_tok = [math.nan] * n
    finished = [math.nan] * n
    finish_count = [0] * n
    replica_of = [-1] * n
    rejected = [False] * n
    queue_at_arrival = [0] * n

    reps = [_Replica(step_model, cfg) for _ in range(replicas)]
    t_start = arrival[0] if n else 0.0
    for r in reps:
        r.clock = t_start
    max_seqs = cfg.max_num_seqs
    budget_total = cfg.max_batched_tokens
    idle_watts = float(step_model.idle_watts)
    rich_prefill = _accepts_prefill_context(step_model)
    macro = cfg.macro_steps

    def can_admit(r: _Replica, rid: int) -> bool:
        if r.n_dec + len(r.prefilling) >= max_seqs:
            return False
        if r.reserve:
            return r.kv_reserved + ctx[rid] + remaining[rid] <= r.cap
        return r.kv_used + ctx[rid] <= r.admit_cap

    def finish(r: _Replica, rid: int, t: float) -> None:
        finished[rid] = t
        finish_count[rid] += 1
        r.outstanding -= 1
        if t == r.fin_time:
            r.fin_count += 1
        else:
            r.fin_time = t
            r.fin_count = 1

    def preempt_one(r: _Replica) -> None:
        # Victim: the latest-arrived decoding sequence (vLLM FCFS preempts the newest).
        heap = r.heap
        i = max(range(len(heap)), key=lambda j: heap[j][1])
        fin, rid = heap[i]
        heap[i] = heap[-1]
        heap.pop()
        heapify(heap)
        left = fin - r.counter
        kv_now = offset[rid] + r.counter
        r.n_dec -= 1
        r.kv_dec -= kv_now
        r.kv_used -= kv_now
        ctx[rid] = prompt[rid] + (out[rid] - left)
        remaining[rid] = left
        r.waiting.appendleft(rid)
        r.preemptions += 1

    def mixed_step(r: _Replica) -> None:
        """One step with prefill work (and the decodes of all running sequences)."""
        budget = budget_total - r.n_dec
        if budget <= 0:
            budget = 1  # always make prefill progress
        # Admit waiting requests into the prefill queue while the budget lasts.
        waiting = r.waiting
        prefilling = r.prefilling
        queued_tokens = r.n_prefilling_tokens
        while waiting and queued_tokens < budget and can_admit(r, waiting[0]):
            rid = waiting.popleft()
            prefilling.append([rid, ctx[rid]])
            queued_tokens += ctx[rid]
            r.kv_used += ctx[rid]
            if r.reserve:
                r.kv_reserved += ctx[rid] + remaining[rid]
        # Chunks FCFS.
        done: list[int] = []
        p_tokens = 0
        p_context = 0  # prompt tokens already cached for the chunks (attention cost of chunked prefill)
        p_seqs = 0
        for entry in prefilling:
            c = entry[1] if entry[1] < budget - p_tokens else budget - p_tokens
            if c <= 0:
                break
            p_context += ctx[entry[0]] - entry[1]
            p_seqs += 1
            entry[1] -= c
            p_tokens += c
            if entry[1] == 0:
                done.append(entry[0])
        if p_tokens == 0 and r.n_dec == 0:
            raise AssertionError("a step with no work")
        n_dec = r.n_dec
        if not r.reserve:
            while n_dec and r.kv_used + n_dec > r.cap:
                preempt_one(r)
                n_dec = r.n_dec
        if rich_prefill and p_seqs:
            dt = r.step_seconds(prefill_tokens=p_tokens, decode_seqs=n_dec, kv_tokens=r.kv_dec,
                                prefill_context=p_context, prefill_seqs=p_seqs)
            w = r.step_watts(prefill_tokens=p_tokens, decode_seqs=n_dec, kv_tokens=r.kv_dec,
                             prefill_context=p_context, prefill_seqs=p_seqs)
        else:
            dt = r.step_seconds(prefill_tokens=p_tokens, decode_seqs=n_dec, kv_tokens=r.kv_dec)
            w = r.step_watts(prefill_tokens=p_tokens, decode_seqs=n_dec, kv_tokens=r.kv_dec)
        t = r.clock + dt
        r.clock = t
        r.busy += dt
        r.energy += w * dt
        r.steps += 1
        r.n_prefilling_tokens = queued_tokens - p_tokens
        for _ in done:
            prefilling.popleft()
        if n_dec:
            r.counter += 1
            r.kv_dec += n_dec
            r.kv_used += n_dec
            _pop_finished(r, t)
        heap = r.heap
        for rid in done:
            if first_tok[rid] != first_tok[rid]:  # NaN: first time this request emits
                first_tok[rid] = t
            left = remaining[rid] - 1
            kv = ctx[rid] + 1
            r.kv_used += 1
            if left == 0:
                r.kv_used -= kv
                if r.reserve:
                    r.kv_reserved -= prompt[rid] + out[rid]
                finish(r, rid, t)
            else:
                offset[rid] = kv - r.counter
                heappush(heap, (r.counter + left, rid))
                r.n_dec += 1
                r.kv_dec += kv
        if r.kv_used > r.peak_kv:
            r.peak_kv = r.kv_used

    def _pop_finished(r: _Replica, t: float) -> None:
        heap = r.heap
        c = r.counter
        while heap and heap[0][0] <= c:
            _, rid = heappop(heap)
            kv = offset[rid] + c
            r.n_dec -= 1
            r.kv_dec -= kv
            r.kv_used -= kv
            if r.reserve:
                r.kv_reserved -= prompt[rid] + out[rid]
            finish(r, rid, t)

    def has_prefill_work(r: _Replica) -> bool:
        return bool(r.prefilling) or (bool(r.waiting) and can_admit(r, r.waiting[0]))

    def advance(r: _Replica, until: float) -> None:
        """Run steps until the replica's clock reaches `until` (the last step may cross it)."""
        while r.clock < until:
            if r.prefilling or (r.waiting and can_admit(r, r.waiting[0])):
                mixed_step(r)
                r.next_event = r.clock
                continue
            n_dec = r.n_dec
            if n_dec == 0:
                r.next_event = math.inf
                return
            c = r.counter
            k = r.heap[0][0] - c if macro else 1
            if not r.reserve:
                k_kv = (r.cap - r.kv_used) // n_dec
                if k_kv <= 0:
                    preempt_one(r)
                    continue
                if k_kv < k:
                    k = k_kv
            kv0 = r.kv_dec
            t0 = r.step_seconds(decode_seqs=n_dec, kv_tokens=kv0)
            slope = 0.0
            if k > 1:
                slope = (r.step_seconds(decode_seqs=n_dec, kv_tokens=kv0 + n_dec * (k - 1)) - t0) / (k - 1)
            total = k * t0 + slope * k * (k - 1) * 0.5
            j = k
            if r.clock + total > until:
                # Smallest j with j*t0 + slope*j*(j-1)/2 >= until - clock.
                d = until - r.clock
                if slope > 1e-15:
                    b = t0 - 0.5 * slope
                    j = math.ceil((-b + math.sqrt(b * b + 2.0 * slope * d)) / slope - 1e-9)
                else:
                    j = math.ceil(d / t0 - 1e-9)
                j = 1 if j < 1 else (k if j > k else j)
                while j > 1 and (j - 1) * t0 + slope * (j - 1) * (j - 2) * 0.5 >= d:
                    j -= 1
                while j < k and j * t0 + slope * j * (j - 1) * 0.5 < d:
                    j += 1
                dt = j * t0 + slope * j * (j - 1) * 0.5
                r.next_event = r.clock + total  # the next completion, unless the batch changes
            else:
                dt = total
            w = r.step_watts(decode_seqs=n_dec, kv_tokens=kv0 + (n_dec * (j - 1)) // 2)
            r.clock += dt
            r.busy += dt
            r.energy += w * dt
            r.steps += j
            r.counter = c + j
            r.kv_dec = kv0 + n_dec * j
            r.kv_used += n_dec * j
            if r.kv_used > r.peak_kv:
                r.peak_kv = r.kv_used
            if j == k:
                _pop_finished(r, r.clock)
                r.next_event = r.clock
        if not (r.prefilling or r.waiting or r.n_dec):
            r.next_event = math.inf

    least_loaded = cfg.lb == "least-loaded"
    cap = reps[0].cap
    rr = 0
    report_every = max(1, n // 200)
    for rid in range(n):
        t = arrival[rid]
        if prompt[rid] + out[rid] > cap:
            rejected[rid] = True
            continue
        if least_loaded:
            # Outstanding requests at time t: a step that crosses t finishes its requests after t.
            best_load = None
            ridx = 0
            for i, r in enumerate(reps):
                if r.next_event <= t:
                    advance(r, t)
                load = r.outstanding + (r.fin_count if r.fin_time > t else 0)
                if best_load is None or load < best_load:
                    best_load, ridx = load, i
            r = reps[ridx]
        else:
            ridx = rr
            rr = (rr + 1) % replicas
            r = reps[ridx]
        if r.clock < t:
            advance(r, t)
            if r.clock < t:  # no work left: idle until the arrival
                r.idle += t - r.clock
                r.energy += idle_watts * (t - r.clock)
                r.clock = t
        replica_of[rid] = ridx
        queue_at_arrival[rid] = len(r.waiting)
        r.waiting.append(rid)
        r.outstanding += 1
        r.next_event = r.clock
        if progress is not None and rid % report_every == 0:
            progress(rid, n)
    for r in reps:
        advance(r, math.inf)
    end = max([r.clock for r in reps] + [t_start])
    for r in reps:  # idle until the last replica finishes
        if r.clock < end:
            r.idle += end - r.clock
            r.energy += idle_watts * (end - r.clock)
            r.clock = end
    if progress is not None:
        progress(n, n)
    return SimResult(
        arrived_at=trace.arrived_at,
        prompt_tokens=trace.prompt_tokens,
        output_tokens=trace.output_tokens,
        first_token_at=np.array(first_tok, dtype=np.float64),
        finished_at=np.array(finished, dtype=np.float64),
        finish_count=np.array(finish_count, dtype=np.int64),
        replica=np.array(replica_of, dtype=np.int64),
        rejected=np.array(rejected, dtype=bool),
        busy_seconds=np.array([r.busy for r in reps]),
        idle_seconds=np.array([r.idle for r in reps]),
        energy_joules=np.array([r.energy for r in reps]),
        peak_kv_tokens=np.array([r.peak_kv for r in reps], dtype=np.int64),
        max_kv_tokens=cap,
        steps=np.array([r.steps for r in reps], dtype=np.int64),
        preemptions=sum(r.preemptions for r in reps),
        queue_at_arrival=np.array(queue_at_arrival, dtype=np.int64),
        start_seconds=t_start,
        end_seconds=end,
    )
