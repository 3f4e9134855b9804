"""Invoices over a real ledger (SQLite and PostgreSQL): determinism, grace, closing, immutability, adjustments, credits."""

from __future__ import annotations

import sqlite3
from decimal import Decimal as D

import pytest

from tokenomy.billing.periods import parse_period
from tokenomy.billing.plans import parse_plans
from tokenomy.billing.service import Billing
from tokenomy.errors import TokenomyError

from .helpers import amounts, utc

NOV, DEC = parse_period("2026-11"), parse_period("2026-12")
BOOK = parse_plans({
    "billing": {"grace_hours": 72},
    "plans": {"meter": {"usage": {"input": {"usd": 2}, "output": {"usd": 8}}}},
    "tenants": {"acme": {"subscriptions": [{"plan": "meter", "start": "2026-01-01"}],
                         "credits": [{"id": "promo", "amount_usd": 5, "granted_at": "2026-11-01",
                                      "expires_at": "2027-01-01"}]}},
})


def billing(ledger, now: str = "2026-12-10T00:00:00") -> Billing:
    return Billing.open(ledger.data_dir, BOOK, ledger_url=ledger.url, clock=lambda: utc(now))


def test_regenerating_an_invoice_is_identical(ledger):
    for i in range(5):
        ledger.add("acme", utc(f"2026-11-0{i + 1}T10:00:00"), input_tokens=1_000_000 + i, output_tokens=10_000)
    a = billing(ledger).invoice("acme", NOV).to_dict()
    b = billing(ledger).invoice("acme", NOV).to_dict()
    assert a == b and a["fingerprint"] == b["fingerprint"]
    assert a["usage"]["requests"] == 5
    # 5,000,010 input x $2/M + 50,000 output x $8/M = 10.00002 + 0.4 = 10.40002; $5 credit
    assert a["charges_usd"] == "10.40002" and a["credits_usd"] == "5" and a["total_usd"] == "5.40"


def test_errors_are_not_billed_and_list_price_is_the_default(ledger):
    ledger.add("walkin", utc("2026-11-03T00:00:00"), price="1.25", cost="0.5")
    ledger.add("walkin", utc("2026-11-03T00:00:01"), price="9", cost="9", status="error")
    inv = billing(ledger).invoice("walkin", NOV)
    assert amounts(inv.lines, "list") == [D("1.25")] and inv.total_usd == D("1.25")


def test_late_events_within_grace_bill_in_their_own_period(ledger):
    ledger.add("acme", utc("2026-11-30T23:00:00"), input_tokens=1_000_000, recorded_at=utc("2026-12-02T00:00:00"))
    ledger.add("acme", utc("2026-11-30T23:30:00"), input_tokens=2_000_000, recorded_at=utc("2026-12-05T00:00:00"))
    b = billing(ledger)
    nov = b.invoice("acme", NOV)
    assert nov.charges_usd == D(2) and nov.late_events == 1  # the second arrived after Dec 4 00:00 (grace end)
    dec = b.invoice("acme", DEC)
    assert [(li.kind, li.period, li.amount_usd) for li in dec.lines if li.kind == "adjustment"] == \
        [("adjustment", "2026-11", D(4))]


def test_closing_is_refused_inside_the_grace_window(ledger):
    ledger.add("acme", utc("2026-11-10T00:00:00"), input_tokens=1000)
    with pytest.raises(TokenomyError, match="cannot close before 2026-12-04T00:00:00Z"):
        billing(ledger, now="2026-12-03T23:59:59").close_period("acme", NOV)
    assert billing(ledger, now="2026-12-03T23:59:59").close_period("acme", NOV, force=True).status == "closed"


def test_closed_period_is_immutable_and_corrections_become_adjustments(ledger):
    ledger.add("acme", utc("2026-11-10T00:00:00"), input_tokens=3_000_000)
    closed = billing(ledger).close_period("acme", NOV)
    assert closed.status == "closed" and closed.total_usd == D("1.00")  # $6 - $5 credit
    # a correction arrives after closing: an event of November recorded on December 20
    ledger.add("acme", utc("2026-11-11T00:00:00"), input_tokens=500_000, output_tokens=100_000,
               recorded_at=utc("2026-12-20T00:00:00"))
    b = billing(ledger, now="2026-12-21T00:00:00")
    again = b.invoice("acme", NOV)
    assert again.to_dict() == closed.to_dict()  # byte-for-byte the stored invoice
    dec = b.invoice("acme", DEC)
    # re-rated November: 3.5 M x 2 + 0.1 M x 8 = 7.8 vs 6 billed -> +1.8; the credit is used up
    assert amounts(dec.lines, "adjustment") == [D("1.8")]
    assert amounts(dec.lines, "credit") == [] and dec.total_usd == D("1.80")
    with sqlite3.connect(ledger.data_dir / "billing.db") as conn:
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            conn.execute("UPDATE billing_invoices SET total_usd = '0'")
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            conn.execute("DELETE FROM billing_invoices")
    # closing December carries the adjustment; January then has nothing left to correct
    billing(ledger, now="2027-01-05T00:00:00").close_period("acme", DEC)
    jan = billing(ledger, now="2027-01-05T00:00:00").invoice("acme", parse_period("2027-01"))
    assert amounts(jan.lines, "adjustment") == []


def test_credit_balance_carries_over_open_periods(ledger):
    ledger.add("acme", utc("2026-11-10T00:00:00"), input_tokens=1_500_000)  # $3 of the $5 credit
    ledger.add("acme", utc("2026-12-10T00:00:00"), input_tokens=1_500_000)  # $3: $2 credit left
    dec = billing(ledger).invoice("acme", DEC)
    assert dec.credits == [{"id": "promo", "drawn_usd": "2", "remaining_usd": "0", "state": "used"}]  # exhausted: "used", not "expired"
    assert dec.total_usd == D("1.00")


def test_unknown_tenant_is_a_clear_error(ledger):
    ledger.add("acme", utc("2026-11-10T00:00:00"))
    with pytest.raises(TokenomyError, match="unknown tenant 'acmee'; did you mean acme"):
        billing(ledger).invoice("acmee", NOV)


def test_a_tenant_paying_exactly_cost_has_no_negative_margin(ledger):
    """List price == serving cost, in amounts below the invoice's line quantum (1e-6 USD): the
    invoice rounds each line, so the margin is the rounding, not a loss (was reported as -46 %)."""
    from tokenomy.billing.margins import margins

    for i, c in enumerate(("0.0000013", "0.00000042", "0.0000031")):
        ledger.add("acme", utc(f"2026-11-0{i + 1}T10:00:00"), input_tokens=10, cost=c, price=c)
    ledger.add("loss", utc("2026-11-02T10:00:00"), input_tokens=10, cost="0.50", price="0.40")
    b = Billing.open(ledger.data_dir, parse_plans({"plans": {}, "default_plan": "list"}), ledger_url=ledger.url,
                     clock=lambda: utc("2026-12-10T00:00:00"))
    out = margins(b, NOV)
    rows = {r["key"]: r for r in out["rows"]}
    assert out["negative_margin_tenants"] == ["loss"]  # a real loss is still one
    assert rows["acme"]["margin_usd"] == "0" and rows["acme"]["margin_share"] == 0.0
    assert rows["loss"]["margin_usd"] == "-0.1"
