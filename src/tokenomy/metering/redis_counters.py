"""A CounterStore on Redis, shared by gateway replicas: every check-and-update is one Lua
script, so replicas together can never overspend a budget or exceed a rate limit.

Budgets: one hash per scope (kind|subject|period|period_key) with `spent`, `ready` and one
`r:<replica>` field per replica holding its in-flight reservations. A replica that dies stops
refreshing its heartbeat key; its reservations are dropped by the next reservation script,
so a crash cannot leak budget. The period id is part of the key: a new day/month is a new
key (with an expiry), so there is no reset to race on - nothing is ever reset.

Lazy load of the committed spend from the ledger, without double counting across replicas:
  begin (Lua): if not ready, take a lease (SET NX PX) and set spent = 0; else someone loads;
  the lease holder reads the ledger and adds it (finish, Lua, only if it still holds the lease).
add_spent increments only loaded (or loading) scopes. An event committed before `begin` is
in the ledger read; one settled after `begin` is incremented - at worst both (counted twice,
for a millisecond's window: conservative), never neither.

Money: counters are exact int64 pico-USD (HINCRBY); the budget comparison inside Lua uses
doubles, exact up to 2^53 pUSD (~$9,007 per scope) and within 1e-16 relative beyond.

Rate limits: token buckets refilled by Redis server time (replicas' clocks do not matter).

Settlements (add spent, then release the reservation) never wait on Redis: they are queued
in order and applied by a background thread in one Lua call per batch (so a commit batch of
N events costs one round trip, not 2N), and flushed before this replica's next read.

Async path (the gateway's request path): `atry_reserve`, `atop_up`, `aspent`, `atake` run the
same scripts on a `redis.asyncio` client of the running loop, so a slow or paused Redis delays
only the requests that need it, never the event loop; ledger reads for a lazy load run on a
worker thread. They never replay queued settlements inline (the settler thread does, woken).

Redis down: fail_mode "closed" raises CountersUnavailable (503, clear message) from
reserve/check_rate; "open" falls back to in-process counters (limits become per replica)
and retries Redis after `retry_s`. Queued settlements stay queued while Redis is away and
are applied when it returns, so no spend is lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from tokenomy.metering.counters import InProcessCounters
from tokenomy.metering.errors import MeteringError
from tokenomy.metering.periods import period_bounds
from tokenomy.metering.store import Scope

log = logging.getLogger(__name__)

FAIL_MODES = ("closed", "open")
HEARTBEAT_TTL_MS = 30_000
LOAD_LEASE_MS = 10_000
PERIOD_GRACE_S = 2 * 86400  # keep a finished period's counters a while for late settlements
# A TTL, not an absolute EXPIREAT: Redis applies either against its own clock, and the period's end
# is on the gateway's (injectable) clock; an end already past must still keep the key for the grace.

_RESERVE = """
local amount = tonumber(ARGV[1])
local me = 'r:' .. ARGV[2]
local hbp = ARGV[3]
redis.call('SET', hbp .. ARGV[2], '1', 'PX', ARGV[4])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[4 + i])
  local h = redis.call('HGETALL', key)
  local spent, spent_s, ready, reserved = 0, '0', false, 0
  for j = 1, #h, 2 do
    local f, v = h[j], h[j + 1]
    if f == 'spent' then spent = tonumber(v); spent_s = v
    elseif f == 'ready' then ready = (v == '1')
    elseif string.sub(f, 1, 2) == 'r:' then
      if f == me or redis.call('EXISTS', hbp .. string.sub(f, 3)) == 1 then
        reserved = reserved + tonumber(v)
      else
        redis.call('HDEL', key, f)  -- a dead replica's reservations
      end
    end
  end
  if not ready then return {-1, i} end
  if spent + reserved + amount > limit then
    return {0, i, spent_s, string.format('%.0f', reserved)}
  end
end
for _, key in ipairs(KEYS) do redis.call('HINCRBY', key, me, ARGV[1]) end
return {1}
"""

# Grow this replica's held reservation: ARGV = extra, replica, heartbeat prefix, heartbeat TTL,
# held amount, then one limit per key. All or none: {1}, or {0, i} (key i would exceed its
# limit) or {-1, i} (key i does not hold this replica's reservation any more, e.g. lost).
_TOP_UP = """
local extra = tonumber(ARGV[1])
local me = 'r:' .. ARGV[2]
local hbp = ARGV[3]
local held = tonumber(ARGV[5])
redis.call('SET', hbp .. ARGV[2], '1', 'PX', ARGV[4])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[5 + i])
  local h = redis.call('HGETALL', key)
  local spent, ready, reserved, mine = 0, false, 0, 0
  for j = 1, #h, 2 do
    local f, v = h[j], h[j + 1]
    if f == 'spent' then spent = tonumber(v)
    elseif f == 'ready' then ready = (v == '1')
    elseif string.sub(f, 1, 2) == 'r:' then
      if f == me then mine = tonumber(v); reserved = reserved + mine
      elseif redis.call('EXISTS', hbp .. string.sub(f, 3)) == 1 then reserved = reserved + tonumber(v)
      else redis.call('HDEL', key, f) end
    end
  end
  if not ready or mine < held then return {-1, i} end
  if spent + reserved + extra > limit then return {0, i} end
end
for _, key in ipairs(KEYS) do redis.call('HINCRBY', key, me, ARGV[1]) end
return {1}
"""

# Settlements in order, atomically, in one call: ARGV = replica, the replica's marker key,
# batch sequence number, then per op (kind, nkeys, amount) with kind 's' (add spent, loaded
# scopes only), 'u' (release this replica's reservation), 'c' (plan cap usage) or 'p' (release
# this replica's in-flight plan-cap request: billing.redis_caps); KEYS are the ops' keys in order.
# A replica's batches go in sequence; the marker holds the last one applied, so a resend of
# a batch whose reply was lost with the connection is a no-op: exactly once.
# pcall: one bad op never aborts the rest.
_SETTLE = """
if tonumber(ARGV[3]) <= tonumber(redis.call('GET', ARGV[2]) or '0') then return 0 end
redis.call('SET', ARGV[2], ARGV[3], 'EX', 86400)
local me = 'r:' .. ARGV[1]
local k, i = 1, 4
while i <= #ARGV do
  local kind, n, amount = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  for j = 0, n - 1 do
    local key = KEYS[k + j]
    if kind == 's' then
      if redis.call('HEXISTS', key, 'spent') == 1 then redis.pcall('HINCRBY', key, 'spent', amount) end
    elseif kind == 'u' then
      local left = redis.pcall('HINCRBY', key, me, -tonumber(amount))
      if type(left) == 'number' and left <= 0 then redis.call('HDEL', key, me) end
    elseif kind == 'c' then  -- plan cap usage: 'stamp:requests:tokens:ttl_ms' into a window's buckets
      local stamp, req, tok, ttl = string.match(amount, '^(%d+):(%d+):(%d+):(%d+)$')
      if stamp then
        if req ~= '0' then redis.pcall('HINCRBY', key, 'r' .. stamp, req) end
        if tok ~= '0' then redis.pcall('HINCRBY', key, 't' .. stamp, tok) end
        redis.call('PEXPIRE', key, ttl)
      end
    elseif kind == 'p' then  -- release this replica's in-flight plan-cap requests
      local left = redis.pcall('HINCRBY', key, 'p:' .. ARGV[1], -tonumber(amount))
      if type(left) == 'number' and left <= 0 then redis.call('HDEL', key, 'p:' .. ARGV[1]) end
    end
  end
  k = k + n
  i = i + 3
end
return 1
"""
SETTLE_CHUNK = 256  # ops per call
_OP_KINDS = {"spent": "s", "unreserve": "u", "cap": "c", "cap_release": "p"}

_SPENT = """
local hbp = ARGV[1]
local h = redis.call('HGETALL', KEYS[1])
local spent, ready, reserved = '0', false, 0
for j = 1, #h, 2 do
  local f, v = h[j], h[j + 1]
  if f == 'spent' then spent = v
  elseif f == 'ready' then ready = (v == '1')
  elseif string.sub(f, 1, 2) == 'r:' and redis.call('EXISTS', hbp .. string.sub(f, 3)) == 1 then
    reserved = reserved + tonumber(v)
  end
end
if not ready then return {-1} end
return {1, spent, string.format('%.0f', reserved)}
"""

_BEGIN_LOAD = """
if redis.call('HGET', KEYS[1], 'ready') == '1' then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('HSET', KEYS[1], 'spent', 0)
  if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
  return 1
end
return 2
"""

_FINISH_LOAD = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
redis.call('HSET', KEYS[1], 'ready', 1)
redis.call('DEL', KEYS[2])
return 1
"""

_ABORT_LOAD = """
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

# buckets: ARGV[1] '1' = server time, else ARGV[2] is now; then (capacity, per_s, amount) each
_TAKE = """
local now
if ARGV[1] == '1' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[2])
end
local levels, wait, inf = {}, 0, false
for i, key in ipairs(KEYS) do
  local cap, rate, amount = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local st = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(st[1]), tonumber(st[2])
  if tokens == nil or at == nil then tokens = cap; at = now end
  tokens = math.min(cap, tokens + math.max(0, now - at) * rate)
  levels[i] = tokens
  if amount > cap then inf = true
  elseif tokens < amount then wait = math.max(wait, (amount - tokens) / rate) end
end
for i, key in ipairs(KEYS) do
  local cap, rate, amount = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local left = levels[i]
  if wait == 0 and not inf then left = left - amount end
  redis.call('HSET', key, 'tokens', string.format('%.17g', left), 'at', string.format('%.17g', now))
  redis.call('PEXPIRE', key, math.ceil(cap / rate * 1000) + 60000)
end
if inf then return 'inf' end
return string.format('%.17g', wait)
"""


class CountersUnavailable(MeteringError):
    """The shared counter store cannot be reached and fail_mode is 'closed'."""

    status = 503
    code = "service_unavailable"


def scope_bounds(scope: Scope) -> tuple[float | None, float | None]:
    """[start, end) of a budget scope's period, from its period key."""
    _, _, period, pkey = scope
    if period == "total":
        return None, None
    fmt = "%Y-%m-%d" if period == "daily" else "%Y-%m"
    start = datetime.strptime(pkey, fmt).replace(tzinfo=timezone.utc).timestamp()
    return period_bounds(period, start)


def period_ttl_s(scope: Scope, now_s: float) -> int:
    """TTL of a period's counter at `now_s`: until the period ends + PERIOD_GRACE_S, never less
    than the grace (a period that already ended still takes late settlements); 0 = no expiry."""
    end = scope_bounds(scope)[1]
    if end is None:
        return 0
    return int(math.ceil(max(end - now_s, 0.0))) + PERIOD_GRACE_S


SpendReader = Callable[[Scope], int]


class RedisCounterStore:
    def __init__(self, url: str, *, reader: SpendReader | None = None, prefix: str = "tokenomy:",
                 fail_mode: str = "closed", server_time: bool = True, replica: str | None = None,
                 timeout_s: float = 1.0, retry_s: float = 1.0, client=None,
                 clock: Callable[[], float] = time.time):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if fail_mode not in FAIL_MODES:
            from tokenomy.errors import TokenomyError

            raise TokenomyError(f"redis fail mode must be one of {', '.join(FAIL_MODES)}, not '{fail_mode}'")
        self.url = url
        self.fail_mode = fail_mode
        self.prefix = prefix
        self.replica = replica or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._reader = reader
        self._clock = clock
        self._server_time = server_time
        self._retry_s = retry_s
        self._redis_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                              redis.exceptions.BusyLoadingError, OSError)
        self._script_errors = (redis.exceptions.ResponseError,)  # e.g. an int64 overflow in HINCRBY
        self._r = client or redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
            decode_responses=True)
        self._timeout_s = timeout_s
        # async client: one per event loop (a redis.asyncio connection belongs to its loop);
        # none when a sync client was injected (then the async methods run the sync ones on a thread)
        self._async_ok = client is None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._ar = None
        self._ascripts: dict[str, object] = {}
        scripts = dict(reserve=_RESERVE, top_up=_TOP_UP, settle=_SETTLE, spent=_SPENT,
                       begin=_BEGIN_LOAD, finish=_FINISH_LOAD, abort=_ABORT_LOAD, take=_TAKE)
        self._s = {name: self._r.register_script(src) for name, src in scripts.items()}
        self._hb_key = f"{prefix}hb:{self.replica}"
        self._local = InProcessCounters()  # fail-open fallback
        self._local_held: Counter = Counter()  # reservations made in the fallback
        # settlements (add spent, release) queued in order: applied in one script call by the
        # settler thread, or before this replica's next read; kept while Redis is away
        self._deferred: deque = deque()
        self._inflight: tuple[int, list] | None = None  # a batch sent, not yet acknowledged
        self._batch_seq = 0
        self._settle_wake = threading.Event()
        self._lock = threading.Lock()
        self._replay_lock = threading.Lock()  # one replayer at a time: each op applied once
        self._down_until = 0.0
        self.fallbacks = 0  # statistics: operations served by the local fallback
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._beat()
        self._heartbeat = threading.Thread(target=self._background, name="tokenomy-redis-settler", daemon=True)
        self._heartbeat.start()

    # plumbing ----------------------------------------------------------------------------
    def _key(self, scope: Scope) -> str:
        return self.prefix + "b|" + "|".join(scope)

    def _beat(self) -> bool:
        try:
            self._r.set(self._hb_key, "1", px=HEARTBEAT_TTL_MS)
            self._replay()
            return True
        except self._redis_errors:
            return False

    def _background(self) -> None:
        """Settle queued ops as they come; refresh the heartbeat every few seconds."""
        next_beat = time.monotonic() + HEARTBEAT_TTL_MS / 6000
        while not self._stop.is_set():
            self._settle_wake.wait(timeout=max(0.0, next_beat - time.monotonic()))
            self._settle_wake.clear()
            if self._stop.is_set():
                break
            if time.monotonic() >= next_beat:
                self._beat()
                next_beat = time.monotonic() + HEARTBEAT_TTL_MS / 6000
            elif self._deferred and self._available():
                try:
                    self._replay()
                except self._redis_errors as exc:
                    self._down(exc)
        if self._available():
            try:
                self._replay()  # last settlements before leaving
            except self._redis_errors:
                pass

    def close(self) -> None:
        self._stop.set()
        self._settle_wake.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        try:
            self._r.delete(self._hb_key, f"{self.prefix}settled:{self.replica}")  # our reservations go with us
        except self._redis_errors:
            pass
        self._r.close()
        self._drop_async()

    def _drop_async(self) -> None:
        ar, self._ar, self._aloop, self._ascripts = self._ar, None, None, {}
        if ar is None:
            return
        try:  # close its sockets; the loop it belonged to may be gone
            for conn in list(getattr(ar.connection_pool, "_available_connections", [])) + list(
                    getattr(ar.connection_pool, "_in_use_connections", [])):
                writer = getattr(conn, "_writer", None)
                if writer is not None:
                    writer.transport.abort()
        except Exception:  # pragma: no cover - best effort
            pass

    # async plumbing ------------------------------------------------------------------------
    @property
    def async_ready(self) -> bool:
        """The async methods never block the loop (else callers run the sync ones on a thread)."""
        return self._async_ok and self._reader is not None

    def _aclient(self):
        loop = asyncio.get_running_loop()
        if self._aloop is not loop:
            import redis.asyncio as aredis
            from redis.asyncio.retry import Retry as ARetry
            from redis.backoff import NoBackoff

            self._drop_async()
            self._ar = aredis.Redis.from_url(
                self.url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s,
                retry=ARetry(NoBackoff(), 0), decode_responses=True)
            self._aloop = loop
        return self._ar

    async def aeval(self, name: str, source: str, keys: list, args: list):
        """Run a Lua script (registered once per loop under `name`) on the async client."""
        client = self._aclient()
        script = self._ascripts.get(name)
        if script is None:
            script = self._ascripts[name] = client.register_script(source)
        return await script(keys=keys, args=args)

    async def acall(self, fn, fallback):
        """await fn() against Redis; on failure: 503 (closed) or await fallback() (open)."""
        if self._deferred:
            self._settle_wake.set()  # the settler applies them; this call does not wait for it
        if self._available():
            try:
                return await fn()
            except self._redis_errors as exc:
                self._down(exc)
                await self._reset_pool()
                if self.fail_mode == "closed":
                    raise self._unavailable(exc) from None
        elif self.fail_mode == "closed":
            raise self._unavailable()
        self.fallbacks += 1
        return await fallback()

    async def _reset_pool(self) -> None:
        """Drop every pooled async connection: after a failure the idle ones are likely dead too
        (a restarted Redis or proxy), and each would fail one more request once Redis is back."""
        ar = self._ar
        if ar is not None:
            try:
                await ar.connection_pool.disconnect(inuse_connections=False)
            except Exception:  # pragma: no cover - best effort
                pass

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _down(self, exc: BaseException) -> None:
        if self._available():
            log.warning("redis counters at %s unavailable (%s); fail_mode=%s", self._safe_url(), exc, self.fail_mode)
        self._down_until = time.monotonic() + self._retry_s

    def _safe_url(self) -> str:
        from tokenomy.metering.postgres_ledger import redact

        return redact(self.url)

    def _unavailable(self, exc: BaseException | None = None) -> CountersUnavailable:
        why = f": {exc}" if exc is not None else ""
        return CountersUnavailable(
            f"budget, rate-limit and plan-cap counters (Redis at {self._safe_url()}) are unavailable{why}; "
            "refusing requests because counters.fail_mode is 'closed' (set `counters: {fail_mode: open}` in the "
            "config, or TOKENOMY_REDIS_FAIL_MODE=open, to serve with per-replica limits instead); retry shortly",
            retry_after_s=self._retry_s)

    def _call(self, fn, fallback):
        """Run fn() against Redis; on failure: 503 (closed) or fallback() (open)."""
        if self._available():
            try:
                self._replay()
                return fn()
            except self._redis_errors as exc:
                self._down(exc)
                if self.fail_mode == "closed":
                    raise self._unavailable(exc) from None
        elif self.fail_mode == "closed":
            raise self._unavailable()
        self.fallbacks += 1
        return fallback()

    def _defer(self, op: str, keys: list[str], amount: int | str) -> None:
        self._deferred.append((op, keys, amount))
        self._settle_wake.set()

    def _replay(self) -> None:
        """Apply queued settlements, oldest first, up to SETTLE_CHUNK per script call. Raises
        the Redis error if unreachable (the ops stay queued)."""
        if not self._deferred and self._inflight is None:
            return
        with self._replay_lock:
            while True:
                if self._inflight is None:  # a new batch, next in sequence
                    if not self._deferred:
                        return
                    ops = [self._deferred.popleft() for _ in range(min(SETTLE_CHUNK, len(self._deferred)))]
                    self._batch_seq += 1
                    self._inflight = (self._batch_seq, ops)
                seq, ops = self._inflight  # else: resend exactly the unacknowledged batch
                keys: list[str] = []
                args: list = [self.replica, f"{self.prefix}settled:{self.replica}", seq]
                for op, op_keys, amount in ops:
                    keys += op_keys
                    args += [_OP_KINDS[op], len(op_keys), amount]
                try:
                    self._s["settle"](keys=keys, args=args)
                except self._script_errors as exc:  # not retryable: drop them, loudly
                    log.error("redis counters: settling %d ops failed: %s", len(ops), exc)
                self._inflight = None

    @property
    def deferred(self) -> int:
        inflight = self._inflight
        return len(self._deferred) + (len(inflight[1]) if inflight else 0)

    # budgets -----------------------------------------------------------------------------
    def is_loaded(self, scope: Scope) -> bool:
        if self._reader is not None:
            return True  # this store loads scopes itself, on first use, under a lease
        return self._call(lambda: self._r.hget(self._key(scope), "ready") == "1",
                          lambda: self._local.is_loaded(scope))

    def load(self, scope: Scope, spent_pusd: int) -> None:
        """Protocol path without a reader (single process): set spent if nobody has."""
        self._local.load(scope, spent_pusd)
        token = uuid.uuid4().hex

        def run():
            key = self._key(scope)
            if self._s["begin"](keys=[key, key + "|load"], args=[token, LOAD_LEASE_MS, self._ttl_s(scope)]) == 1:
                self._s["finish"](keys=[key, key + "|load"], args=[token, spent_pusd])

        self._call(run, lambda: None)

    def _ttl_s(self, scope: Scope) -> int:
        """Seconds a period counter lives: to the period's end plus the grace (0: forever)."""
        return period_ttl_s(scope, self._clock())

    def _ensure(self, scope: Scope) -> None:
        """Load the scope's committed spend from the ledger exactly once across replicas."""
        if self._reader is None:
            raise RuntimeError(f"budget scope {scope} is not loaded and this store has no ledger reader")
        key = self._key(scope)
        keys = [key, key + "|load"]
        deadline = time.monotonic() + LOAD_LEASE_MS / 1000 + 5
        while True:
            token = uuid.uuid4().hex
            state = self._s["begin"](keys=keys, args=[token, LOAD_LEASE_MS, self._ttl_s(scope)])
            if state == 0:
                return
            if state == 1:
                try:
                    spent = self._reader(scope)
                except BaseException:
                    self._s["abort"](keys=keys, args=[token])
                    raise
                if self._s["finish"](keys=keys, args=[token, spent]) == 1:
                    return
                continue  # the lease expired under us: load again
            if time.monotonic() > deadline:
                raise self._unavailable(TimeoutError(f"loading budget {scope} took too long"))
            time.sleep(0.005)  # another replica is loading it

    def _local_ready(self, scope: Scope) -> None:
        if not self._local.is_loaded(scope):
            if self._reader is None:
                raise RuntimeError(f"budget scope {scope} is not loaded")
            self._local.load(scope, self._reader(scope))

    def try_reserve(self, limits: Sequence[tuple[Scope, int]], amount_pusd: int) -> tuple[Scope, int, int, int] | None:
        if not limits:
            return None
        keys = [self._key(scope) for scope, _ in limits]
        args = [amount_pusd, self.replica, self.prefix + "hb:", HEARTBEAT_TTL_MS, *(limit for _, limit in limits)]

        def run():
            for _ in range(5):
                res = self._s["reserve"](keys=keys, args=args)
                if res[0] == 1:
                    return None
                scope, limit = limits[int(res[1]) - 1]
                if res[0] == 0:
                    return scope, limit, int(res[2]), int(res[3])
                self._ensure(scope)  # not loaded (first use, new period, or Redis lost it)
            raise self._unavailable(RuntimeError("budget counters kept disappearing"))

        def local():
            for scope, _ in limits:
                self._local_ready(scope)
            refused = self._local.try_reserve(limits, amount_pusd)
            if refused is None:
                with self._lock:
                    self._local_held[(tuple(scope for scope, _ in limits), amount_pusd)] += 1
            return refused

        return self._call(run, local)

    def top_up(self, limits: Sequence[tuple[Scope, int]], held_pusd: int, extra_pusd: int) -> bool:
        """Grow a held reservation on all its scopes or none. One made in the fail-open fallback
        grows there; one held in Redis grows only in Redis (False while Redis is away)."""
        if not limits:
            return True
        scopes = tuple(scope for scope, _ in limits)
        with self._lock:
            if self._local_held[(scopes, held_pusd)] > 0:
                if not self._local.top_up(limits, held_pusd, extra_pusd):
                    return False
                self._move_local_held(scopes, held_pusd, held_pusd + extra_pusd)
                return True
        if self._deferred or self._inflight is not None:
            try:
                self._replay()  # our own earlier releases first: they free room
            except self._redis_errors as exc:
                self._down(exc)
                return False
        if not self._available():
            return False
        keys = [self._key(scope) for scope in scopes]
        args = [extra_pusd, self.replica, self.prefix + "hb:", HEARTBEAT_TTL_MS, held_pusd,
                *(limit for _, limit in limits)]
        try:
            return int(self._s["top_up"](keys=keys, args=args)[0]) == 1
        except self._redis_errors as exc:
            self._down(exc)
            return False

    def _move_local_held(self, scopes: tuple, old_pusd: int, new_pusd: int) -> None:
        old = (scopes, old_pusd)
        self._local_held[old] -= 1
        if not self._local_held[old]:
            del self._local_held[old]
        self._local_held[(scopes, new_pusd)] += 1

    def unreserve(self, scopes: Sequence[Scope], amount_pusd: int) -> None:
        if not scopes:
            return
        held = (tuple(scopes), amount_pusd)
        with self._lock:
            if self._local_held[held] > 0:  # made in the fallback: release it there
                self._local_held[held] -= 1
                if not self._local_held[held]:
                    del self._local_held[held]
                self._local.unreserve(scopes, amount_pusd)
                return
        self._defer("unreserve", [self._key(s) for s in scopes], amount_pusd)

    def add_spent(self, scopes: Sequence[Scope], amount_pusd: int) -> None:
        """Never raises, never waits (called after the ledger commit): queued, then settled in
        order. The release that follows it is queued behind it, so until both land the amount
        is still held as reserved - other replicas see it as reserved or as spent, never neither."""
        self._local.add_spent(scopes, amount_pusd)  # keeps the fallback current for loaded scopes
        if not scopes or amount_pusd == 0:
            return
        self._defer("spent", [self._key(s) for s in scopes], amount_pusd)

    def spent(self, scope: Scope) -> tuple[int, int]:
        def run():
            for _ in range(5):
                res = self._s["spent"](keys=[self._key(scope)], args=[self.prefix + "hb:"])
                if res[0] == 1:
                    return int(res[1]), int(res[2])
                self._ensure(scope)
            raise self._unavailable(RuntimeError("budget counters kept disappearing"))

        def local():
            self._local_ready(scope)
            return self._local.spent(scope)

        return self._call(run, local)

    async def _aensure(self, scope: Scope) -> None:
        """_ensure on the async client; the ledger read runs on a worker thread."""
        if self._reader is None:
            raise RuntimeError(f"budget scope {scope} is not loaded and this store has no ledger reader")
        key = self._key(scope)
        keys = [key, key + "|load"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOAD_LEASE_MS / 1000 + 5
        while True:
            token = uuid.uuid4().hex
            state = await self.aeval("begin", _BEGIN_LOAD, keys, [token, LOAD_LEASE_MS, self._ttl_s(scope)])
            if state == 0:
                return
            if state == 1:
                try:
                    spent = await asyncio.to_thread(self._reader, scope)
                except BaseException:
                    await self.aeval("abort", _ABORT_LOAD, keys, [token])
                    raise
                if await self.aeval("finish", _FINISH_LOAD, keys, [token, spent]) == 1:
                    return
                continue
            if loop.time() > deadline:
                raise self._unavailable(TimeoutError(f"loading budget {scope} took too long"))
            await asyncio.sleep(0.005)  # another replica is loading it

    async def _alocal_ready(self, scopes) -> None:
        missing = [scope for scope in scopes if not self._local.is_loaded(scope)]
        if missing:
            await asyncio.to_thread(lambda: [self._local_ready(scope) for scope in missing])

    async def atry_reserve(self, limits: Sequence[tuple[Scope, int]], amount_pusd: int):
        if not limits:
            return None
        if not self._async_ok:
            return await asyncio.to_thread(self.try_reserve, limits, amount_pusd)
        keys = [self._key(scope) for scope, _ in limits]
        args = [amount_pusd, self.replica, self.prefix + "hb:", HEARTBEAT_TTL_MS, *(limit for _, limit in limits)]

        async def run():
            for _ in range(5):
                res = await self.aeval("reserve", _RESERVE, keys, args)
                if res[0] == 1:
                    return None
                scope, limit = limits[int(res[1]) - 1]
                if res[0] == 0:
                    return scope, limit, int(res[2]), int(res[3])
                await self._aensure(scope)
            raise self._unavailable(RuntimeError("budget counters kept disappearing"))

        async def local():
            await self._alocal_ready([scope for scope, _ in limits])
            refused = self._local.try_reserve(limits, amount_pusd)
            if refused is None:
                with self._lock:
                    self._local_held[(tuple(scope for scope, _ in limits), amount_pusd)] += 1
            return refused

        return await self.acall(run, local)

    async def atop_up(self, limits: Sequence[tuple[Scope, int]], held_pusd: int, extra_pusd: int) -> bool:
        if not limits:
            return True
        if not self._async_ok:
            return await asyncio.to_thread(self.top_up, limits, held_pusd, extra_pusd)
        scopes = tuple(scope for scope, _ in limits)
        with self._lock:
            if self._local_held[(scopes, held_pusd)] > 0:  # made in the fallback: grows there
                if not self._local.top_up(limits, held_pusd, extra_pusd):
                    return False
                self._move_local_held(scopes, held_pusd, held_pusd + extra_pusd)
                return True
        if self._deferred or self._inflight is not None:
            self._settle_wake.set()
        if not self._available():
            return False
        keys = [self._key(scope) for scope in scopes]
        args = [extra_pusd, self.replica, self.prefix + "hb:", HEARTBEAT_TTL_MS, held_pusd,
                *(limit for _, limit in limits)]
        try:
            return int((await self.aeval("top_up", _TOP_UP, keys, args))[0]) == 1
        except self._redis_errors as exc:
            self._down(exc)
            await self._reset_pool()
            return False

    async def aspent(self, scope: Scope) -> tuple[int, int]:
        if not self._async_ok:
            return await asyncio.to_thread(self.spent, scope)

        async def run():
            for _ in range(5):
                res = await self.aeval("spent", _SPENT, [self._key(scope)], [self.prefix + "hb:"])
                if res[0] == 1:
                    return int(res[1]), int(res[2])
                await self._aensure(scope)
            raise self._unavailable(RuntimeError("budget counters kept disappearing"))

        async def local():
            await self._alocal_ready([scope])
            return self._local.spent(scope)

        return await self.acall(run, local)

    async def atake(self, buckets: Sequence[tuple[str, float, float, float]], now: float) -> float:
        if not buckets:
            return 0.0
        if not self._async_ok:
            return await asyncio.to_thread(self.take, buckets, now)
        keys = [self.prefix + "rl|" + name for name, *_ in buckets]
        args: list = ["1" if self._server_time else "0", repr(float(now))]
        for _, capacity, per_s, amount in buckets:
            args += [repr(float(capacity)), repr(float(per_s)), repr(float(amount))]

        async def run():
            out = await self.aeval("take", _TAKE, keys, args)
            return math.inf if out == "inf" else float(out)

        async def local():
            return self._local.take(buckets, time.monotonic() if self._server_time else now)

        return await self.acall(run, local)

    # rate limits -------------------------------------------------------------------------
    def take(self, buckets: Sequence[tuple[str, float, float, float]], now: float) -> float:
        if not buckets:
            return 0.0
        keys = [self.prefix + "rl|" + name for name, *_ in buckets]
        args: list = ["1" if self._server_time else "0", repr(float(now))]
        for _, capacity, per_s, amount in buckets:
            args += [repr(float(capacity)), repr(float(per_s)), repr(float(amount))]

        def run():
            out = self._s["take"](keys=keys, args=args)
            return math.inf if out == "inf" else float(out)

        return self._call(run, lambda: self._local.take(buckets, time.monotonic() if self._server_time else now))

    # maintenance -------------------------------------------------------------------------
    def clear(self) -> int:
        """Delete every key under this store's prefix (tests); returns how many."""
        n = 0
        for key in self._r.scan_iter(match=self.prefix + "*", count=500):
            n += self._r.delete(key)
        return n


__all__ = ["CountersUnavailable", "FAIL_MODES", "RedisCounterStore", "scope_bounds"]
