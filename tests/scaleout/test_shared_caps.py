"""Plan caps shared by replicas through Redis (issue 9): a cap of N requests admits at most N
across every replica (in-flight requests counted), usage recorded by one replica binds the
others, a dead replica's in-flight slots are dropped, the tenant's recent usage is loaded
from the ledger once, and the counters' fail mode holds (closed: 503; open: local caps)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from tokenomy.billing.caps import check_caps
from tokenomy.billing.plans import parse_plans
from tokenomy.billing.redis_caps import RedisCaps, SharedView, bucket_seconds, bucket_stamp
from tokenomy.config import default_config
from tokenomy.gateway.errors import ApiError
from tokenomy.gateway.plans import PlanGate
from tokenomy.metering.redis_counters import CountersUnavailable, RedisCounterStore

HOUR = 3600.0
BOOK = parse_plans({"plans": {
    "capped": {"subscription_usd": 20, "caps": [{"window": "1h", "limit": 5, "unit": "requests", "at_cap": "block"},
                        {"window": "1w", "limit": 100, "unit": "tokens", "at_cap": "downgrade",
                         "downgrade_group": "small"}]},
}, "tenants": {"acme": {"subscriptions": [{"plan": "capped", "start": 0}]},
               "beta": {"subscriptions": [{"plan": "capped", "start": 0}]}}})
PLAN = BOOK.plans["capped"]
WINDOWS = [c.window_seconds for c in PLAN.caps]
DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


class Events:
    """A ledger source: the tenant's committed events (ts, tokens); counts its reads."""

    def __init__(self, events):
        self.rows, self.reads = events, 0

    def events(self, tenant, since, until, recorded_before=None):
        self.reads += 1
        return [SimpleNamespace(ts=ts, tokens=tok) for t, ts, tok in self.rows if t == tenant and since <= ts < until]

    def close(self):
        pass


@pytest.fixture
def replicas(redis_url, redis_prefix):
    """Two replicas' cap stores over one Redis prefix (each its own connection, id, heartbeat)."""
    made: list[RedisCaps] = []

    def make(source=None, fail_mode="closed", url=None) -> RedisCaps:
        store = RedisCounterStore(url or redis_url, prefix=redis_prefix, fail_mode=fail_mode)
        caps = RedisCaps(store, WINDOWS, source)
        made.append(caps)
        return caps

    yield make
    for c in made:
        c.close()


def test_bucket_math_and_the_view_match_the_in_process_rules():
    assert bucket_seconds(HOUR) == 60 and bucket_seconds(5 * HOUR) == 75 and bucket_seconds(7 * 86400) == 2520
    assert bucket_stamp(7199.9, 60) == 7200 and bucket_stamp(7200.0, 60) == 7260
    # 3 requests in two buckets + 2 in flight, cap 5 requests / 1 h: reached; frees when the
    # oldest bucket (2 requests) leaves the window
    view = SharedView(10_000.0, 2, {HOUR: (3, 40)}, {HOUR: [(7_000, 2, 30), (9_000, 1, 10)]})
    assert view.used(HOUR, "requests") == 5 and view.used(HOUR, "tokens") == 40
    assert view.reset_at(HOUR, "requests", 5) == 7_000 + HOUR
    assert view.reset_at(HOUR, "requests", 6) == 10_000.0
    assert SharedView(10_000.0, 5, {HOUR: (0, 0)}, {}).reset_at(HOUR, "requests", 5) == 10_000.0 + HOUR
    d = check_caps(PLAN, view)
    assert d.action == "block" and d.reset_at == 7_000 + HOUR and "5 used" in d.message


def test_a_requests_cap_holds_across_replicas_with_requests_in_flight(replicas):
    a, b = replicas(), replicas()
    now = time.time()
    decisions = [(a if i % 2 else b).check("acme", PLAN, now) for i in range(8)]
    admitted = [held for _, held in decisions]
    assert admitted == [True] * 5 + [False] * 3  # 5 in flight across both replicas, then blocked
    blocked = decisions[-1][0]
    assert blocked.action == "block" and blocked.reset_at == pytest.approx(now + HOUR)  # in flight alone
    # two finish on replica a: recorded, then their slots released (queued, applied in order)
    for _ in range(2):
        a.record("acme", now, tokens=30)
        a.release("acme")
    a.store._replay()
    d, held = b.check("acme", PLAN, now + 1)
    assert (d.action, held) == ("block", False)  # 2 recorded + 3 in flight
    assert d.reset_at == bucket_stamp(now, 60) + HOUR  # the recorded ones' bucket leaves the window
    assert b.check("beta", PLAN, now)[1] is True  # another tenant is not affected


def test_tokens_recorded_on_one_replica_downgrade_the_other(replicas):
    a, b = replicas(), replicas()
    now = time.time()
    d, held = a.check("acme", PLAN, now)
    assert (d.action, held) == ("allow", True)
    a.record("acme", now, tokens=120)
    a.release("acme")
    a.store._replay()
    d, held = b.check("acme", PLAN, now + 1)
    assert d.action == "downgrade" and d.downgrade_group == "small" and held is True
    assert "120 used" in d.message


def test_a_dead_replicas_in_flight_requests_are_dropped(replicas):
    a, b = replicas(), replicas()
    now = time.time()
    assert [b.check("acme", PLAN, now)[1] for _ in range(5)] == [True] * 5
    assert a.check("acme", PLAN, now)[1] is False
    b.store.close()  # its heartbeat goes: its in-flight slots no longer count
    assert a.check("acme", PLAN, now)[1] is True


def test_usage_is_loaded_from_the_ledger_once_across_replicas(replicas):
    now = time.time()
    source = Events([("acme", now - 600, 10), ("acme", now - 300, 10), ("acme", now - 2 * HOUR, 90),
                     ("beta", now - 60, 10)])
    a, b = replicas(source), replicas(source)
    d, held = a.check("acme", PLAN, now)
    assert (d.action, held) == ("downgrade", True)  # 110 tokens this week (the 1 h window has 2 requests)
    assert source.reads == 1
    assert [b.check("acme", PLAN, now)[1] for _ in range(3)] == [True, True, False]  # 2 + 1 + 2 in flight = 5
    assert source.reads == 1  # loaded once, by whichever replica came first


def test_fail_mode_closed_is_a_503_and_open_falls_back_to_local_caps(replicas):
    closed = replicas(fail_mode="closed", url=DEAD_URL)
    with pytest.raises(CountersUnavailable, match="fail_mode is 'closed'"):
        closed.check("acme", PLAN, time.time())
    gate = PlanGate(BOOK, shared=closed)
    with pytest.raises(ApiError) as info:
        gate.check("acme", time.time())
    assert info.value.status == 503 and "Redis" in info.value.message and "Retry-After" in info.value.headers

    opened = replicas(fail_mode="open", url=DEAD_URL)
    assert opened.check("acme", PLAN, time.time()) is None
    gate = PlanGate(BOOK, shared=opened)
    states = [gate.check("acme", time.time()) for _ in range(6)]
    assert [s.action for s in states] == ["allow"] * 5 + ["block"]  # this replica's own cap of 5
    assert not any(s.shared for s in states)


def test_plan_gate_uses_the_shared_counters_when_configured(replicas, redis_url, redis_prefix, monkeypatch):
    from tokenomy.gateway.plans import open_shared_caps

    cfg = default_config().model_copy(update={"counters": default_config().counters.model_copy(
        update={"url": redis_url, "prefix": redis_prefix, "fail_mode": "open"})})
    shared = open_shared_caps(cfg, BOOK)
    try:
        assert shared is not None and shared.store.fail_mode == "open" and shared.windows == sorted(WINDOWS)
        gates = [PlanGate(BOOK, shared=shared), PlanGate(BOOK, shared=replicas())]
        states = [gates[i % 2].check("acme", time.time()) for i in range(7)]
        assert [s.action for s in states] == ["allow"] * 5 + ["block"] * 2
        gates[0].finish("acme", states[0])  # released without a record: a slot frees up
        shared.store._replay()
        assert gates[1].check("acme", time.time()).action == "allow"
    finally:
        shared.close()
    monkeypatch.delenv("TOKENOMY_REDIS_URL", raising=False)
    assert open_shared_caps(default_config(), BOOK) is None  # no Redis configured: in-process caps
    monkeypatch.setenv("TOKENOMY_REDIS_URL", redis_url)
    from_env = open_shared_caps(default_config(), BOOK)
    assert from_env is not None and from_env.store.fail_mode == "closed"
    from_env.close()


def test_a_failed_ledger_read_gives_up_the_load_lease(replicas):
    class Broken(Events):
        def events(self, *args, **kwargs):
            raise RuntimeError("ledger unreadable")

    now = time.time()
    with pytest.raises(CountersUnavailable, match="cannot load the plan-cap usage of tenant 'acme' from the ledger: "
                                                  "ledger unreadable"):
        replicas(Broken([])).check("acme", PLAN, now)
    good = Events([("acme", now - 60, 7)])
    d, held = replicas(good).check("acme", PLAN, now)  # no waiting out the lease
    assert good.reads == 1 and (d.action, held) == ("allow", True)


async def test_acheck_decides_like_check_across_replicas_and_loads_once(replicas):
    """The request path's async check (redis.asyncio): same decisions, same shared counters."""
    now = time.time()
    source = Events([("acme", now - 60, 10), ("acme", now - 30, 10)])
    a, b = replicas(source), replicas(source)
    decisions = [await (a if i % 2 else b).acheck("acme", PLAN, now) for i in range(5)]
    assert [held for _, held in decisions] == [True] * 3 + [False] * 2  # 2 loaded + 3 in flight = 5
    assert source.reads == 1  # loaded from the ledger once, across both replicas
    sync_d, sync_held = a.check("acme", PLAN, now)  # the sync path sees the same counters
    assert (sync_d.action, sync_held) == ("block", False)


async def test_acheck_fail_modes_on_an_unreachable_redis(replicas):
    closed = replicas(url=DEAD_URL)
    with pytest.raises(CountersUnavailable):
        await closed.acheck("acme", PLAN, time.time())
    opened = replicas(url=DEAD_URL, fail_mode="open")
    assert await opened.acheck("acme", PLAN, time.time()) is None  # the gate falls back to local caps


async def test_plan_gate_acheck_shared_local_and_uncapped(replicas):
    book = parse_plans({"plans": {**{n: p.model_dump(by_alias=True) for n, p in BOOK.plans.items()},
                                  "free": {"subscription_usd": 0}},
                        "tenants": {"acme": {"subscriptions": [{"plan": "capped", "start": 0}]},
                                    "open": {"subscriptions": [{"plan": "free", "start": 0}]}}})
    shared = PlanGate(book, shared=replicas())
    states = [await shared.acheck("acme", time.time()) for _ in range(6)]
    assert [s.action for s in states] == ["allow"] * 5 + ["block"] and all(s.shared for s in states[:5])
    dead = PlanGate(book, shared=replicas(url=DEAD_URL))
    uncapped = await dead.acheck("open", time.time())  # no caps: Redis never asked, even when it is down
    assert uncapped.action == "allow" and not uncapped.tracked
    with pytest.raises(ApiError) as info:
        await dead.acheck("acme", time.time())
    assert info.value.status == 503
    local = PlanGate(book)  # no Redis configured: in-process caps
    assert [(await local.acheck("acme", time.time())).action for _ in range(6)] == ["allow"] * 5 + ["block"]
