"""Per-deployment health: a circuit breaker and observed latency EWMAs; global retry budget."""

from __future__ import annotations

import time

CLOSED, HALF_OPEN, OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half-open", OPEN: "open"}


class Breaker:
    """Opens after `threshold` consecutive failures; after `cooldown_s` lets ONE probe through
    (half-open): its success closes the breaker, its failure re-opens it."""

    __slots__ = ("threshold", "cooldown_s", "failures", "state", "opened_at", "probe_in_flight", "probe_at",
                 "clock")

    def __init__(self, threshold: int, cooldown_s: float, clock=time.monotonic):
        self.threshold, self.cooldown_s, self.clock = threshold, cooldown_s, clock
        self.failures = 0
        self.state = CLOSED
        self.opened_at = 0.0
        self.probe_in_flight = False
        self.probe_at = 0.0

    def _probe_stale(self) -> bool:
        # A probe whose outcome never came back (e.g. cancelled) must not block forever.
        return self.probe_in_flight and self.clock() - self.probe_at >= self.cooldown_s

    def available(self) -> bool:
        """Would a request be let through now (without taking the probe slot)?"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self.clock() - self.opened_at >= self.cooldown_s:
            return True
        return self.state == HALF_OPEN and (not self.probe_in_flight or self._probe_stale())

    def acquire(self) -> bool:
        """Take permission to send one request; moves OPEN -> HALF_OPEN after the cool-down."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.cooldown_s:
                return False
            self.state = HALF_OPEN
            self.probe_in_flight = False
        if self.probe_in_flight and not self._probe_stale():
            return False
        self.probe_in_flight = True
        self.probe_at = self.clock()
        return True

    def success(self) -> None:
        self.failures = 0
        self.state = CLOSED
        self.probe_in_flight = False

    def failure(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.state = OPEN
            self.opened_at = self.clock()
        self.probe_in_flight = False


class Ewma:
    __slots__ = ("alpha", "value")

    def __init__(self, alpha: float = 0.2, value: float | None = None):
        self.alpha, self.value = alpha, value

    def update(self, x: float) -> None:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)


class RetryBudget:
    """Global retry budget (as in Finagle/Envoy): each request earns `ratio` retries, a burst of
    `minimum` is always allowed; a retry spends one. Keeps fallbacks from amplifying an outage."""

    __slots__ = ("ratio", "cap", "tokens")

    def __init__(self, ratio: float, minimum: float):
        self.ratio, self.cap, self.tokens = ratio, max(minimum, 1.0) * 10, minimum

    def deposit(self) -> None:
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def try_spend(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
