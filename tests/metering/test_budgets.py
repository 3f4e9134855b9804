"""Budgets: reserve the worst case, settle at the price; never overspend; periods; soft limits."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from tokenomy.metering import BudgetExceeded, Metering
from tokenomy.metering.sqlite_ledger import SqliteLedger

from .conftest import make_event, utc


async def _request(m, p, worst: str, price: str, rng: random.Random):
    await asyncio.sleep(rng.random() * 0.01)  # interleave reservations with settlements
    try:
        r = m.reserve(p, Decimal(worst))
    except BudgetExceeded as exc:
        return exc
    await asyncio.sleep(rng.random() * 0.005)  # "upstream" time
    await m.commit(make_event(tenant=p.tenant, key_id=p.key_id, price=price, ts=m._clock()), r)
    return "ok"


@pytest.mark.parametrize("scope", ["key", "tenant"])
async def test_200_concurrent_requests_never_overspend(meter, scope):
    if scope == "tenant":
        meter.create_tenant("acme", budget_usd="1.00")
        kid, key = meter.create_key("acme")
    else:
        kid, key = meter.create_key("acme", budget_usd="1.00")
    p = meter.authenticate(key)
    rng = random.Random(7)
    results = await asyncio.gather(*(_request(meter, p, "0.10", "0.07", rng) for _ in range(200)))
    ok = results.count("ok")
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    spent = Decimal(meter.usage("acme")["price_usd"])
    assert ok + len(refused) == 200
    assert spent == Decimal("0.07") * ok <= Decimal("1.00")
    assert 10 <= ok <= 14  # at least budget/worst-case requests fit; settling frees a few more
    exc = refused[0]
    assert exc.status == 429 and exc.code == "budget_exceeded" and exc.reset_at is None  # a total budget
    # held by requests in flight (retry soon) or exhausted (a total budget never resets)
    assert all((r.reason, r.retry_after_s) in (("held", 1.0), ("exhausted", None)) for r in refused)
    assert f"{scope} " in str(exc) and "total budget $1" in str(exc) and "$0.1" in str(exc)
    assert meter.spend(p)[scope]["reserved_usd"] == "0"  # every reservation settled


def test_threads_reserving_concurrently_never_overspend(tmp_path):
    m = Metering.open(tmp_path, admin_key="a", synchronous="NORMAL")
    kid, key = m.create_key("acme", budget_usd="1")
    p = m.authenticate(key)

    def request(i: int) -> bool:
        try:
            r = m.reserve(p, Decimal("0.1"))
        except BudgetExceeded:
            return False
        m.commit_blocking(make_event(key_id=kid, price="0.1"), r)
        return True

    with ThreadPoolExecutor(16) as pool:
        ok = sum(pool.map(request, range(200)))
    assert ok == 10 and m.usage("acme")["price_usd"] == "1"
    m.shutdown()


async def test_settles_to_the_actual_price_and_release_frees(meter):
    kid, key = meter.create_key("acme", budget_usd="1")
    p = meter.authenticate(key)
    r1 = meter.reserve(p, Decimal("0.6"))
    with pytest.raises(BudgetExceeded):
        meter.reserve(p, Decimal("0.5"))  # 0.6 held + 0.5 > 1
    await meter.commit(make_event(key_id=kid, price="0.2", ts=meter._clock()), r1)  # settles at 0.2
    r2 = meter.reserve(p, Decimal("0.8"))  # 0.2 spent + 0.8 = 1: fits exactly
    meter.release(r2)
    meter.release(r2)  # idempotent
    assert meter.spend(p)["key"] == {"spent_usd": "0.2", "reserved_usd": "0", "budget_usd": "1",
                                     "budget_period": "total", "soft_budget_usd": None}


@pytest.mark.parametrize("period,before,after", [
    ("daily", "2026-11-27T23:59:00", "2026-11-28T00:00:01"),
    ("monthly", "2026-11-30T23:59:00", "2026-12-01T00:00:01"),
])
async def test_periods_roll_over_on_the_utc_calendar(tmp_path, wall, mono, period, before, after):
    wall.t = utc(before)
    m = Metering.open(tmp_path, admin_key="a", clock=wall, monotonic=mono)
    kid, key = m.create_key("acme", budget_usd="1", budget_period=period)
    p = m.authenticate(key)
    await m.commit(make_event(key_id=kid, price="0.9", ts=wall()), m.reserve(p, Decimal("0.9")))
    with pytest.raises(BudgetExceeded, match=f"{period} .*resets at"):
        m.reserve(p, Decimal("0.2"))
    wall.t = utc(after)
    m.release(m.reserve(p, Decimal("1")))  # a fresh period: the whole budget again
    await m.close()
    # a restarted gateway rebuilds spend per period from the ledger
    wall.t = utc(before)
    again = Metering.open(tmp_path, admin_key="a", clock=wall, monotonic=mono)
    with pytest.raises(BudgetExceeded):
        again.reserve(p, Decimal("0.2"))
    wall.t = utc(after)
    again.release(again.reserve(p, Decimal("1")))
    again.shutdown()


async def test_total_budget_never_resets_and_is_rebuilt_on_restart(tmp_path, wall, mono):
    m = Metering.open(tmp_path, admin_key="a", clock=wall, monotonic=mono)
    kid, key = m.create_key("acme", budget_usd="1")
    p = m.authenticate(key)
    await m.commit(make_event(key_id=kid, price="0.9", ts=wall()), m.reserve(p, Decimal("0.9")))
    await m.close()
    wall.advance(400 * 86400)
    again = Metering.open(tmp_path, admin_key="a", clock=wall, monotonic=mono)
    with pytest.raises(BudgetExceeded, match="spent \\$0.9"):
        again.reserve(p, Decimal("0.2"))
    again.shutdown()


async def test_soft_budget_warns_and_is_audited_once_per_period(meter, wall):
    meter.create_tenant("acme", soft_budget_usd="0.5", budget_period="daily")
    kid, key = meter.create_key("acme")
    p = meter.authenticate(key)
    await meter.commit(make_event(key_id=kid, price="0.4", ts=wall()))
    assert meter.warnings(p) == []
    await meter.commit(make_event(key_id=kid, price="0.2", ts=wall()))
    (warning,) = meter.warnings(p)
    assert "tenant 'acme'" in warning and "$0.6" in warning and "soft budget of $0.5" in warning
    assert len(meter.warnings(p)) == 1
    await meter.commit(make_event(key_id=kid, price="0.01", ts=wall()))  # flushes the queued audit row
    wall.advance(86400)
    assert meter.warnings(p) == []  # new day
    audits = meter.audits("soft_limit")
    assert [(a.scope, a.subject, a.period_key) for a in audits] == [("tenant", "acme", "daily:2026-11-27")]


class FlakyLedger(SqliteLedger):
    """Fails the next append: before writing (nothing recorded) or after committing (recorded,
    but the caller sees an error - the worst case for double counting)."""

    mode: str | None = None

    def append(self, events, audits=()):
        mode, self.mode = self.mode, None
        if mode == "before":
            raise sqlite3.OperationalError("disk I/O error")
        result = super().append(events, audits)
        if mode == "after":
            raise sqlite3.OperationalError("disk I/O error after commit")
        return result


@pytest.mark.parametrize("mode", ["before", "after"])
async def test_failed_commit_keeps_the_reservation_and_retry_never_double_counts(tmp_path, mode):
    ledger = FlakyLedger(tmp_path / "ledger.db")
    m = Metering(ledger)
    kid, key = m.create_key("acme", budget_usd="1")
    p = m.authenticate(key)
    r = m.reserve(p, Decimal("0.5"))
    event = make_event(key_id=kid, price="0.3", ts=m._clock())
    ledger.mode = mode
    with pytest.raises(sqlite3.OperationalError):
        await m.commit(event, r)
    assert m.spend(p)["key"]["reserved_usd"] == "0.5"  # still held: not lost, not billed twice
    recorded_now = await m.commit(event, r)  # the caller retries with the same id
    assert recorded_now is (mode == "before")
    assert ledger.count_event(event.id) == 1
    state = m.spend(p)["key"]
    assert (state["spent_usd"], state["reserved_usd"], m.usage("acme")["price_usd"]) == ("0.3", "0", "0.3")
    assert await m.commit(event, r) is False and m.spend(p)["key"]["spent_usd"] == "0.3"
    await m.close()
    again = Metering.open(tmp_path, admin_key="a")
    assert again.spend(p)["key"]["spent_usd"] == "0.3"
    again.shutdown()


def test_admin_and_unbudgeted_keys_are_not_limited(meter):
    _, key = meter.create_key("acme")
    for p in (meter.authenticate(key), meter.authenticate("test-admin-key")):
        r = meter.reserve(p, Decimal("1000000"))
        assert r.amount_usd == Decimal("1000000")
        meter.release(r)
