"""In-process CounterStore: budget counters and token buckets behind one lock.

Every check-and-update is done under the lock, so concurrent reservations can never
together overspend a budget (the check and the increment are one atomic step).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

from tokenomy.metering.store import Scope


class InProcessCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[Scope, int] = {}
        self._reserved: dict[Scope, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)

    # budgets -----------------------------------------------------------------------------
    def is_loaded(self, scope: Scope) -> bool:
        return scope in self._spent

    def load(self, scope: Scope, spent_pusd: int) -> None:
        with self._lock:
            self._spent.setdefault(scope, spent_pusd)

    def try_reserve(self, limits: Sequence[tuple[Scope, int]], amount_pusd: int) -> tuple[Scope, int, int, int] | None:
        """Reserve amount on every scope if each stays within its limit; else the first
        offending (scope, limit, spent, reserved) and nothing is reserved."""
        with self._lock:
            for scope, limit in limits:
                spent, reserved = self._spent.get(scope, 0), self._reserved.get(scope, 0)
                if spent + reserved + amount_pusd > limit:
                    return scope, limit, spent, reserved
            for scope, _ in limits:
                self._reserved[scope] = self._reserved.get(scope, 0) + amount_pusd
            return None

    def top_up(self, limits: Sequence[tuple[Scope, int]], held_pusd: int, extra_pusd: int) -> bool:
        """Grow a reservation of held_pusd on these scopes by extra_pusd, on all or none: False
        (nothing changed) if a scope would exceed its limit or no longer holds the reservation."""
        with self._lock:
            for scope, limit in limits:
                spent, reserved = self._spent.get(scope, 0), self._reserved.get(scope, 0)
                if reserved < held_pusd or spent + reserved + extra_pusd > limit:
                    return False
            for scope, _ in limits:
                self._reserved[scope] += extra_pusd
            return True

    def unreserve(self, scopes: Sequence[Scope], amount_pusd: int) -> None:
        with self._lock:
            for scope in scopes:
                left = self._reserved.get(scope, 0) - amount_pusd
                if left > 0:
                    self._reserved[scope] = left
                else:
                    self._reserved.pop(scope, None)

    def add_spent(self, scopes: Sequence[Scope], amount_pusd: int) -> None:
        with self._lock:
            for scope in scopes:
                if scope in self._spent:  # unloaded scopes read the ledger when first needed
                    self._spent[scope] += amount_pusd

    def spent(self, scope: Scope) -> tuple[int, int]:
        with self._lock:
            return self._spent.get(scope, 0), self._reserved.get(scope, 0)

    # rate limits -------------------------------------------------------------------------
    def take(self, buckets: Sequence[tuple[str, float, float, float]], now: float) -> float:
        """buckets: (name, capacity, refill_per_s, amount). Buckets start full and refill
        continuously. Takes from all or none; returns 0.0, or the seconds until all fit
        (inf if an amount exceeds its bucket's capacity)."""
        with self._lock:
            levels = []
            wait = 0.0
            for name, capacity, per_s, amount in buckets:
                tokens, at = self._buckets.get(name, (capacity, now))
                tokens = min(capacity, tokens + max(0.0, now - at) * per_s)
                levels.append((name, tokens))
                if amount > capacity:
                    wait = math.inf
                elif tokens < amount:
                    wait = max(wait, (amount - tokens) / per_s)
            if wait > 0.0:
                for name, tokens in levels:
                    self._buckets[name] = (tokens, now)
                return wait
            for (name, tokens), (_, _, _, amount) in zip(levels, buckets):
                self._buckets[name] = (tokens - amount, now)
            return 0.0
