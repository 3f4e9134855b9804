"""Several Metering replicas (as several gateway processes would hold) sharing PostgreSQL and
Redis: one budget, one rate limit, one lazy load, keys visible everywhere, crash-safe
reservations, period keys that never need a reset."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from decimal import Decimal

import pytest

from tokenomy.metering import AuthError, BudgetExceeded, RateLimited
from tokenomy.metering.backends import open_metering
from tokenomy.metering.redis_counters import RedisCounterStore, scope_bounds

from .conftest import make_event, utc


@pytest.fixture
def replicas(pg, redis_url, redis_prefix, tmp_path):
    opened = []

    def make(n: int = 3, **kwargs):
        for i in range(n):
            opened.append(open_metering(tmp_path / f"r{i}", ledger_url=pg, redis_url=redis_url,
                                        redis_prefix=redis_prefix, admin_key="admin-key", **kwargs))
        return opened

    yield make
    for m in opened:
        m.shutdown()


async def test_300_requests_over_3_replicas_never_overspend(replicas):
    ms = replicas(3)
    kid, key = ms[0].create_key("acme", budget_usd="1.00")
    principals = [m.authenticate(key) for m in ms]
    rng = random.Random(11)

    async def request(i: int):
        m, p = ms[i % 3], principals[i % 3]
        await asyncio.sleep(rng.random() * 0.02)
        try:
            r = m.reserve(p, Decimal("0.10"))
        except BudgetExceeded:
            return False
        await asyncio.sleep(rng.random() * 0.005)
        await m.commit(make_event(key_id=kid, price="0.07", ts=m._clock()), r)
        return True

    ok = sum(await asyncio.gather(*(request(i) for i in range(300))))
    spent = Decimal(ms[1].usage("acme")["price_usd"])
    assert spent == Decimal("0.07") * ok <= Decimal("1.00")
    assert 10 <= ok <= 14
    for m, p in zip(ms, principals, strict=True):
        assert m.spend(p)["key"]["reserved_usd"] == "0"
        assert m.spend(p)["key"]["spent_usd"] == str(spent)


def test_threads_on_3_replicas_reserve_exactly_the_budget(replicas):
    ms = replicas(3)
    kid, key = ms[0].create_key("acme", budget_usd="1")
    ps = [m.authenticate(key) for m in ms]

    def request(i: int) -> bool:
        m, p = ms[i % 3], ps[i % 3]
        try:
            r = m.reserve(p, Decimal("0.1"))
        except BudgetExceeded:
            return False
        m.commit_blocking(make_event(key_id=kid, price="0.1"), r)
        return True

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(24) as pool:
        ok = sum(pool.map(request, range(200)))
    assert ok == 10 and ms[2].usage("acme")["price_usd"] == "1"


def test_rpm_cannot_be_exceeded_by_spreading_over_replicas(replicas):
    ms = replicas(3)  # Redis server time: one bucket for all replicas
    _, key = ms[0].create_key("acme", rpm=12)
    granted = refused = 0
    started = time.monotonic()
    for i in range(36):
        m = ms[i % 3]
        try:
            m.check_rate(m.authenticate(key), 0)
            granted += 1
        except RateLimited as exc:
            refused += 1
            assert 0 < exc.retry_after_s <= 5.0 + 1e-6  # 12/min refills one every 5 s
    refills = int((time.monotonic() - started) / 5.0) + 1  # 12/min: one more every 5 s of loop
    assert 12 <= granted <= 12 + refills and refused == 36 - granted


def test_lazy_load_reads_the_ledger_once_across_replicas(pg, redis_url, redis_prefix, replicas):
    ms = replicas(1)
    kid, key = ms[0].create_key("acme", budget_usd="5")
    ms[0].commit_blocking(make_event(key_id=kid, price="1.5"))
    calls = []
    barrier = threading.Barrier(6)

    def slow_reader(scope):
        calls.append(scope)
        return ms[0].ledger.spend_pusd(kind=scope[0], subject=scope[1], since=None, until=None)

    stores = [RedisCounterStore(redis_url, reader=slow_reader, prefix=redis_prefix) for _ in range(6)]
    scope = ("key", kid, "total", "all")
    results = []

    def race(store):
        barrier.wait()
        results.append(store.try_reserve([(scope, 10 * 10**12)], 10**12))

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert results == [None] * 6
        assert calls == [scope]  # one replica loaded; the others waited for it
        assert stores[0].spent(scope) == (int(1.5 * 10**12), 6 * 10**12)
    finally:
        for s in stores:
            s.close()


def test_a_dead_replicas_reservations_are_dropped(redis_url, redis_prefix):
    spent = {"v": 0}
    alive = RedisCounterStore(redis_url, reader=lambda s: spent["v"], prefix=redis_prefix, replica="alive")
    dead = RedisCounterStore(redis_url, reader=lambda s: spent["v"], prefix=redis_prefix, replica="dead")
    scope = ("tenant", "acme", "total", "all")
    try:
        assert dead.try_reserve([(scope, 100)], 80) is None
        assert alive.try_reserve([(scope, 100)], 30)[2:] == (0, 80)  # refused: 80 held by "dead"
        dead._stop.set()  # kill -9: no more heartbeats ...
        alive._r.delete(redis_prefix + "hb:dead")  # ... and its heartbeat key expires
        assert alive.try_reserve([(scope, 100)], 30) is None
        assert alive.spent(scope) == (0, 30)
    finally:
        alive.close()
        dead.close()


async def test_period_keys_make_resets_idempotent(replicas, wall):
    """A daily budget: the day is part of the key, so each replica moving to a new day finds
    a fresh counter (no reset to double or lose); the old day's key expires by itself."""
    ms = replicas(2, clock=wall)
    wall.t = utc("2026-11-27T23:59:00")
    kid, key = ms[0].create_key("acme", budget_usd="1", budget_period="daily")
    p = ms[0].authenticate(key)
    await ms[0].commit(make_event(key_id=kid, price="0.9", ts=wall()), ms[0].reserve(p, Decimal("0.9")))
    with pytest.raises(BudgetExceeded, match="daily"):
        ms[1].reserve(p, Decimal("0.2"))
    wall.t = utc("2026-11-28T00:00:01")
    r1 = ms[1].reserve(p, Decimal("0.6"))  # new day on replica 1 ...
    with pytest.raises(BudgetExceeded):
        ms[0].reserve(p, Decimal("0.6"))  # ... is the same new day on replica 0: 0.6 + 0.6 > 1
    ms[1].release(r1)
    store = ms[0]._counters
    old, new = (store._key(("key", kid, "daily", d)) for d in ("2026-11-27", "2026-11-28"))
    assert store._r.hget(old, "spent") == str(9 * 10**11) and store._r.hget(new, "spent") == "0"
    # TTLs follow the injected clock, whatever Redis's own clock says: the old day was loaded
    # 60 s before its end (fake time), the new day 1 s after its start; each lives to its end + the grace.
    assert 60 + 2 * 86400 - 5 <= store._r.ttl(old) <= 60 + 2 * 86400
    assert 86399 + 2 * 86400 - 5 <= store._r.ttl(new) <= 86399 + 2 * 86400
    assert scope_bounds(("key", kid, "monthly", "2026-12")) == (utc("2026-12-01T00:00:00"), utc("2027-01-01T00:00:00"))


def test_keys_and_revocations_are_visible_on_every_replica(replicas, mono):
    ms = replicas(2, monotonic=mono)
    kid, key = ms[0].create_key("acme", rpm=5)
    assert ms[1].authenticate(key).key_id == kid
    ms[0].revoke_key(kid)
    ms[1].authenticate(key)  # cached ...
    mono.advance(1.01)
    with pytest.raises(AuthError, match="revoked"):  # ... for at most ~1 s
        ms[1].authenticate(key)
    assert [k["active"] for k in ms[1].list_keys("acme")] == [False]


def test_a_settlement_resent_after_a_lost_reply_applies_once(redis_url, redis_prefix):
    """The connection drops after Redis ran the settle script but before the reply: the
    replica resends the same batch, which the per-replica sequence marker turns into a no-op."""
    import redis as redis_lib

    store = RedisCounterStore(redis_url, reader=lambda s: 0, prefix=redis_prefix)
    scope = ("tenant", "acme", "total", "all")
    try:
        assert store.try_reserve([(scope, 100)], 40) is None
        real = store._s["settle"]
        calls = []

        def lost_reply(**kw):
            calls.append(kw)
            real(**kw)
            if len(calls) == 1:
                raise redis_lib.exceptions.ConnectionError("connection reset after the script ran")

        store._s["settle"] = lost_reply
        store._stop.set()  # no background settler: this test drives the replay itself
        store._settle_wake.set()
        store._heartbeat.join(timeout=5)
        store.add_spent([scope], 30)
        store.unreserve([scope], 40)
        with pytest.raises(redis_lib.exceptions.ConnectionError):
            store._replay()
        assert store.deferred == 2  # unacknowledged: kept
        store._replay()  # resent ...
        assert len(calls) == 2 and calls[0] == calls[1]  # ... the very same batch
        assert store.deferred == 0
        store._s["settle"] = real
        assert store.spent(scope) == (30, 0)  # applied once, not twice
    finally:
        store.close()


def test_period_ttl_is_sane_for_past_present_and_unbounded_periods():
    from tokenomy.metering.redis_counters import PERIOD_GRACE_S, period_ttl_s

    day = ("key", "k1", "daily", "2026-11-27")
    assert period_ttl_s(day, utc("2026-11-27T00:00:00")) == 86400 + PERIOD_GRACE_S
    assert period_ttl_s(day, utc("2026-11-27T23:59:59.5")) == 1 + PERIOD_GRACE_S
    # years after the period: still the grace, never an expiry in the past (Redis would delete the key)
    assert period_ttl_s(day, utc("2031-01-01T00:00:00")) == PERIOD_GRACE_S
    assert period_ttl_s(("key", "k1", "total", "all"), utc("2031-01-01T00:00:00")) == 0
