"""One `strong_share` cut for every gateway replica: merge the replicas' score histograms in Redis.

Each replica's `ShareThreshold` sees only the requests it serves. When a load balancer does not
spread traffic evenly (sticky sessions, a tenant pinned to one replica), per-replica cuts each send
their own 30 % strong: the same prompt goes strong on one replica and weak on another. `ShareSync`
makes the cut the quantile of ALL replicas' traffic:

- every `every` decisions (counted, never timed) a background task runs ONE Lua script: it stores
  this replica's normalised histogram (zlib-compressed float32 bins) in the routing group's hash,
  stamps it with Redis's own clock, drops replicas silent for `stale_after_s` and returns the
  others' histograms, which become the estimate's peer part (`ShareThreshold.set_peers`);
- it runs on `redis.asyncio` with a timeout, never on the request path and never blocking the event
  loop (a decision only counts; at most one sync is in flight);
- Redis away (down, paused, timing out): the estimate degrades to this replica's own histogram at
  once (stale peers would pin the cut), logged once per outage; the next sync tries again.

Weights: a histogram's mass is its replica's decayed request count, so a replica serving more
traffic weighs more, as it should for a share of all traffic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
import zlib

import numpy as np

from tokenomy.routing.quality.threshold import ShareThreshold

log = logging.getLogger(__name__)

DEFAULT_EVERY = 32
DEFAULT_STALE_AFTER_S = 300.0

# KEYS[1] the group's hash; ARGV: replica, payload, stale after (ms), key TTL (ms).
# Fields h:<replica> (histogram) and t:<replica> (Redis time of its last sync, ms).
_SYNC = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'h:' .. ARGV[1], ARGV[2], 't:' .. ARGV[1], now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local all = redis.call('HGETALL', KEYS[1])
local seen = {}
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 't:' then seen[string.sub(all[i], 3)] = tonumber(all[i + 1]) end
end
local out = {}
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 2) == 'h:' then
    local r = string.sub(f, 3)
    if r ~= ARGV[1] then
      if seen[r] ~= nil and now - seen[r] <= tonumber(ARGV[3]) then
        table.insert(out, all[i + 1])
      else
        redis.call('HDEL', KEYS[1], f, 't:' .. r)
      end
    end
  end
end
return out
"""


def encode(hist: np.ndarray) -> bytes:
    return zlib.compress(np.asarray(hist, dtype="<f4").tobytes(), 1)


def decode(payload: bytes) -> np.ndarray | None:
    """A peer's histogram, or None when the entry is not one (never raises on foreign data)."""
    try:
        raw = zlib.decompress(payload)
    except (zlib.error, TypeError):
        return None
    if len(raw) % 4:
        return None
    return np.frombuffer(raw, dtype="<f4").astype(float)


class ShareSync:
    """Exchanges one routing group's `ShareThreshold` histogram with the other replicas (module doc)."""

    def __init__(self, share: ShareThreshold, *, url: str, key: str, replica: str | None = None,
                 every: int = DEFAULT_EVERY, stale_after_s: float = DEFAULT_STALE_AFTER_S, timeout_s: float = 0.5):
        if every < 1 or stale_after_s <= 0 or timeout_s <= 0:
            raise ValueError("every must be >= 1, stale_after_s and timeout_s > 0")
        self.share, self.url, self.key = share, url, key
        self.replica = replica or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.every, self.stale_after_s, self.timeout_s = every, stale_after_s, timeout_s
        self.syncs = 0          # successful merges
        self.failures = 0       # syncs that found Redis away (then the estimate is local)
        self.peers = 0          # replicas in the last merge
        self.healthy = True
        self._since = 0
        self._task: asyncio.Task | None = None
        self._client = None
        self._loop = None
        self._script = None

    # ---------------------------------------------------------------- request path
    def after_observe(self) -> None:
        """Count one decision; every `every`, start a sync in the background (at most one in flight)."""
        self._since += 1
        if self._since < self.every or self._task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return               # no loop (a CLI calibration): stay local
        self._since = 0
        self._task = loop.create_task(self.sync())
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._task = None
        if not task.cancelled() and task.exception() is not None:   # a bug, not Redis: keep serving
            log.error("strong_share sync failed: %r", task.exception())

    # ---------------------------------------------------------------- background
    def _redis(self):
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio as aredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = aredis.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                                 socket_connect_timeout=self.timeout_s, retry=Retry(NoBackoff(), 0))
            self._script = self._client.register_script(_SYNC)
            self._loop = loop
        return self._script

    async def sync(self) -> bool:
        """Publish this replica's histogram, merge the live peers'; False (and local only) if Redis is away."""
        import redis.exceptions as rex

        payload = encode(self.share.normalised())
        ttl_ms = int(self.stale_after_s * 2000)
        try:
            script = self._redis()
            got = await asyncio.wait_for(
                script(keys=[self.key], args=[self.replica, payload, int(self.stale_after_s * 1000), ttl_ms]),
                self.timeout_s * 2)
        except (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError, rex.ResponseError, OSError,
                asyncio.TimeoutError) as exc:
            self.failures += 1
            if self.healthy:
                log.warning("strong_share: Redis unavailable (%s); using this replica's traffic only", exc)
            self.healthy = False
            self.peers = 0
            self.share.set_peers([])
            await self._drop_client()
            return False
        hists = [h for h in (decode(p) for p in got) if h is not None]
        self.share.set_peers(hists)
        if not self.healthy:
            log.warning("strong_share: Redis is back; merging %d peer replicas again", len(hists))
        self.healthy, self.peers = True, len(hists)
        self.syncs += 1
        return True

    async def _drop_client(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            try:
                await client.aclose(close_connection_pool=True)
            except Exception:   # closing a broken connection: nothing left to do
                pass

    async def aclose(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self._drop_client()

    def to_json(self) -> dict:
        return {"replica": self.replica, "every": self.every, "syncs": self.syncs, "failures": self.failures,
                "peers": self.peers, "healthy": self.healthy}
