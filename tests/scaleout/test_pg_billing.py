"""Billing's ledger sources: the PostgreSQL one answers every method exactly like the SQLite one
(same rows, same order: ids compare bytewise on both), and is chosen from the ledger URL."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest

from dashboard.pgschema import own_schema_fixtures
from tokenomy.billing.ledger_source import LedgerSource, PostgresLedgerSource, open_ledger_source
from tokenomy.billing.periods import parse_period
from tokenomy.errors import TokenomyError
from tokenomy.metering import Metering, UsageEvent
from tokenomy.metering.postgres_ledger import PostgresLedger

from .conftest import utc

IDS = ["ev-B", "ev-a", "ev-_", "ev-Z", "ev-é", "ev-1"]  # "C" order differs from most locales' order


pg_module_url, pg = own_schema_fixtures("pgbill")  # a schema of this module's own


def _event(eid: str, ts: float, tenant: str, status: str = "ok", tokens: int = 10) -> UsageEvent:
    return UsageEvent(id=eid, ts=ts, tenant=tenant, key_id="k", model="chat", deployment="d1", input_tokens=tokens,
                      cached_input_tokens=tokens // 2, output_tokens=3, reasoning_tokens=0,
                      cost_usd=Decimal("0.000001234567"), price_usd=Decimal("1.5"), energy_joules=2.5,
                      ttft_ms=None, latency_ms=9.0, status=status)


def _events() -> list[tuple[UsageEvent, float]]:
    """(event, recorded_at): ties on ts, errors, a late arrival, three months, two tenants."""
    nov = utc("2026-11-10T00:00:00")
    out = [(_event(eid, nov, "acme", tokens=10 + i), nov) for i, eid in enumerate(IDS)]
    out.append((_event("ev-err", nov + 1, "acme", status="upstream_error"), nov + 1))
    out.append((_event("ev-late", utc("2026-11-30T23:00:00"), "acme"), utc("2026-12-05T00:00:00")))
    out.append((_event("ev-sep", utc("2026-09-15T00:00:00"), "globex"), utc("2026-09-15T00:00:00")))
    out.append((_event("ev-cancel", nov + 2, "globex", status="cancelled"), nov + 2))
    return out


@pytest.fixture
def sources(pg, tmp_path):
    rows = _events()
    led = PostgresLedger.open(pg)
    led.append([e for e, _ in rows])
    with led.engine.begin() as conn:
        for e, rec in rows:
            conn.exec_driver_sql("UPDATE events SET recorded_at = %s WHERE id = %s", (rec, e.id))
    led.close()
    m = Metering.open(tmp_path, ensure_admin=False, synchronous="OFF")
    m.ledger.append([e for e, _ in rows])
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.executemany("UPDATE events SET recorded_at = ? WHERE id = ?", [(rec, e.id) for e, rec in rows])
    lite, pgs = LedgerSource(tmp_path), PostgresLedgerSource(pg)
    yield lite, pgs
    lite.close(), pgs.close(), m.shutdown()


def test_every_method_answers_the_same(sources):
    lite, pgs = sources
    nov, dec = parse_period("2026-11"), parse_period("2026-12")
    assert lite.tenants() == pgs.tenants() == ["acme", "globex"]
    a = lite.events("acme", nov.start, nov.end)
    assert a == pgs.events("acme", nov.start, nov.end)
    assert [e.id for e in a[:6]] == sorted(IDS, key=lambda s: s.encode())  # ties by id, bytewise
    assert len(a) == 7 and a[0].cost_usd == Decimal("0.000001234567")  # errors are not billable
    assert lite.events("acme", nov.start, nov.end, recorded_before=nov.end) == \
        pgs.events("acme", nov.start, nov.end, recorded_before=nov.end)
    assert len(pgs.events("acme", nov.start, nov.end, recorded_before=nov.end)) == 6
    assert lite.events(None, 0, 2e9) == pgs.events(None, 0, 2e9)
    assert lite.count("acme", nov.start, nov.end) == pgs.count("acme", nov.start, nov.end) == 7
    assert lite.events_by_tenant(0, 2e9) == pgs.events_by_tenant(0, 2e9)
    assert lite.late_periods("acme", dec.start, 72 * 3600) == pgs.late_periods("acme", dec.start, 72 * 3600) == {nov}
    assert lite.late_periods("acme", dec.start, 6 * 86400) == pgs.late_periods("acme", dec.start, 6 * 86400) == set()
    assert lite.months() == pgs.months() == [parse_period(p) for p in ("2026-09", "2026-10", "2026-11")]
    t = utc("2026-11-10T00:30:00")
    ca, cb = lite.rolling_counter("acme", t, 3600), pgs.rolling_counter("acme", t, 3600)
    va, vb = ca.view(t), cb.view(t)
    for unit in ("requests", "tokens"):
        assert va.used(3600, unit) == vb.used(3600, unit) > 0
        assert va.reset_at(3600, unit, 2) == vb.reset_at(3600, unit, 2)
    assert va.used(3600, "requests") == 6  # ev-err is not billable


def test_the_source_follows_the_ledger_url(pg, tmp_path, monkeypatch):
    monkeypatch.delenv("TOKENOMY_LEDGER_URL", raising=False)
    s = open_ledger_source(tmp_path)
    assert isinstance(s, LedgerSource) and s.tenants() == []  # no ledger.db: empty, not created
    assert not (tmp_path / "ledger.db").exists()
    monkeypatch.setenv("TOKENOMY_LEDGER_URL", pg)
    s = open_ledger_source(tmp_path)
    assert isinstance(s, PostgresLedgerSource) and s.url == pg
    s.close()
    with pytest.raises(TokenomyError, match="cannot open the PostgreSQL ledger at postgresql://postgres@127.0.0.1:1/"):
        open_ledger_source(tmp_path, ledger_url="postgresql://postgres@127.0.0.1:1/test")


def test_a_schema_without_the_ledger_reads_as_empty(pg_url):
    url = pg_url.replace("schema=", "schema=nothing_") if "schema=" in pg_url else pg_url
    s = PostgresLedgerSource(url)
    try:
        assert s.tenants() == [] and s.months() == [] and s.events(None, 0, 2e9) == []
    finally:
        s.close()
        from dashboard.pgschema import drop_schema

        drop_schema(url)
