"""The instants an API accepts: unix seconds a datetime can render (1970-01-01 .. 9999-12-31 UTC).

nan, inf, -1e18 or an age like 99999999d would pass float() and fail later, when a datetime is
built from them (a 500). Every time query parameter is checked here first."""

from __future__ import annotations

import math

MIN_UNIX_S = 0.0  # 1970-01-01T00:00:00Z
MAX_UNIX_S = 253402300799.0  # 9999-12-31T23:59:59Z


def in_range(ts: float) -> bool:
    return math.isfinite(ts) and MIN_UNIX_S <= ts <= MAX_UNIX_S


def out_of_range_message(name: str, raw: str) -> str:
    shown = raw if len(raw) <= 64 else raw[:64] + "..."
    return f"'{name}' is out of range (years 1970-9999): {shown!r}"
