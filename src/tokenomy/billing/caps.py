"""Rolling-window usage caps: a counter, an immutable window snapshot, and the pure decision.

Gateway use (per tenant):
    counter = RollingCounter(horizon_seconds=max_window_seconds(plan))
    decision = check_caps(plan, counter.window(now))   # before the request
    ...                                                  # block -> 429 with Retry-After = reset_at - now
    counter.add(now, requests=1, tokens=input + output)  # after it
A cap is reached when usage in the last `window` seconds is >= its limit. With several caps
reached the strictest action wins: block > downgrade > overage > allow.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Literal

from tokenomy.billing.plans import Cap, Plan

Action = Literal["allow", "block", "downgrade", "overage"]
_RANK = {"allow": 0, "overage": 1, "downgrade": 2, "block": 3}


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """Usage entries (ts, requests, tokens) in time order, seen at `now`."""

    now: float
    ts: tuple[float, ...] = ()
    requests: tuple[int, ...] = ()
    tokens: tuple[int, ...] = ()

    def _values(self, unit: str) -> tuple[int, ...]:
        return self.requests if unit == "requests" else self.tokens

    def used(self, window_seconds: float, unit: str) -> int:
        """Usage with ts in (now - window, now]."""
        i = bisect.bisect_right(self.ts, self.now - window_seconds)
        return sum(self._values(unit)[i:])

    def reset_at(self, window_seconds: float, unit: str, limit: int) -> float:
        """Earliest time at which usage in the window falls below `limit` (if nothing new is added)."""
        values = self._values(unit)
        i = bisect.bisect_right(self.ts, self.now - window_seconds)
        used = sum(values[i:])
        for j in range(i, len(values)):
            if used < limit:
                break
            used -= values[j]
            if used < limit:
                return self.ts[j] + window_seconds
        return self.now


@dataclass(frozen=True, slots=True)
class CapDecision:
    action: Action
    reset_at: float | None = None  # when the binding cap frees up (block: the time to retry)
    downgrade_group: str | None = None
    message: str = ""
    cap: Cap | None = None  # the cap that decided (None when allowed)

    def retry_after_seconds(self, now: float) -> float | None:
        return None if self.reset_at is None else max(0.0, self.reset_at - now)


def max_window_seconds(plan: Plan) -> float:
    return max((c.window_seconds for c in plan.caps), default=0.0)


def check_caps(plan: Plan, usage_window: "UsageWindow | CounterView") -> CapDecision:
    """Pure: what to do with the next request of a tenant on `plan`, given its recent usage."""
    best = CapDecision("allow")
    for cap in plan.caps:
        used = usage_window.used(cap.window_seconds, cap.unit)
        if used < cap.limit:
            continue
        reset = usage_window.reset_at(cap.window_seconds, cap.unit, cap.limit)
        if _RANK[cap.at_cap] > _RANK[best.action] or (
                cap.at_cap == best.action == "block" and reset > (best.reset_at or 0)):
            best = CapDecision(cap.at_cap, reset, cap.downgrade_group if cap.at_cap == "downgrade" else None,
                               _message(plan, cap, used, reset), cap)
    return best


def _message(plan: Plan, cap: Cap, used: int, reset: float) -> str:
    from tokenomy.billing.periods import iso

    what = {"block": f"blocked until {iso(reset)}",
            "downgrade": f"served by model group '{cap.downgrade_group}' until {iso(reset)}",
            "overage": f"billed as overage until {iso(reset)}"}[cap.at_cap]
    return f"plan '{plan.name}' cap of {cap.limit} {cap.unit} per {cap.window} reached ({used} used); {what}"


class RollingCounter:
    """In-process rolling usage of one tenant, bucketed (bucket_seconds) so memory stays bounded.
    Entries older than horizon_seconds are dropped. Buckets are stamped with their end, so the
    reported reset time is never early. Usage is kept as prefix sums, so `view(now)` answers the
    cap checks in O(log n) (a week of 60 s buckets is 10,080 entries: the gateway's hot path)."""

    _COMPACT_MIN = 1024

    def __init__(self, horizon_seconds: float, bucket_seconds: float = 60.0):
        self.horizon_seconds = float(horizon_seconds)
        self.bucket_seconds = float(bucket_seconds)
        self._ts: list[float] = []  # bucket stamps, ascending
        self._creq: list[int] = []  # cumulative requests through each entry
        self._ctok: list[int] = []  # cumulative tokens through each entry
        self._lo = 0  # first live entry (older ones are pruned, compacted away lazily)

    def add(self, ts: float, *, requests: int = 1, tokens: int = 0) -> None:
        stamp = ts
        if self.bucket_seconds > 0:
            stamp = (ts // self.bucket_seconds + 1) * self.bucket_seconds
        n = len(self._ts)
        live = n > self._lo
        if not live and n:  # everything expired: start afresh (keeps stamps ascending)
            self._ts, self._creq, self._ctok, self._lo, n = [], [], [], 0, 0
        if live and self._ts[-1] == stamp:
            self._creq[-1] += requests
            self._ctok[-1] += tokens
        elif live and stamp < self._ts[-1]:
            # out of order: merge into the first entry not older than it (sums after it shift)
            for k in range(bisect.bisect_left(self._ts, stamp, self._lo), n):
                self._creq[k] += requests
                self._ctok[k] += tokens
        else:
            self._ts.append(stamp)
            self._creq.append((self._creq[-1] if n else 0) + requests)
            self._ctok.append((self._ctok[-1] if n else 0) + tokens)
        self._prune(ts)

    def _prune(self, now: float) -> None:
        self._lo = bisect.bisect_right(self._ts, now - self.horizon_seconds, self._lo)
        if self._lo >= self._COMPACT_MIN and self._lo * 2 >= len(self._ts):
            lo = self._lo
            r0, t0 = self._creq[lo - 1], self._ctok[lo - 1]
            self._ts = self._ts[lo:]
            self._creq = [c - r0 for c in self._creq[lo:]]
            self._ctok = [c - t0 for c in self._ctok[lo:]]
            self._lo = 0

    def window(self, now: float) -> UsageWindow:
        self._prune(now)
        lo, n = self._lo, len(self._ts)

        def values(cum: list[int]) -> tuple[int, ...]:
            return tuple(cum[k] - (cum[k - 1] if k > 0 else 0) for k in range(lo, n))

        return UsageWindow(now, tuple(self._ts[lo:]), values(self._creq), values(self._ctok))

    def view(self, now: float, pending_requests: int = 0) -> "CounterView":
        """The usage at `now` for `check_caps` in O(log n); `pending_requests` (admitted, not yet
        recorded) count as made now, after every recorded entry."""
        self._prune(now)
        return CounterView(self, now, pending_requests)


class CounterView:
    """What check_caps needs from a UsageWindow (`used`, `reset_at`), from a RollingCounter's prefix sums."""

    __slots__ = ("_c", "now", "pending")

    def __init__(self, counter: RollingCounter, now: float, pending_requests: int = 0):
        self._c, self.now, self.pending = counter, now, pending_requests

    def _cum(self, unit: str) -> tuple[list[int], int]:
        if unit == "requests":
            return self._c._creq, self.pending
        return self._c._ctok, 0

    def used(self, window_seconds: float, unit: str) -> int:
        c = self._c
        cum, extra = self._cum(unit)
        if not cum:
            return extra
        i = bisect.bisect_right(c._ts, self.now - window_seconds, c._lo)
        return cum[-1] - (cum[i - 1] if i > 0 else 0) + extra

    def reset_at(self, window_seconds: float, unit: str, limit: int) -> float:
        """As UsageWindow.reset_at: when, dropping the oldest usage first, the window falls below limit."""
        if self.used(window_seconds, unit) < limit:
            return self.now
        c = self._c
        cum, extra = self._cum(unit)
        i = bisect.bisect_right(c._ts, self.now - window_seconds, c._lo)
        # the first entry j >= i such that usage after it (plus pending) is below the limit
        j = bisect.bisect_right(cum, cum[-1] + extra - limit, i) if cum else 0
        if j < len(c._ts):
            return c._ts[j] + window_seconds
        return self.now + window_seconds  # the pending requests alone reach the limit
