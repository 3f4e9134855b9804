"""The async metering API the gateway calls (aauthenticate, acheck_rate, areserve, atop_up,
aheadroom_usd), on both backend pairs: sqlite+in-process and PostgreSQL+Redis."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tokenomy.metering import AuthError, BudgetExceeded, RateLimited

from .conftest import make_event, utc


BOUND_S = 30  # generous: only catches a hang, never measures speed


async def _commit(meter, p, price: str, reservation=None):
    assert await meter.commit(make_event(tenant=p.tenant, key_id=p.key_id, price=price, ts=meter._clock()),
                              reservation)


async def test_aauthenticate_matches_authenticate_and_caches_unknown_ids(meter):
    key_id, secret = meter.create_key("acme")
    p = await meter.aauthenticate(secret)
    assert (p.key_id, p.tenant, p.is_admin) == (key_id, "acme", False)
    assert (await meter.aauthenticate("test-admin-key")).is_admin
    for bad in ("", "tk-nothere-secret", "garbage", secret + "x"):
        with pytest.raises(AuthError):
            await meter.aauthenticate(bad)
    lookups = []
    real = meter.ledger.get_key
    meter.ledger.get_key = lambda kid: lookups.append(kid) or real(kid)
    for _ in range(5):
        with pytest.raises(AuthError):
            await meter.aauthenticate("tk-unknown1-secret")
    assert lookups == ["unknown1"]  # negative cache: one ledger read for five attempts
    meter._monotonic.advance(meter._ttl + 0.1)
    with pytest.raises(AuthError):
        await meter.aauthenticate("tk-unknown1-secret")
    assert lookups == ["unknown1", "unknown1"]  # short TTL: a key created elsewhere is seen soon
    new_id, new_secret = meter.create_key("acme")
    assert (await meter.aauthenticate(new_secret)).key_id == new_id
    meter.revoke_key(key_id)
    with pytest.raises(AuthError, match="revoked"):
        await meter.aauthenticate(secret)


async def test_acheck_rate_limits_like_check_rate(meter):
    _, secret = meter.create_key("acme", rpm=2)
    p = await meter.aauthenticate(secret)
    await meter.acheck_rate(p, 10)
    await meter.acheck_rate(p, 10)
    with pytest.raises(RateLimited) as info:
        await meter.acheck_rate(p, 10)
    assert info.value.retry_after_s == pytest.approx(30.0)
    _, free = meter.create_key("acme")
    q = await meter.aauthenticate(free)
    for _ in range(50):
        await meter.acheck_rate(q, 10_000)  # no limits: never refused


async def test_areserve_waits_for_a_held_budget_to_settle(meter):
    _, secret = meter.create_key("acme", budget_usd="1.00")
    p = await meter.aauthenticate(secret)
    first = await meter.areserve(p, Decimal("0.60"))
    assert await meter.aheadroom_usd(p) == Decimal("0.40")

    async def settle_later():
        await asyncio.sleep(0.05)
        await _commit(meter, p, "0.30", first)

    settler = asyncio.create_task(settle_later())
    second = await asyncio.wait_for(meter.areserve(p, Decimal("0.60"), wait_s=BOUND_S), BOUND_S * 2)
    await settler
    assert second.amount_usd == Decimal("0.6")
    assert await meter.aheadroom_usd(p) == Decimal("0.10")  # 1.00 - 0.30 spent - 0.60 held

    with pytest.raises(BudgetExceeded) as info:  # nothing settles within the bound
        await meter.areserve(p, Decimal("0.50"), wait_s=0.05)
    assert (info.value.reason, info.value.retry_after_s, info.value.reset_at) == ("held", 1.0, None)
    assert "held by requests in flight" in info.value.message
    meter.release(second)


async def test_areserve_refuses_an_exhausted_budget_at_once(meter):
    _, secret = meter.create_key("acme", budget_usd="1.00", budget_period="daily")
    p = await meter.aauthenticate(secret)
    await _commit(meter, p, "0.90", await meter.areserve(p, Decimal("0.95")))
    # would wait an hour if it waited: the bound catches that
    with pytest.raises(BudgetExceeded) as info:
        await asyncio.wait_for(meter.areserve(p, Decimal("0.20"), wait_s=3600), BOUND_S)
    exc = info.value
    assert exc.reason == "exhausted" and exc.status == 429 and "exhausted" in exc.message
    assert exc.reset_at == utc("2026-11-28T00:00:00")  # the fake wall clock is 2026-11-27T12:00
    assert exc.retry_after_s == pytest.approx(12 * 3600)
    assert await meter.aheadroom_usd(p) == Decimal("0.10")


async def test_atop_up_grows_a_reservation_on_every_scope_or_not_at_all(meter):
    meter.create_tenant("acme", budget_usd="2.00")
    _, secret = meter.create_key("acme", budget_usd="1.00")
    p = await meter.aauthenticate(secret)
    r = await meter.areserve(p, Decimal("0.40"))
    assert await meter.atop_up(r, Decimal("0.50"))
    assert r.amount_usd == Decimal("0.9")
    assert meter.spend(p)["key"]["reserved_usd"] == meter.spend(p)["tenant"]["reserved_usd"] == "0.9"
    assert not await meter.atop_up(r, Decimal("0.20"))  # the key's $1 would be exceeded
    assert r.amount_usd == Decimal("0.9") and meter.spend(p)["tenant"]["reserved_usd"] == "0.9"
    assert await meter.aheadroom_usd(p) == Decimal("0.10")
    await _commit(meter, p, "0.70", r)  # settling releases the whole grown amount
    assert meter.spend(p)["key"]["reserved_usd"] == "0" and meter.spend(p)["key"]["spent_usd"] == "0.7"
    assert not await meter.atop_up(r, Decimal("0.01"))  # settled: nothing to grow
    assert await meter.aheadroom_usd(p) == Decimal("0.30")


async def test_headroom_is_none_without_a_hard_budget_and_admin_is_unlimited(meter):
    _, secret = meter.create_key("acme")
    p = await meter.aauthenticate(secret)
    assert await meter.aheadroom_usd(p) is None
    r = await meter.areserve(p, Decimal("1000"))
    assert await meter.atop_up(r, Decimal("5")) and r.amount_usd == Decimal("1005")
    meter.release(r)
    admin = await meter.aauthenticate("test-admin-key")
    assert await meter.aheadroom_usd(admin) is None


async def test_concurrent_areserve_spends_most_of_a_budget_and_never_more(meter):
    _, secret = meter.create_key("acme", budget_usd="1.00")
    p = await meter.aauthenticate(secret)

    async def one(i: int):
        try:
            r = await meter.areserve(p, Decimal("0.10"), wait_s=BOUND_S)
        except BudgetExceeded as exc:
            return exc.reason
        await asyncio.sleep(0.001 * (i % 5))
        await _commit(meter, p, "0.10", r)
        return "ok"

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(30))), BOUND_S * 2)
    # waiting for in-flight requests instead of refusing: all ten that fit are served
    assert results.count("ok") == 10 and results.count("exhausted") == 20
    assert meter.usage("acme")["price_usd"] == "1"
