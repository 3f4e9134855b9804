"""Plan caps shared by gateway replicas: rolling-window usage per tenant in Redis, so N
replicas together admit at most a cap's limit (not N x the limit).

Layout (under the counters' key prefix), per tenant T and distinct cap window W seconds:
  cap|T|w<W>   hash of time buckets: r<stamp> requests, t<stamp> tokens. A bucket is
               `bucket_seconds(W)` wide (W/240, at least 60 s) and stamped with its end, so
               usage counts until its bucket's end + W: never early, at most W/240 late.
  cap|T|p      in-flight requests per replica (p:<replica>), admitted and not yet recorded;
               a dead replica's (heartbeat gone) are dropped by the next check.
  cap|T|ready  '1' once T's recent usage was loaded from the ledger (a lease while loading).

check (one Lua call, atomic): drops expired buckets, sums each window, counts the live
in-flight requests as made now, and when no `block` cap is reached takes an in-flight slot.
The full decision (block, downgrade, overage, reset time, message) is `check_caps` on the
returned sums, so it reads exactly as the in-process one. record/release are queued in
order on the counter store's settler (one script call per batch, exactly once, kept while
Redis is away): usage lands before the slot is released, so it is never counted neither.

`acheck` is the same on the store's redis.asyncio client (the request path: the event loop
never waits on Redis; a tenant's first load reads the ledger on a worker thread).

Redis down: the counter store's fail mode - "closed" raises CountersUnavailable (503), "open"
returns None and the gateway falls back to its in-process counters (caps per replica).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterable
from typing import Any

from tokenomy.billing.caps import CapDecision, check_caps
from tokenomy.billing.plans import Plan

BUCKETS_PER_WINDOW = 240
MIN_BUCKET_S = 60
READY_MARGIN_S = 86400  # `ready` outlives the buckets it vouches for (requests end after their check)
LOAD_LEASE_MS = 10_000
PENDING_TTL_S = 86400

_CHECK = """
local now = tonumber(ARGV[1])
local me = 'p:' .. ARGV[2]
local hbp = ARGV[3]
if redis.call('GET', KEYS[2]) ~= '1' then return {-1} end
redis.call('EXPIRE', KEYS[2], ARGV[4])
local pending = 0
local h = redis.call('HGETALL', KEYS[1])
for j = 1, #h, 2 do
  local f, v = h[j], h[j + 1]
  if f == me or redis.call('EXISTS', hbp .. string.sub(f, 3)) == 1 then
    pending = pending + tonumber(v)
  else
    redis.call('HDEL', KEYS[1], f)  -- a dead replica's in-flight requests
  end
end
local nwin = tonumber(ARGV[5])
local out = {0, pending}
local blocked = false
local i = 6
for k = 1, nwin do
  local w, rblock, tblock = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local rdetail, tdetail = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  i = i + 5
  local key = KEYS[2 + k]
  local cutoff = now - w
  local hw = redis.call('HGETALL', key)
  local ur, ut = 0, 0
  local stamps, seen, req, tok = {}, {}, {}, {}
  for j = 1, #hw, 2 do
    local f, v = hw[j], hw[j + 1]
    local stamp = tonumber(string.sub(f, 2))
    if stamp <= cutoff then
      redis.call('HDEL', key, f)
    else
      if not seen[stamp] then seen[stamp] = true; stamps[#stamps + 1] = stamp end
      if string.sub(f, 1, 1) == 'r' then req[stamp] = tonumber(v); ur = ur + tonumber(v)
      else tok[stamp] = tonumber(v); ut = ut + tonumber(v) end
    end
  end
  if (rblock >= 0 and ur + pending >= rblock) or (tblock >= 0 and ut >= tblock) then blocked = true end
  out[#out + 1] = string.format('%.0f', ur)
  out[#out + 1] = string.format('%.0f', ut)
  if (rdetail >= 0 and ur + pending >= rdetail) or (tdetail >= 0 and ut >= tdetail) then
    table.sort(stamps)
    local flat = {}
    for _, s in ipairs(stamps) do
      flat[#flat + 1] = string.format('%.0f', s)
      flat[#flat + 1] = string.format('%.0f', req[s] or 0)
      flat[#flat + 1] = string.format('%.0f', tok[s] or 0)
    end
    out[#out + 1] = flat
  else
    out[#out + 1] = {}
  end
end
if not blocked and ARGV[#ARGV] == '1' then
  redis.call('HINCRBY', KEYS[1], me, 1)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  out[1] = 1
end
return out
"""

# Load a tenant's recent usage from the ledger: begin (lease, clear stale buckets), then add.
_BEGIN = """
local state = redis.call('GET', KEYS[1])
if state == '1' then return 0 end
if state then return 2 end
redis.call('SET', KEYS[1], 'L' .. ARGV[1], 'PX', ARGV[2])
for k = 2, #KEYS do redis.call('DEL', KEYS[k]) end
return 1
"""

_FINISH = """
if redis.call('GET', KEYS[1]) ~= 'L' .. ARGV[1] then return 0 end
local i = 3
for k = 2, #KEYS do
  local n = tonumber(ARGV[i]); i = i + 1
  for j = 1, n do
    local stamp, r, t = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    if r ~= '0' then redis.call('HINCRBY', KEYS[k], 'r' .. stamp, r) end
    if t ~= '0' then redis.call('HINCRBY', KEYS[k], 't' .. stamp, t) end
  end
  if n > 0 then redis.call('EXPIRE', KEYS[k], ARGV[2]) end
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
return 1
"""

_ABORT = """
if redis.call('GET', KEYS[1]) == 'L' .. ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


def bucket_seconds(window_seconds: float) -> int:
    """Width of a window's buckets: 1/240 of it, at least 60 s (whole seconds)."""
    return max(MIN_BUCKET_S, math.ceil(window_seconds / BUCKETS_PER_WINDOW))


def bucket_stamp(ts: float, width: int) -> int:
    """The end of the bucket holding ts."""
    return (math.floor(ts / width) + 1) * width


class SharedView:
    """What check_caps needs (`used`, `reset_at`) from one Redis check: per window the summed
    requests and tokens, the buckets (stamp, requests, tokens) when a cap may be reached, and
    the in-flight requests (counted as made now, like CounterView)."""

    def __init__(self, now: float, pending: int, sums: dict[float, tuple[int, int]],
                 buckets: dict[float, list[tuple[int, int, int]]]):
        self.now, self.pending, self._sums, self._buckets = now, pending, sums, buckets

    def used(self, window_seconds: float, unit: str) -> int:
        req, tok = self._sums.get(float(window_seconds), (0, 0))
        return req + self.pending if unit == "requests" else tok

    def reset_at(self, window_seconds: float, unit: str, limit: int) -> float:
        used = self.used(window_seconds, unit)
        if used < limit:
            return self.now
        for stamp, req, tok in self._buckets.get(float(window_seconds), []):  # oldest first
            used -= req if unit == "requests" else tok
            if used < limit:
                return stamp + window_seconds
        return self.now + window_seconds  # the in-flight requests alone reach the limit


class RedisCaps:
    """Shared rolling-window cap counters over a RedisCounterStore (its connection, replica id,
    heartbeat, settler and fail mode). `windows`: every cap window (seconds) of the plan book."""

    def __init__(self, store: Any, windows: Iterable[float], source: Any = None):
        self.store = store
        self.windows = sorted({float(w) for w in windows})
        self.horizon_s = max(self.windows, default=0.0)
        self.source = source  # ledger events (billing.ledger_source), to load a tenant's usage once
        r = store._r
        self._check = r.register_script(_CHECK)
        self._begin = r.register_script(_BEGIN)
        self._finish = r.register_script(_FINISH)
        self._abort = r.register_script(_ABORT)
        self._ready_ttl = int(self.horizon_s + bucket_seconds(self.horizon_s) + READY_MARGIN_S)

    def _key(self, tenant: str, part: str) -> str:
        return f"{self.store.prefix}cap|{tenant}|{part}"

    def _wkey(self, tenant: str, w: float) -> str:
        return self._key(tenant, f"w{w:.0f}")

    def check(self, tenant: str, plan: Plan, now: float) -> tuple[CapDecision, bool] | None:
        """(decision, holds an in-flight slot) atomically across replicas; None when Redis is
        down and the fail mode is open (the caller uses its local counters); raises
        CountersUnavailable when it is down and the fail mode is closed."""
        windows, keys, args = self._check_call(tenant, plan, now)

        def run():
            for _ in range(3):
                res = self._check(keys=keys, args=args)
                if int(res[0]) >= 0:
                    return self._decide(tenant, plan, now, windows, res)
                self._load(tenant, now)
            raise self.store._unavailable(RuntimeError("cap counters kept disappearing"))

        return self.store._call(run, lambda: None)

    async def acheck(self, tenant: str, plan: Plan, now: float) -> tuple[CapDecision, bool] | None:
        """check on the async client: a paused Redis delays this request only, not the loop."""
        if not getattr(self.store, "_async_ok", False):
            return await asyncio.to_thread(self.check, tenant, plan, now)
        windows, keys, args = self._check_call(tenant, plan, now)

        async def run():
            for _ in range(3):
                res = await self.store.aeval("cap_check", _CHECK, keys, args)
                if int(res[0]) >= 0:
                    return self._decide(tenant, plan, now, windows, res)
                await self._aload(tenant, now)
            raise self.store._unavailable(RuntimeError("cap counters kept disappearing"))

        async def fallback():
            return None

        return await self.store.acall(run, fallback)

    def _check_call(self, tenant: str, plan: Plan, now: float) -> tuple[list[float], list, list]:
        windows = sorted({c.window_seconds for c in plan.caps})
        keys = [self._key(tenant, "p"), self._key(tenant, "ready")] + [self._wkey(tenant, w) for w in windows]
        args: list = [repr(float(now)), self.store.replica, self.store.prefix + "hb:",
                      max(self._ready_ttl, PENDING_TTL_S), len(windows)]
        for w in windows:
            caps = [c for c in plan.caps if c.window_seconds == w]

            def smallest(unit: str, block_only: bool) -> int:
                limits = [c.limit for c in caps if c.unit == unit and (c.at_cap == "block" or not block_only)]
                return min(limits) if limits else -1

            args += [repr(float(w)), smallest("requests", True), smallest("tokens", True),
                     smallest("requests", False), smallest("tokens", False)]
        args.append("1")
        return windows, keys, args

    def _decide(self, tenant: str, plan: Plan, now: float, windows: list[float], res: list) -> tuple[CapDecision, bool]:
        admitted, pending = int(res[0]) == 1, int(res[1])
        sums, buckets = {}, {}
        for k, w in enumerate(windows):
            ur, ut, flat = res[2 + 3 * k], res[3 + 3 * k], res[4 + 3 * k]
            sums[w] = (int(ur), int(ut))
            buckets[w] = [(int(flat[j]), int(flat[j + 1]), int(flat[j + 2])) for j in range(0, len(flat), 3)]
        decision = check_caps(plan, SharedView(now, pending, sums, buckets))
        if admitted and decision.action == "block":  # pragma: no cover - same sums, same rule as the script
            self.release(tenant)
            return decision, False
        return decision, admitted

    def _load(self, tenant: str, now: float) -> None:
        """Load the tenant's usage over the horizon from the ledger, once across replicas."""
        keys = [self._key(tenant, "ready")] + [self._wkey(tenant, w) for w in self.windows]
        deadline = time.monotonic() + LOAD_LEASE_MS / 1000 + 5
        while True:
            token = uuid.uuid4().hex
            state = int(self._begin(keys=keys, args=[token, LOAD_LEASE_MS]))
            if state == 0:
                return
            if state == 1:
                try:
                    events = self._recent_events(tenant, now)
                except Exception as exc:
                    self._abort(keys=keys[:1], args=[token])  # let another try at once
                    raise self._load_failed(tenant, exc) from None
                if int(self._finish(keys=keys, args=self._finish_args(token, events, now))) == 1:
                    return
                continue  # the lease expired under us: load again
            if time.monotonic() > deadline:
                raise self.store._unavailable(TimeoutError(f"loading the caps of tenant '{tenant}' took too long"))
            time.sleep(0.005)  # another replica is loading it

    async def _aload(self, tenant: str, now: float) -> None:
        """_load on the async client; the ledger read on a worker thread."""
        keys = [self._key(tenant, "ready")] + [self._wkey(tenant, w) for w in self.windows]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOAD_LEASE_MS / 1000 + 5
        while True:
            token = uuid.uuid4().hex
            state = int(await self.store.aeval("cap_begin", _BEGIN, keys, [token, LOAD_LEASE_MS]))
            if state == 0:
                return
            if state == 1:
                try:
                    events = await asyncio.to_thread(self._recent_events, tenant, now)
                except Exception as exc:
                    await self.store.aeval("cap_abort", _ABORT, keys[:1], [token])
                    raise self._load_failed(tenant, exc) from None
                finished = await self.store.aeval("cap_finish", _FINISH, keys, self._finish_args(token, events, now))
                if int(finished) == 1:
                    return
                continue
            if loop.time() > deadline:
                raise self.store._unavailable(TimeoutError(f"loading the caps of tenant '{tenant}' took too long"))
            await asyncio.sleep(0.005)

    def _recent_events(self, tenant: str, now: float) -> list:
        return [] if self.source is None else self.source.events(tenant, now - self.horizon_s, now + 1e-6)

    @staticmethod
    def _load_failed(tenant: str, exc: BaseException):
        from tokenomy.metering.redis_counters import CountersUnavailable

        return CountersUnavailable(f"cannot load the plan-cap usage of tenant '{tenant}' from the ledger: "
                                   f"{exc}; retry shortly", retry_after_s=1.0)

    def _finish_args(self, token: str, events: list, now: float) -> list:
        args: list = [token, self._ready_ttl]
        for w in self.windows:
            width = bucket_seconds(w)
            acc: dict[int, list[int]] = {}
            for e in events:
                if e.ts > now - w:
                    a = acc.setdefault(bucket_stamp(e.ts, width), [0, 0])
                    a[0] += 1
                    a[1] += int(e.tokens)
            args.append(len(acc))
            for stamp, (req, tok) in sorted(acc.items()):
                args += [stamp, req, tok]
        return args

    def record(self, tenant: str, ts: float, tokens: int, requests: int = 1) -> None:
        """Count a committed event in every window (queued: never waits, never raises)."""
        for w in self.windows:
            width = bucket_seconds(w)
            ttl_ms = int((w + width + MIN_BUCKET_S) * 1000)
            self.store._defer("cap", [self._wkey(tenant, w)],
                              f"{bucket_stamp(ts, width)}:{int(requests)}:{int(tokens)}:{ttl_ms}")

    def release(self, tenant: str) -> None:
        """Free an in-flight slot taken by check (queued behind this replica's records)."""
        self.store._defer("cap_release", [self._key(tenant, "p")], 1)

    def close(self) -> None:
        self.store.close()


__all__ = ["RedisCaps", "SharedView", "bucket_seconds", "bucket_stamp"]
