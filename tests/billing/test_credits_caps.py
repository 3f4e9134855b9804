"""Credits (priority, expiry, carry-over), cap decisions, and the sum-of-lines property."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenomy.billing.caps import RollingCounter, UsageWindow, check_caps
from tokenomy.billing.credits import apply_draws, draw, initial_balances
from tokenomy.billing.invoice import assemble
from tokenomy.billing.periods import parse_period
from tokenomy.billing.plans import CreditGrant, Plan
from tokenomy.billing.rating import rate_period

from .helpers import amounts, book, ev, utc
from .test_rating import PAYG

NOV, DEC = parse_period("2026-11"), parse_period("2026-12")


def grants():
    return [
        CreditGrant(id="a-big", amount_usd=100, priority=1, granted_at=utc("2026-10-01T00:00:00")),
        CreditGrant(id="b-expired", amount_usd=50, priority=0, granted_at=utc("2026-09-01T00:00:00"),
                    expires_at=utc("2026-10-31T00:00:00")),
        CreditGrant(id="c-mid", amount_usd=40, priority=0, granted_at=utc("2026-10-01T00:00:00"),
                    expires_at=utc("2026-11-15T00:00:00")),
        CreditGrant(id="d-later", amount_usd=20, priority=0, granted_at=utc("2026-12-05T00:00:00")),
    ]


def test_credits_drawn_by_priority_skip_expired_and_future():
    g = grants()
    nov = draw(g, initial_balances(g), NOV, D(100))
    # b expired before November, d is granted after it; c (priority 0) first, then a
    assert nov == [("c-mid", D(40)), ("a-big", D(60))]
    bal = apply_draws(initial_balances(g), nov)
    dec = draw(g, bal, DEC, D(100))
    # c expired mid-November; d (priority 0) is usable in December, then a's remaining 40
    assert dec == [("d-later", D(20)), ("a-big", D(40))]


def test_credits_on_invoice_and_total():
    b = book({"flat": {"subscription_usd": "30.005"}})
    rated = rate_period(b.model_copy(update={"default_plan": "flat"}), "t", NOV, [])
    g = [CreditGrant(id="x", amount_usd=10, granted_at=utc("2026-11-01T00:00:00"))]
    inv = assemble("t", NOV, rated, [], g, initial_balances(g))
    assert amounts(inv.lines, "credit") == [D(-10)]
    assert inv.total_usd == D("20.00")  # 20.005 rounds half-even to 20.00
    assert amounts(inv.lines, "rounding") == [D("-0.005")]
    assert inv.credits == [{"id": "x", "drawn_usd": "10", "remaining_usd": "0", "state": "used"}]


BLOCK = Plan(name="p", subscription_usd=1, caps=[
    {"window": "5h", "limit": 3, "unit": "requests", "at_cap": "block"},
    {"window": "1w", "limit": 1000, "unit": "tokens", "at_cap": "downgrade", "downgrade_group": "small"}])


def test_check_caps_block_with_reset_time_and_downgrade():
    c = RollingCounter(horizon_seconds=7 * 86400, bucket_seconds=0)
    t0 = 1_000_000.0
    for i in range(3):
        assert check_caps(BLOCK, c.window(t0 + i * 100)).action == "allow"
        c.add(t0 + i * 100, tokens=100)
    d = check_caps(BLOCK, c.window(t0 + 1000))
    assert d.action == "block" and d.reset_at == t0 + 5 * 3600  # the first request leaves the window
    assert d.retry_after_seconds(t0 + 1000) == 5 * 3600 - 1000 and "blocked until" in d.message
    assert check_caps(BLOCK, c.window(t0 + 5 * 3600 + 1)).action == "allow"
    c.add(t0 + 6 * 3600, tokens=800)  # 1100 tokens in the week
    d = check_caps(BLOCK, c.window(t0 + 6 * 3600 + 1))
    assert (d.action, d.downgrade_group, d.reset_at) == ("downgrade", "small", t0 + 7 * 86400 + 100)


def test_block_beats_downgrade_and_overage():
    w = UsageWindow(now=10.0, ts=(1.0, 2.0, 3.0), requests=(1, 1, 1), tokens=(600, 600, 600))
    assert check_caps(BLOCK, w).action == "block"


def test_bucketed_counter_never_reports_an_early_reset():
    c = RollingCounter(horizon_seconds=3600 * 5, bucket_seconds=60)
    for t in (10.0, 20.0, 30.0):
        c.add(t)
    d = check_caps(BLOCK, c.window(40.0))
    assert d.action == "block" and d.reset_at == 60.0 + 5 * 3600


events_st = st.lists(st.tuples(st.integers(0, 29 * 86400), st.integers(0, 40_000_000), st.integers(0, 5_000_000),
                               st.integers(0, 9_000_000), st.decimals("0", "50", places=9)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(events_st, st.decimals("0", "99.999999", places=6), st.integers(0, 29 * 86400))
def test_lines_always_sum_to_the_total(raw, credit_usd, change_s):
    plans = {"payg": PAYG, "flat": {"subscription_usd": "19.99", "minimum_commitment_usd": "7.777",
                                    "caps": [{"window": "5h", "limit": 2, "at_cap": "overage",
                                              "overage": {"input": {"usd": "3.3"}, "output": {"usd": "7.7"}}}]},
             "cp": {"cost_plus": {"markup": "0.333"}}}
    b = book(plans, {"t": {"subscriptions": [{"plan": "flat", "start": "2026-10-01"},
                                             {"plan": "payg", "start": NOV.start + change_s},
                                             {"plan": "cp", "start": NOV.start + change_s + 3600}]}})
    events = sorted((ev(NOV.start + s, input_tokens=i + c, cached=c, output=o, cost=str(cost))
                     for s, i, c, o, cost in raw), key=lambda e: (e.ts, e.id))
    g = [CreditGrant(id="g", amount_usd=credit_usd, granted_at=NOV.start)] if credit_usd > 0 else []
    inv = assemble("t", NOV, rate_period(b, "t", NOV, events), [], g, initial_balances(g))
    assert sum(li.amount_usd for li in inv.lines) == inv.total_usd
    assert inv.total_usd == inv.total_usd.quantize(D("0.01"))
    assert all(li.amount_usd == li.amount_usd.quantize(D("0.000001")) for li in inv.lines)
    assert abs(sum(amounts(inv.lines, "rounding"), D(0))) <= D("0.005")
    assert inv.total_usd >= 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40 * 3600), st.integers(0, 3000)), min_size=1, max_size=40))
def test_invoice_replay_agrees_with_the_gateway_hook(raw):
    """The invoice's cap replay and check_caps over a RollingCounter decide every request the same way."""
    from tokenomy.billing.rating import classify_caps

    plan = {"subscription_usd": 1, "caps": [
        {"window": "5h", "limit": 4, "unit": "requests", "at_cap": "overage", "overage": {"input": {"usd": 1}}},
        {"window": "1d", "limit": 5000, "unit": "tokens", "at_cap": "downgrade", "downgrade_group": "s"},
        {"window": "2h", "limit": 3000, "unit": "tokens", "at_cap": "block"}]}
    b = book({"p": plan}, default_plan="p")
    events = sorted((ev(NOV.start + s, input_tokens=n) for s, n in raw), key=lambda e: (e.ts, e.id))
    replay = [d[0] if d else "allow" for d in classify_caps(b, "t", events)]
    counter = RollingCounter(horizon_seconds=86400, bucket_seconds=0)
    live = []
    for e in events:
        live.append(check_caps(b.plan("p"), counter.window(e.ts)).action)
        counter.add(e.ts, tokens=e.tokens)
    assert replay == live
