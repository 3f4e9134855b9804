"""One failure classifier for unary and stream attempts, and the retry schedule.

An attempt fails before the client saw a byte in one of five ways; the kind decides what may
follow:
    connection (refused, reset, DNS)   -> fallback, or the same deployment again after a backoff
    http_429                           -> fallback, or the same deployment after its Retry-After
    http_5xx                           -> fallback, or the same deployment after a backoff
    timeout (no answer / first byte)   -> fallback only (waiting again would double the wait)
    garbage (not the OpenAI protocol)  -> fallback only (it will answer garbage again)

Order of attempts: the ranked deployments first (a fallback is an immediate retry elsewhere),
then the deployments whose failure allows it again, with exponential backoff and jitter
(`retry.backoff_base_s` x 2^k, up to `retry.backoff_max_s`, times a uniform factor in [0.5, 1]).
Every attempt after the first spends one token of the global retry budget; at most
`retry.max_attempts` per request. A Retry-After longer than `retry.retry_after_max_s` is not
waited for (the client gets the 429 and its Retry-After instead). `sleep` and `random` are
injected so tests run the schedule without waiting and deterministically.
"""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from tokenomy.gateway.lifecycle.state import Failure


def classify_status(status: int, body: bytes, retry_after: str | None) -> Failure | None:
    """An upstream HTTP status as a failure (None: not one; 4xx other than 429 pass through)."""
    if status == 429:
        return Failure("http_429", f"HTTP 429: {body[:200]!r}", True, parse_retry_after_s(retry_after), retry_after)
    if status >= 500:
        return Failure("http_5xx", f"HTTP {status}: {body[:200]!r}", True)
    return None


def classify_exception(exc: BaseException, timeout_message: str) -> Failure | None:
    """A transport exception of an attempt as a failure (None: not a transport failure)."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return Failure("timeout", timeout_message, False)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return Failure("connection", f"{type(exc).__name__}: {exc}", True)
    return None


def garbage(message: str) -> Failure:
    return Failure("garbage", message, False)


def parse_retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds form; an HTTP date or junk counts as absent)."""
    if not value:
        return None
    try:
        s = float(value)
    except ValueError:
        return None
    return s if 0 <= s < 1e9 else None


@dataclass(slots=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0
    retry_after_max_s: float = 2.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = field(default_factory=lambda: _random.Random().random)

    def delay_s(self, f: Failure, previous_failures: int) -> float | None:
        """Wait before trying a deployment again after `f` (its `previous_failures`-th failure in
        this request, 1-based); None: do not try it again."""
        if not f.retry_same:
            return None
        if f.retry_after_s is not None:
            return f.retry_after_s if f.retry_after_s <= self.retry_after_max_s else None
        base = min(self.backoff_max_s, self.backoff_base_s * (2 ** (previous_failures - 1)))
        return base * (0.5 + 0.5 * self.random())
