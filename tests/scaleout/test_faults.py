"""Faults, simulated with a TCP proxy the test stops (the real servers keep running):
PostgreSQL away -> events go to the local durable outbox and drain exactly once;
Redis away -> fail closed (503, clear message) or fail open (local limits), no crash."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from tokenomy.metering import BudgetExceeded, MeteringError, RateLimited
from tokenomy.metering.backends import open_metering

from .conftest import make_event
from .tcpproxy import TcpProxy


def _via(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")).geturl()


@pytest.fixture
def pg_proxy(pg):
    parts = urlsplit(pg)
    with TcpProxy(parts.hostname, parts.port or 5432) as proxy:
        yield proxy, _via(pg, proxy)


@pytest.fixture
def redis_proxy(redis_url):
    parts = urlsplit(redis_url)
    with TcpProxy(parts.hostname, parts.port or 6379) as proxy:
        yield proxy, _via(redis_url, proxy)


def _outbox_rows(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()


async def test_postgres_outage_goes_to_the_outbox_and_drains_exactly_once(pg_proxy, pg, redis_url, redis_prefix,
                                                                          tmp_path):
    proxy, url = pg_proxy
    m = open_metering(tmp_path, ledger_url=url, redis_url=redis_url, redis_prefix=redis_prefix, admin_key="a")
    direct = open_metering(tmp_path / "observer", ledger_url=pg, admin_key="a")  # reads Postgres itself
    try:
        kid, key = m.create_key("acme", budget_usd="10")
        p = m.authenticate(key)
        before = [make_event(id=f"pre{i}", key_id=kid, price="0.1") for i in range(5)]
        assert all(await asyncio.gather(*(m.commit(e, m.reserve(p, Decimal("0.2"))) for e in before)))
        assert m.spend(p)["key"]["spent_usd"] == "0.5"  # budgets in use are loaded
        proxy.stop()  # PostgreSQL unreachable from the gateway
        during = [make_event(id=f"out{i}", key_id=kid, price="0.1") for i in range(40)]
        results = await asyncio.gather(*(m.commit(e, m.reserve(p, Decimal("0.2"))) for e in during))
        assert results == [True] * 40  # acknowledged ...
        assert _outbox_rows(tmp_path / "outbox.db") == 40  # ... because durable on local disk
        assert await m.commit(during[0]) is False  # a client retry during the outage: still once
        assert m.authenticate(key).key_id == kid  # last-known key keeps serving
        assert m.spend(p)["key"]["spent_usd"] == "4.5"  # budgets count the outbox
        assert direct.usage("acme")["requests"] == 5  # Postgres has not seen them yet
        with pytest.raises(MeteringError) as info:
            m.create_key("acme")  # admin writes need the database: a clear 503
        assert info.value.status == 503 and "unavailable" in str(info.value)
        await asyncio.sleep(1.0)  # the drainer keeps retrying without harm
        proxy.start()  # PostgreSQL is back
        assert await asyncio.to_thread(m.ledger.wait_drained, 15.0)
        assert _outbox_rows(tmp_path / "outbox.db") == 0
        usage = direct.usage("acme")
        assert (usage["requests"], usage["price_usd"]) == (45, "4.5")  # exactly once each
        for e in during[:3] + before[:1]:
            assert direct.ledger.count_event(e.id) == 1
        assert m.ledger.outboxed >= 40 and m.ledger.drained >= 40
        assert m.spend(p)["key"]["reserved_usd"] == "0"
    finally:
        direct.shutdown()
        m.shutdown()


async def test_outbox_left_by_a_stopped_gateway_drains_at_next_start(pg_proxy, pg, tmp_path):
    proxy, url = pg_proxy
    m = open_metering(tmp_path, ledger_url=url, admin_key="a")
    m.create_tenant("acme")
    proxy.stop()
    events = [make_event(id=f"left{i}", price="0.5") for i in range(7)]
    assert all(await asyncio.gather(*(m.commit(e) for e in events)))
    await m.close()  # stopped (or killed) with the database still away
    assert _outbox_rows(tmp_path / "outbox.db") == 7
    again = open_metering(tmp_path, ledger_url=pg, admin_key="a")  # database reachable again
    try:
        assert await asyncio.to_thread(again.ledger.wait_drained, 15.0)
        assert again.usage("acme")["price_usd"] == "3.5"
        assert again.ledger.count_event("left3") == 1
    finally:
        again.shutdown()


def test_redis_down_fail_closed_is_a_clear_503(pg, redis_proxy, redis_prefix, tmp_path):
    proxy, url = redis_proxy
    m = open_metering(tmp_path, ledger_url=pg, redis_url=url, redis_prefix=redis_prefix, admin_key="a",
                      fail_mode="closed")
    try:
        _, key = m.create_key("acme", budget_usd="1", rpm=100)
        p = m.authenticate(key)
        m.release(m.reserve(p, Decimal("0.1")))
        proxy.stop()
        for call in (lambda: m.reserve(p, Decimal("0.1")), lambda: m.check_rate(p, 10)):
            with pytest.raises(MeteringError) as info:
                call()
            assert info.value.status == 503 and info.value.code == "service_unavailable"
            assert "Redis" in str(info.value) and "fail_mode is 'closed'" in str(info.value)
        proxy.start()
        time.sleep(1.1)  # the store retries Redis after retry_s
        m.check_rate(p, 10)
        m.release(m.reserve(p, Decimal("0.1")))
    finally:
        m.shutdown()


async def test_redis_down_fail_open_uses_local_limits_and_replays_spend(pg, redis_proxy, redis_prefix, tmp_path):
    proxy, url = redis_proxy
    m = open_metering(tmp_path, ledger_url=pg, redis_url=url, redis_prefix=redis_prefix, admin_key="a",
                      fail_mode="open")
    try:
        kid, key = m.create_key("acme", budget_usd="1", rpm=3)
        p = m.authenticate(key)
        await m.commit(make_event(key_id=kid, price="0.5"), m.reserve(p, Decimal("0.5")))
        proxy.stop()
        # budgets still hold, locally, from the ledger
        r = m.reserve(p, Decimal("0.4"))
        with pytest.raises(BudgetExceeded):
            m.reserve(p, Decimal("0.2"))
        await m.commit(make_event(key_id=kid, price="0.3"), r)  # settled while Redis is away
        assert m._counters.deferred >= 1 and m._counters.fallbacks >= 2
        for _ in range(3):
            m.check_rate(p, 0)  # local buckets
        with pytest.raises(RateLimited):
            m.check_rate(p, 0)
        proxy.start()
        time.sleep(1.1)
        assert m.spend(p)["key"] == {"spent_usd": "0.8", "reserved_usd": "0", "budget_usd": "1",
                                     "budget_period": "total", "soft_budget_usd": None}  # replayed, once
        assert m._counters.deferred == 0
        with pytest.raises(BudgetExceeded):
            m.reserve(p, Decimal("0.3"))
    finally:
        m.shutdown()
