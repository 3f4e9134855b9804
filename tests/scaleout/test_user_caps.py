"""End-user caps within a tenant (the requests' OpenAI `user`): reserved like key and tenant
budgets, so a burst never overshoots, on one process (SQLite + in-process counters) and across
replicas (PostgreSQL + Redis counters, two Metering instances sharing them)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import pytest

from metering.conftest import make_event, utc
from tokenomy.metering import BudgetExceeded, Metering, RateLimited

from .conftest import REDIS_URL, open_backend


def _as(m: Metering, key: str, user: str | None):
    return replace(m.authenticate(key), user=user)


def test_user_at_cap_is_refused_while_another_user_is_served(meter):
    key_id, key = meter.create_key("acme", budget_usd="100")
    meter.set_user_cap("acme", "*", budget_usd="1", budget_period="daily")  # every user: $1 a day
    meter.set_user_cap("acme", "vip", budget_usd="5", budget_period="daily")  # vip: its own cap
    bob, alice, vip = (_as(meter, key, u) for u in ("bob", "alice", "vip"))

    async def run():
        r = await meter.areserve(bob, Decimal("0.6"))
        await meter.commit(make_event(tenant="acme", key_id=key_id, price="0.6", ts=meter._clock(),
                                      extra={"user": "bob"}), r)
        with pytest.raises(BudgetExceeded) as refused:
            # (the default wait: shared counters may show the settled spend a moment later)
            await meter.areserve(bob, Decimal("0.5"))
        assert refused.value.scope == "user" and refused.value.reason == "exhausted"
        assert "user 'bob' of tenant 'acme'" in refused.value.message and "daily" in refused.value.message
        assert refused.value.reset_at == utc("2026-11-28T00:00:00")  # the next UTC day
        meter.release(await meter.areserve(alice, Decimal("0.9")))  # same tenant, another user: served
        meter.release(await meter.areserve(vip, Decimal("4")))  # an override beats the default
        # no user (or the key alone) is not capped per user
        meter.release(await meter.areserve(meter.authenticate(key), Decimal("50")))

    asyncio.run(run())
    assert meter.spend(bob)["user"]["spent_usd"] == "0.6"


def test_user_spend_is_loaded_from_the_ledger(meter):
    """Spend recorded before the cap existed (or by another process) counts against it."""
    key_id, key = meter.create_key("acme")
    meter.commit_blocking(make_event(tenant="acme", key_id=key_id, price="0.75", ts=meter._clock(),
                                     extra={"user": "bob"}))
    meter.commit_blocking(make_event(tenant="acme", key_id=key_id, price="0.75", ts=meter._clock(),
                                     extra={"user": "carol"}))
    meter.set_user_cap("acme", "*", budget_usd="1")
    with pytest.raises(BudgetExceeded):
        meter.reserve(_as(meter, key, "bob"), Decimal("0.5"))
    meter.release(meter.reserve(_as(meter, key, "bob"), Decimal("0.25")))  # exactly to the cap
    meter.release(meter.reserve(_as(meter, key, "dave"), Decimal("1")))


def test_concurrent_burst_never_overshoots_a_user_cap(meter):
    _, key = meter.create_key("acme")
    meter.set_user_cap("acme", "bob", budget_usd="1")
    bob = _as(meter, key, "bob")

    async def run():
        async def one():
            try:
                return await meter.areserve(bob, Decimal("0.15"), wait_s=0)
            except BudgetExceeded as exc:
                assert exc.scope == "user"
                return None

        got = await asyncio.gather(*(one() for _ in range(40)))
        held = [r for r in got if r is not None]
        assert len(held) == 6  # floor(1 / 0.15): never a 7th
        assert meter.spend(bob)["user"]["reserved_usd"] == "0.9"
        for r in held:
            meter.release(r)
        assert meter.spend(bob)["user"]["reserved_usd"] == "0"

    asyncio.run(run())


def test_user_rate_limit_names_the_user(meter, mono):
    _, key = meter.create_key("acme")
    meter.set_user_cap("acme", "*", rpm=2)
    bob, alice = _as(meter, key, "bob"), _as(meter, key, "alice")
    meter.check_rate(bob, 10)
    meter.check_rate(bob, 10)
    with pytest.raises(RateLimited, match="user 'bob' of tenant 'acme' \\(2 requests/min\\)"):
        meter.check_rate(bob, 10)
    meter.check_rate(alice, 10)  # her own bucket
    mono.advance(30)  # 2/min refills one in 30 s
    meter.check_rate(bob, 10)


def test_two_replicas_never_overshoot_together(request, tmp_path):
    """Two Metering instances on the same PostgreSQL ledger and Redis counters (two replicas)
    bursting at one user's cap together: exactly as many reservations as fit, in all."""
    a = open_backend("postgres+redis", request, tmp_path / "a", admin_key="admin-a")
    from tokenomy.metering.backends import open_metering

    b = open_metering(tmp_path / "b", ledger_url=request.getfixturevalue("pg"), redis_url=REDIS_URL,
                      redis_prefix=request.getfixturevalue("redis_prefix"), admin_key="admin-a")
    try:
        _, key = a.create_key("acme")
        a.set_user_cap("acme", "bob", budget_usd="1")

        async def run():
            async def one(m):
                try:
                    return m, await m.areserve(_as(m, key, "bob"), Decimal("0.1"), wait_s=0)
                except BudgetExceeded:
                    return m, None

            got = await asyncio.gather(*(one(a if i % 2 else b) for i in range(30)))
            held = [(m, r) for m, r in got if r is not None]
            assert len(held) == 10
            for m, r in held:
                m.release(r)

        asyncio.run(run())
    finally:
        a.shutdown()
        b.shutdown()
