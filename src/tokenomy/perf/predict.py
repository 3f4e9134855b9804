"""Whole-request predictions built on the step model: decode step, prefill, capacity, SLO throughput."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tokenomy.catalog.types import Accelerator, ModelArch
from tokenomy.errors import TokenomyError

from .step import StepModel, check_dtype, make_step_model


@dataclass(frozen=True, slots=True)
class StepPrediction:
    seconds: float
    tokens: int  # tokens produced (decode: batch) or processed (prefill)
    tokens_per_s: float
    watts: float  # all devices of the replica
    joules_per_token: float
    source: str  # "profile" | "datasheet"

    def to_dict(self) -> dict:
        return asdict(self)


def _prediction(sm: StepModel, tokens: int, **step) -> StepPrediction:
    seconds, watts = sm.step_seconds_and_watts(**step)
    return StepPrediction(seconds=seconds, tokens=tokens, tokens_per_s=tokens / seconds, watts=watts,
                          joules_per_token=watts * seconds / tokens, source=sm.source)


def decode_prediction(sm: StepModel, *, batch: int, context: int) -> StepPrediction:
    if batch < 1 or context < 0:
        raise TokenomyError(f"batch must be >= 1 and context >= 0 (got batch={batch}, context={context})")
    return _prediction(sm, batch, decode_seqs=batch, kv_tokens=batch * context)


def prefill_prediction(sm: StepModel, *, tokens: int, context: int = 0) -> StepPrediction:
    if tokens < 1:
        raise TokenomyError(f"prefill tokens must be >= 1 (got {tokens})")
    return _prediction(sm, tokens, prefill_tokens=tokens, prefill_context=context)


def predict_decode_step(model: ModelArch, acc: Accelerator, *, batch: int, context: int, count: int = 1,
                        dtype: str = "bf16", engine_efficiency: float = 1.0) -> StepPrediction:
    """One decode step of `batch` sequences, each with `context` tokens already in its KV cache."""
    sm = make_step_model(model, acc, count=count, dtype=dtype, engine_efficiency=engine_efficiency)
    return decode_prediction(sm, batch=batch, context=context)


def predict_prefill(model: ModelArch, acc: Accelerator, *, tokens: int, count: int = 1, dtype: str = "bf16",
                    engine_efficiency: float = 1.0) -> StepPrediction:
    """Prefill of one `tokens`-long prompt (time to first token, without queueing)."""
    sm = make_step_model(model, acc, count=count, dtype=dtype, engine_efficiency=engine_efficiency)
    return prefill_prediction(sm, tokens=tokens)


def kv_context_per_seq(model: ModelArch, context: int) -> int:
    """Tokens a sequence keeps in its KV cache (sliding-window models keep at most the window)."""
    return min(context, model.sliding_window) if model.sliding_window else context


def batch_capacity(sm: StepModel, *, context: int) -> int:
    """Sequences of `context` tokens whose KV caches fit next to the weights."""
    per_seq = max(1, kv_context_per_seq(sm.model, context))
    return sm.max_kv_tokens // per_seq


def max_batch_size(model: ModelArch, acc: Accelerator, *, context: int, count: int = 1, dtype: str = "bf16",
                   kv_dtype: str = "bf16") -> int:
    """Largest decode batch of `context`-token sequences that fits in memory (0 if none)."""
    check_dtype(acc, dtype, kv_dtype)
    if count > acc.max_count:
        raise TokenomyError(f"tensor parallelism over {count} x {acc.id} exceeds its {acc.max_count}-device node")
    try:
        sm = make_step_model(model, acc, count=count, dtype=dtype, kv_dtype=kv_dtype)
    except TokenomyError:  # the weights do not fit
        return 0
    return batch_capacity(sm, context=context)


def batch_at_tpot(sm: StepModel, *, slo_tpot_ms: float | None, context: int) -> tuple[int, float]:
    """(largest batch whose decode step meets the SLO and fits in memory, its step seconds).

    Raises TokenomyError if nothing fits or even batch 1 misses the SLO. Binary search: step
    time grows with batch.
    """
    cap = batch_capacity(sm, context=context)
    if cap < 1:
        raise TokenomyError(
            f"no room for even one {context}-token sequence of {sm.model.id} on {sm.count} x {sm.accelerator.id} "
            f"next to the weights")

    def step(b: int) -> float:
        return sm.step_seconds(decode_seqs=b, kv_tokens=b * kv_context_per_seq(sm.model, context))

    if slo_tpot_ms is None:
        return cap, step(cap)
    slo = slo_tpot_ms / 1e3
    t1 = step(1)
    if t1 > slo:
        raise TokenomyError(
            f"TPOT SLO {slo_tpot_ms:g} ms is below the batch-1 decode step of {sm.model.id} on {sm.count} x "
            f"{sm.accelerator.id} ({t1 * 1e3:.2f} ms at {context} tokens of context)")
    lo, hi = 1, cap
    if step(hi) <= slo:
        return hi, step(hi)
    while hi - lo > 1:  # invariant: step(lo) <= slo < step(hi)
        mid = (lo + hi) // 2
        if step(mid) <= slo:
            lo = mid
        else:
            hi = mid
    return lo, step(lo)


def throughput_at_tpot(model: ModelArch, acc: Accelerator, *, slo_tpot_ms: float, context: int, count: int = 1,
                       dtype: str = "bf16", engine_efficiency: float = 1.0) -> tuple[int, float]:
    """(batch, decode tokens/s) at the largest batch whose decode step meets the TPOT SLO."""
    sm = make_step_model(model, acc, count=count, dtype=dtype, engine_efficiency=engine_efficiency)
    batch, seconds = batch_at_tpot(sm, slo_tpot_ms=slo_tpot_ms, context=context)
    return batch, batch / seconds
