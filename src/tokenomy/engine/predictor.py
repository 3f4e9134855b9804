"""The step-time source: tokenomy.perf's StepModel (or anything shaped like it) behind one call.

A step is described by its prefill tokens (with the context already in the KV cache that
their attention reads, and how many sequences they belong to), its decoding sequences and the
KV tokens those read. Step models that do not take the prefill context are called without it.
"""

from __future__ import annotations

from typing import Protocol


class StepModelLike(Protocol):
    idle_watts: float
    max_kv_tokens: int

    def step_seconds(self, *, prefill_tokens: int = 0, decode_seqs: int = 0, kv_tokens: int = 0) -> float: ...
    def step_watts(self, *, prefill_tokens: int = 0, decode_seqs: int = 0, kv_tokens: int = 0) -> float: ...


def _accepts_prefill_context(sm: StepModelLike) -> bool:
    import inspect

    try:
        params = inspect.signature(sm.step_seconds).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "prefill_context" for p in params)


class StepPredictor:
    __slots__ = ("sm", "rich", "idle_watts", "max_kv_tokens", "_s", "_w")

    def __init__(self, sm: StepModelLike) -> None:
        self.sm = sm
        self.rich = _accepts_prefill_context(sm)
        self.idle_watts = float(sm.idle_watts)
        self.max_kv_tokens = int(sm.max_kv_tokens)
        self._s = sm.step_seconds
        self._w = sm.step_watts

    def step(self, prefill_tokens: int, decode_seqs: int, kv_tokens: int, prefill_context: int = 0,
             prefill_seqs: int = 0) -> tuple[float, float]:
        """(seconds, watts) of one step."""
        if self.rich and prefill_seqs:
            kw = dict(prefill_tokens=prefill_tokens, decode_seqs=decode_seqs, kv_tokens=kv_tokens,
                      prefill_context=prefill_context, prefill_seqs=prefill_seqs)
            return self._s(**kw), self._w(**kw)
        return (self._s(prefill_tokens=prefill_tokens, decode_seqs=decode_seqs, kv_tokens=kv_tokens),
                self._w(prefill_tokens=prefill_tokens, decode_seqs=decode_seqs, kv_tokens=kv_tokens))

    def decode_seconds(self, decode_seqs: int, kv_tokens: int) -> float:
        return self._s(decode_seqs=decode_seqs, kv_tokens=kv_tokens)

    def decode_watts(self, decode_seqs: int, kv_tokens: int) -> float:
        return self._w(decode_seqs=decode_seqs, kv_tokens=kv_tokens)
