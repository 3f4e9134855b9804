"""Benchmark metrics from timed requests (pure). Definitions follow vLLM `benchmark_serving`:

- TTFT: send -> first generated text; E2E: send -> end of stream.
- TPOT per request: (E2E - TTFT) / (output_tokens - 1), requests with > 1 output token.
- ITL: every gap between consecutive text chunks, pooled over requests.
- Throughput: totals over the benchmark duration (first send -> last completion).
- Goodput: requests meeting every given SLO (TTFT and TPOT), per second of duration.
Percentiles are numpy's linear-interpolation percentiles, in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .client import ERROR_KINDS, RequestResult

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class Slo:
    ttft_ms: float | None = None
    tpot_ms: float | None = None

    @property
    def any(self) -> bool:
        return self.ttft_ms is not None or self.tpot_ms is not None

    def met(self, r: RequestResult) -> bool:
        if not r.ok:
            return False
        if self.ttft_ms is not None and (r.ttft_s is None or r.ttft_s * 1e3 > self.ttft_ms):
            return False
        tpot = r.tpot_s
        return self.tpot_ms is None or tpot is None or tpot * 1e3 <= self.tpot_ms


def distribution_ms(values_ms: Sequence[float]) -> dict[str, float | None]:
    """{mean, p50, p90, p99} of values in ms (None for an empty sample)."""
    if len(values_ms) == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    arr = np.asarray(values_ms, dtype=np.float64)
    out: dict[str, float | None] = {"mean": float(arr.mean())}
    for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES)):
        out[f"p{p}"] = float(v)
    return out


def percentile(values: Sequence[float], pct: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), pct)) if len(values) else None


@dataclass
class Metrics:
    requests: int
    requests_ok: int
    errors: dict[str, int]
    error_examples: dict[str, str]
    duration_s: float
    input_tokens: int
    output_tokens: int
    requests_per_s: float
    output_tokens_per_s: float
    input_tokens_per_s: float
    goodput_rps: float
    slo_attainment: float | None  # share of all requests that met the SLOs (None without SLOs)
    availability: float  # share of requests that succeeded
    ttft_ms: dict[str, float | None]
    tpot_ms: dict[str, float | None]
    itl_ms: dict[str, float | None]
    e2e_ms: dict[str, float | None]
    usage_reported: bool  # output tokens came from the server's usage (all ok requests)
    # raw samples (ms) for plots and contract percentiles; not in the JSON
    ttft_samples_ms: list[float] = field(default_factory=list, repr=False)
    tpot_samples_ms: list[float] = field(default_factory=list, repr=False)
    e2e_samples_ms: list[float] = field(default_factory=list, repr=False)
    # time shares for self-hosted pricing: sum of TTFTs and of decode times (s)
    prefill_seconds_sum: float = 0.0
    decode_seconds_sum: float = 0.0

    @property
    def mean_input_tokens(self) -> float:
        return self.input_tokens / self.requests_ok if self.requests_ok else 0.0

    @property
    def mean_output_tokens(self) -> float:
        return self.output_tokens / self.requests_ok if self.requests_ok else 0.0

    def to_dict(self) -> dict:
        return {
            "requests": self.requests, "requests_ok": self.requests_ok, "errors": dict(self.errors),
            "error_examples": dict(self.error_examples), "duration_s": self.duration_s,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "mean_input_tokens": self.mean_input_tokens, "mean_output_tokens": self.mean_output_tokens,
            "requests_per_s": self.requests_per_s, "output_tokens_per_s": self.output_tokens_per_s,
            "input_tokens_per_s": self.input_tokens_per_s, "goodput_rps": self.goodput_rps,
            "slo_attainment": self.slo_attainment, "availability": self.availability,
            "ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "itl_ms": self.itl_ms, "e2e_ms": self.e2e_ms,
            "output_tokens_source": "usage" if self.usage_reported else "counted_chunks",
        }


def compute_metrics(results: Sequence[RequestResult], duration_s: float, slo: Slo = Slo()) -> Metrics:
    ok = [r for r in results if r.ok]
    errors = {k: 0 for k in ERROR_KINDS}
    examples: dict[str, str] = {}
    for r in results:
        if not r.ok and r.error_kind:
            errors[r.error_kind] = errors.get(r.error_kind, 0) + 1
            examples.setdefault(r.error_kind, r.error or "")
    ttft = [r.ttft_s * 1e3 for r in ok if r.ttft_s is not None]
    tpot = [t * 1e3 for r in ok if (t := r.tpot_s) is not None]
    e2e = [r.e2e_s * 1e3 for r in ok if r.e2e_s is not None]
    itl = [g * 1e3 for r in ok for g in r.itl_s]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    good = sum(1 for r in ok if slo.met(r))
    d = max(duration_s, 1e-9)
    n = len(results)
    return Metrics(
        requests=n, requests_ok=len(ok), errors=errors, error_examples=examples, duration_s=duration_s,
        input_tokens=in_tokens, output_tokens=out_tokens, requests_per_s=len(ok) / d,
        output_tokens_per_s=out_tokens / d, input_tokens_per_s=in_tokens / d, goodput_rps=good / d,
        slo_attainment=(good / n if n else None) if slo.any else None,
        availability=len(ok) / n if n else 0.0,
        ttft_ms=distribution_ms(ttft), tpot_ms=distribution_ms(tpot), itl_ms=distribution_ms(itl),
        e2e_ms=distribution_ms(e2e), usage_reported=bool(ok) and all(r.usage_reported for r in ok),
        ttft_samples_ms=ttft, tpot_samples_ms=tpot, e2e_samples_ms=e2e,
        prefill_seconds_sum=sum(r.ttft_s or 0.0 for r in ok),
        decode_seconds_sum=sum((r.e2e_s or 0.0) - (r.ttft_s or 0.0) for r in ok),
    )
