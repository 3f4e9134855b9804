"""Gateway policy helper: call the weak model, score its answer, return it or escalate.

Pure asyncio orchestration over callables, so the gateway supplies the upstream calls (with
metering) and tests supply fakes:

    res = await run_cascade(call_weak, call_strong, verifier, threshold, prompt=prompt,
                            text_of=lambda resp: resp["choices"][0]["message"]["content"])

- `call_weak()` / `call_strong()`: async, no arguments, return the upstream response.
- `verifier`: `score_response(prompt, answer, logprobs)` (e.g. LogprobVerifier: the text plus
  the weak answer's token logprobs, `logprobs_of(response)`, None when the upstream sent none),
  `ascore(prompt, answer)` (async, e.g. JudgeVerifier), `score(prompt, answer)` (sync and fast,
  e.g. the learned verifier), or a plain (async) callable (prompt, answer). A score of None or
  a verifier error escalates (quality first).
- Escalate iff score < threshold. A failed weak call escalates; a failed strong call after a
  successful weak call returns the weak answer (escalated=True, `strong_error` set); if both
  fail the strong call's exception propagates.
- `calls` lists every upstream call in order (role, response or None, seconds, error) so the
  gateway meters both under one request id. Streaming: the weak answer must be complete before
  it is scored, so a cascade adds the weak call's full latency to the TTFT of escalated requests
  (and the verifier's time to every request).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class CascadeCall:
    role: str                  # "weak" | "strong"
    response: Any              # the callable's return value, None if it raised
    seconds: float
    error: BaseException | None = None


@dataclass(slots=True)
class CascadeResult:
    answer: Any                        # the response returned to the client
    escalated: bool
    score: float | None                # verifier score of the weak answer (None: no score)
    threshold: float
    calls: list[CascadeCall] = field(default_factory=list)
    verifier_seconds: float = 0.0
    verifier_error: str | None = None
    strong_error: str | None = None
    logprobs: Any = None               # what `logprobs_of` gave for the weak answer (None: none)

    @property
    def served_by(self) -> str:
        """Which call's response is the answer."""
        if self.escalated and self.calls and self.calls[-1].role == "strong" and self.calls[-1].error is None:
            return "strong"
        return "weak"

    def headers(self) -> dict[str, str]:
        """Response headers the gateway can attach."""
        h = {"x-tokenomy-cascade-escalated": "true" if self.escalated else "false",
             "x-tokenomy-cascade-threshold": f"{self.threshold:.4g}",
             "x-tokenomy-cascade-served-by": self.served_by}
        if self.score is not None:
            h["x-tokenomy-cascade-score"] = f"{self.score:.4f}"
        return h


async def score_answer(verifier, prompt: str, answer: Any, logprobs: Any = None) -> float | None:
    """Call any supported verifier shape; returns its score (None = no score)."""
    if hasattr(verifier, "score_response"):
        out = verifier.score_response(prompt, answer, logprobs)
    elif hasattr(verifier, "ascore"):
        out = await verifier.ascore(prompt, answer)
    elif hasattr(verifier, "score"):
        out = verifier.score(prompt, answer)
    else:
        out = verifier(prompt, answer)
    if inspect.isawaitable(out):
        out = await out
    return None if out is None else float(out)


async def _timed(role: str, fn: Callable[[], Awaitable[Any]]) -> CascadeCall:
    t0 = time.perf_counter()
    try:
        resp = await fn()
    except Exception as exc:  # noqa: BLE001 - recorded and handled by the policy
        return CascadeCall(role, None, time.perf_counter() - t0, exc)
    return CascadeCall(role, resp, time.perf_counter() - t0)


async def run_cascade(call_weak: Callable[[], Awaitable[Any]], call_strong: Callable[[], Awaitable[Any]],
                      verifier, threshold: float, *, prompt: str = "",
                      text_of: Callable[[Any], Any] = lambda r: r,
                      logprobs_of: Callable[[Any], Any] | None = None) -> CascadeResult:
    weak = await _timed("weak", call_weak)
    calls = [weak]
    score: float | None = None
    verr: str | None = None
    vsec = 0.0
    lp = None
    if weak.error is None:
        t0 = time.perf_counter()
        try:
            lp = logprobs_of(weak.response) if logprobs_of is not None else None
            score = await score_answer(verifier, prompt, text_of(weak.response), lp)
        except Exception as exc:  # noqa: BLE001 - a broken verifier must not fail the request
            verr = f"{type(exc).__name__}: {exc}"
        vsec = time.perf_counter() - t0
        if score is not None and score >= threshold:
            return CascadeResult(weak.response, False, score, threshold, calls, vsec, verr, logprobs=lp)
    strong = await _timed("strong", call_strong)
    calls.append(strong)
    if strong.error is None:
        return CascadeResult(strong.response, True, score, threshold, calls, vsec, verr, logprobs=lp)
    if weak.error is None:
        return CascadeResult(weak.response, True, score, threshold, calls, vsec, verr,
                             f"{type(strong.error).__name__}: {strong.error}", logprobs=lp)
    raise strong.error
