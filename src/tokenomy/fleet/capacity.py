"""How many requests per second of one size a replica sustains under TTFT/TPOT SLOs.

Steady state of continuous batching with chunked prefill, for requests of `prompt` input and
`output` output tokens at batch B: B sequences decode one token per step; to keep up, the
replica must also prefill B x prompt / output prompt tokens per step on average. Prefill comes
in chunks of c tokens (a whole prompt, or what the token budget leaves), so a share
f = B x prompt / (output x c) of steps carry a chunk. With the perf model's step times
t_dec = step(B decodes) and t_mix = step(c prefill + B decodes), a sequence's mean time per
output token is t(B) = (1 - f) t_dec + f t_mix. Feasible when
  t(B) <= headroom x TPOT SLO,   ceil(prompt / c) x t_mix <= headroom x TTFT SLO,
  f <= 1 (the budget keeps up), B <= max_num_seqs, B x (prompt + output) <= 0.9 x KV.
The sustained rate is B / (output x t(B)) requests per second at the largest feasible B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatingPoint:
    batch: int
    rate_per_s: float  # requests per second
    step_seconds: float
    watts: float
    limit: str  # what stops a larger batch: "tpot" | "ttft" | "kv" | "budget" | "max_num_seqs"


@dataclass(frozen=True)
class Infeasible:
    reason: str  # "tpot" | "ttft" | "kv"
    needed_ms: float  # batch-1 step time (tpot), prefill time (ttft) or tokens (kv)


def _mixed(sm, batch: int, prompt: int, output: int, budget: int) -> tuple[float, float, float, int]:
    """(mean seconds per step, share of steps with prefill, mixed-step seconds, chunk tokens)."""
    need = batch * prompt / output  # prefill tokens per step on average
    room = budget - batch
    if room < 1:
        return math.inf, 1.0, math.inf, 0
    chunk = min(room, max(min(prompt, room), int(math.ceil(need))))
    share = need / chunk
    kv = int(batch * (prompt + output / 2))
    t_dec = sm.step_seconds(decode_seqs=batch, kv_tokens=kv)
    t_mix = sm.step_seconds(prefill_tokens=chunk, decode_seqs=batch, kv_tokens=kv)
    if share > 1.0:
        return math.inf, share, t_mix, chunk
    return (1.0 - share) * t_dec + share * t_mix, share, t_mix, chunk


def operating_point(
    sm,
    *,
    prompt_tokens: float,
    output_tokens: float,
    slo_tpot_ms: float,
    slo_ttft_ms: float | None,
    max_num_seqs: int = 256,
    max_batched_tokens: int = 2048,
    tpot_headroom: float = 0.9,
    ttft_headroom: float = 0.9,
) -> OperatingPoint | Infeasible:
    prompt = max(1, int(round(prompt_tokens)))
    output = max(1, int(round(output_tokens)))
    cap = int(sm.max_kv_tokens)
    if prompt + output > cap:
        return Infeasible("kv", float(prompt + output))
    tpot_s = slo_tpot_ms / 1000.0
    # Batch 1 without any other prefill: the floor of TPOT.
    t1 = sm.step_seconds(decode_seqs=1, kv_tokens=int(prompt + output / 2))
    if t1 > tpot_s:
        return Infeasible("tpot", t1 * 1000.0)
    # Prefill alone in chunks of the token budget: the floor of TTFT.
    chunks = math.ceil(prompt / max_batched_tokens)
    full = sm.step_seconds(prefill_tokens=min(prompt, max_batched_tokens))
    ttft1 = chunks * full
    if slo_ttft_ms is not None and ttft1 * 1000.0 > slo_ttft_ms:
        return Infeasible("ttft", ttft1 * 1000.0)

    limits = {
        "max_num_seqs": max_num_seqs,
        "budget": max(1, int((max_batched_tokens - 1) / (1 + prompt / output))),
        "kv": int(0.9 * cap / (prompt + output)),
    }
    b_max_name = min(limits, key=limits.get)
    b_max = max(1, limits[b_max_name])

    def ok(b: int) -> tuple[bool, str]:
        t, share, t_mix, chunk = _mixed(sm, b, prompt, output, max_batched_tokens)
        if share > 1.0:
            return False, "budget"
        if t > tpot_headroom * tpot_s:
            return False, "tpot"
        if slo_ttft_ms is not None and math.ceil(prompt / chunk) * t_mix * 1000.0 > ttft_headroom * slo_ttft_ms:
            return False, "ttft"
        return True, ""

    lo_ok, lo_why = ok(1)
    if not lo_ok:
        # Feasible alone but not in steady state with others' prefill: one request at a time.
        t = (ttft1 + (output - 1) * t1) / output
        return OperatingPoint(1, 1.0 / (ttft1 + (output - 1) * t1), t,
                              sm.step_watts(decode_seqs=1, kv_tokens=prompt), lo_why)
    good, bad, limit = 1, None, b_max_name
    hi_ok, why = ok(b_max)
    if hi_ok:
        good = b_max
    else:
        bad, limit = b_max, why
        while bad - good > 1:
            mid = (good + bad) // 2
            m_ok, m_why = ok(mid)
            if m_ok:
                good = mid
            else:
                bad, limit = mid, m_why
    t, share, _, chunk = _mixed(sm, good, prompt, output, max_batched_tokens)
    kv = int(good * (prompt + output / 2))
    watts = (1 - share) * sm.step_watts(decode_seqs=good, kv_tokens=kv) + share * sm.step_watts(
        prefill_tokens=chunk, decode_seqs=good, kv_tokens=kv)
    return OperatingPoint(good, good / (output * t), t, watts, limit)
