"""Issue 14 §4: the event loop never waits on Redis. A private redis-server is paused with
SIGSTOP (the connection stays open, nothing answers: the worst case for a client). Requests
that need no shared state (no budget, rate limit or plan cap) complete while it is paused,
and complete before any request that does need Redis gets its answer (had a Redis call
blocked the loop, nothing could finish before it); limited keys fail per fail_mode.
Counts and orderings only; the bounds are generous and only catch a hang."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from decimal import Decimal

import pytest

from tokenomy.metering import MeteringError, Metering
from tokenomy.metering.backends import spend_reader
from tokenomy.metering.redis_counters import RedisCounterStore
from tokenomy.metering.sqlite_ledger import SqliteLedger

from service_procs import private_redis_server

from .conftest import make_event

STORE_TIMEOUT_S = 5.0  # a paused Redis answers a call after this (as a timeout)
BOUND_S = 60.0
UNLIMITED_REQUESTS = 40
LIMITED_REQUESTS = 6


@pytest.fixture
def private_redis(tmp_path):
    with private_redis_server(tmp_path, "Redis pause") as pr:
        yield pr


def _meter(tmp_path, url: str, fail_mode: str) -> Metering:
    ledger = SqliteLedger.open(tmp_path / "data", synchronous="NORMAL")
    store = RedisCounterStore(url, reader=spend_reader(ledger), fail_mode=fail_mode, timeout_s=STORE_TIMEOUT_S,
                              retry_s=30.0)
    m = Metering(ledger, store)
    m._init_admin("test-admin-key", True)
    return m


async def _request(m: Metering, secret: str, done: list, tag: str) -> str:
    """The request path's metering calls, in the gateway's order."""
    try:
        p = await m.aauthenticate(secret)
        await m.acheck_rate(p, 100)
        r = await m.areserve(p, Decimal("0.01"), wait_s=0)
        await m.awarnings(p)
        await m.commit(make_event(tenant=p.tenant, key_id=p.key_id, price="0.001", ts=time.time()), r)
        outcome = "ok"
    except MeteringError as exc:
        outcome = f"{exc.status}"
    done.append((tag, outcome))
    return outcome


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_requests_without_shared_state_complete_while_redis_is_paused(private_redis, tmp_path, fail_mode):
    proc, url = private_redis
    m = _meter(tmp_path, url, fail_mode)
    try:
        _, free = m.create_key("free")
        _, limited = m.create_key("capped", budget_usd="10", rpm=10_000)
        warm: list = []
        assert await _request(m, free, warm, "free") == "ok"
        assert await _request(m, limited, warm, "limited") == "ok"  # Redis healthy: both served

        os.kill(proc.pid, signal.SIGSTOP)
        done: list = []
        limited_tasks = [asyncio.create_task(_request(m, limited, done, "limited")) for _ in range(LIMITED_REQUESTS)]
        await asyncio.sleep(0)  # they are now waiting on the paused Redis
        free_outcomes = await asyncio.wait_for(
            asyncio.gather(*(_request(m, free, done, "free") for _ in range(UNLIMITED_REQUESTS))), BOUND_S)
        assert free_outcomes == ["ok"] * UNLIMITED_REQUESTS
        # every unlimited request finished while the limited ones still waited on Redis
        assert [tag for tag, _ in done] == ["free"] * UNLIMITED_REQUESTS
        limited_outcomes = await asyncio.wait_for(asyncio.gather(*limited_tasks), BOUND_S)
        if fail_mode == "closed":
            assert limited_outcomes == ["503"] * LIMITED_REQUESTS  # CountersUnavailable, a clear 503
        else:
            assert limited_outcomes == ["ok"] * LIMITED_REQUESTS  # served on per-replica counters
            assert m._counters.fallbacks >= LIMITED_REQUESTS
        # Redis away (circuit open): unlimited keys still served, at once
        more = await asyncio.wait_for(asyncio.gather(*(_request(m, free, [], "free") for _ in range(10))), BOUND_S)
        assert more == ["ok"] * 10
        assert m.usage("free")["requests"] == 1 + UNLIMITED_REQUESTS + 10  # every one recorded once
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        await m.close()


@pytest.mark.parametrize("fail_mode", ["closed"])
async def test_every_event_is_recorded_and_spend_settles_after_the_pause(private_redis, tmp_path, fail_mode):
    proc, url = private_redis
    m = _meter(tmp_path, url, fail_mode)
    try:
        _, free = m.create_key("free")
        _, limited = m.create_key("capped", budget_usd="10")
        assert await _request(m, limited, [], "limited") == "ok"
        os.kill(proc.pid, signal.SIGSTOP)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(_request(m, free, [], "free") for _ in range(UNLIMITED_REQUESTS))), BOUND_S)
        assert outcomes == ["ok"] * UNLIMITED_REQUESTS
        os.kill(proc.pid, signal.SIGCONT)
        p = await m.aauthenticate(limited)
        r = await asyncio.wait_for(m.areserve(p, Decimal("0.01")), BOUND_S)  # served again
        await m.commit(make_event(tenant=p.tenant, key_id=p.key_id, price="0.002", ts=time.time()), r)
        assert m.usage("free")["requests"] == UNLIMITED_REQUESTS  # nothing lost, nothing doubled
        spend = await asyncio.to_thread(m.spend, p)
        assert spend["key"]["spent_usd"] == "0.003" and spend["key"]["reserved_usd"] == "0"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        await m.close()
