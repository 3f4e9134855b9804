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
from collections import deque
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


def check_caps(plan: Plan, usage_window: UsageWindow) -> CapDecision:
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
    reported reset time is never early."""

    def __init__(self, horizon_seconds: float, bucket_seconds: float = 60.0):
        self.horizon_seconds = float(horizon_seconds)
        self.bucket_seconds = float(bucket_seconds)
        self._entries: deque[list] = deque()  # [ts, requests, tokens]

    def add(self, ts: float, *, requests: int = 1, tokens: int = 0) -> None:
        stamp = ts
        if self.bucket_seconds > 0:
            stamp = (ts // self.bucket_seconds + 1) * self.bucket_seconds
        if self._entries and self._entries[-1][0] == stamp:
            self._entries[-1][1] += requests
            self._entries[-1][2] += tokens
        elif self._entries and stamp < self._entries[-1][0]:
            # out of order: merge into the first entry not older than it
            for e in self._entries:
                if e[0] >= stamp:
                    e[1] += requests
                    e[2] += tokens
                    break
        else:
            self._entries.append([stamp, requests, tokens])
        self._prune(ts)

    def _prune(self, now: float) -> None:
        while self._entries and self._entries[0][0] <= now - self.horizon_seconds:
            self._entries.popleft()

    def window(self, now: float) -> UsageWindow:
        self._prune(now)
        entries = list(self._entries)
        return UsageWindow(now, tuple(e[0] for e in entries), tuple(e[1] for e in entries),
                           tuple(e[2] for e in entries))
