"""Hand-computed invoices: tiers, free tier, proration, commitment true-up, caps, cost-plus."""

from __future__ import annotations

from decimal import Decimal as D

from tokenomy.billing.invoice import assemble
from tokenomy.billing.periods import parse_period
from tokenomy.billing.plans import CategoryPrice
from tokenomy.billing.rating import rate_period
from tokenomy.billing.tiers import charge

from .helpers import amounts, book, ev, utc

NOV = parse_period("2026-11")
PAYG = {
    "free": {"input": 1_000_000, "output": 200_000},
    "usage": {
        "input": {"scheme": "graduated", "tiers": [{"up_to": 10_000_000, "usd": 3}, {"up_to": 100_000_000, "usd": "2.5"},
                                                   {"usd": 2}]},
        "output": {"scheme": "volume", "tiers": [{"up_to": 5_000_000, "usd": 12}, {"usd": 10}]},
        "cached_input": {"usd": "1.25"},
        "requests": {"scheme": "package", "per": 1000, "usd": "0.10"},
    },
}


def test_tier_schemes_by_hand():
    grad = CategoryPrice(scheme="graduated", tiers=[{"up_to": 100, "usd": 10}, {"up_to": 200, "usd": 5}, {"usd": 1}], per=100)
    assert charge(grad, 250, "input") == D(10 + 5) + D("0.5")  # 100 @ 0.10 + 100 @ 0.05 + 50 @ 0.01
    assert charge(grad, 100, "input") == D(10)
    vol = CategoryPrice(scheme="volume", tiers=[{"up_to": 100, "usd": 10}, {"usd": 5}], per=100)
    assert charge(vol, 100, "input") == D(10)
    assert charge(vol, 101, "input") == D("5.05")  # all 101 at the second tier
    pkg = CategoryPrice(scheme="package", per=1000, usd="0.4")
    assert [charge(pkg, q, "requests") for q in (0, 1, 1000, 1001)] == [0, D("0.4"), D("0.4"), D("0.8")]
    assert charge(CategoryPrice(usd="0.15"), 2_000_000, "input") == D("0.30")


def test_graduated_volume_package_free_tier_invoice():
    b = book({"payg": PAYG}, {"t": {"subscriptions": [{"plan": "payg", "start": "2026-01-01"}]}})
    events = [ev(utc("2026-11-03T10:00:00"), input_tokens=31_400_000, cached=400_000, output=6_200_000)]
    rated = rate_period(b, "t", NOV, events)
    by_cat = {li.category: li.amount_usd for li in rated.lines}
    # input: 31.0 M uncached - 1 M free = 30 M -> 10 M x $3 + 20 M x $2.5 = $80
    assert by_cat["input"] == D("80")
    # output: 6.2 M - 0.2 M free = 6 M, all at the volume tier above 5 M: 6 x $10 = $60
    assert by_cat["output"] == D("60")
    assert by_cat["cached_input"] == D("0.5")  # 0.4 M x $1.25
    assert by_cat["requests"] == D("0.1")  # one started package of 1000
    inv = assemble("t", NOV, rated, [], [], {})
    assert inv.total_usd == D("140.60")


def test_free_tier_covers_small_usage():
    b = book({"payg": PAYG}, {"t": {"subscriptions": [{"plan": "payg", "start": "2026-01-01"}]}}, )
    rated = rate_period(b, "t", NOV, [ev(utc("2026-11-03T00:00:00"), input_tokens=900_000, output=150_000)])
    assert amounts(rated.lines, "usage") == [D(0), D(0), D(0), D("0.1")]  # only the request package


def test_mid_period_plan_change_prorates_by_seconds():
    plans = {"flat": {"subscription_usd": 20}, "payg": PAYG}
    b = book(plans, {"t": {"subscriptions": [{"plan": "flat", "start": "2026-10-01"},
                                             {"plan": "payg", "start": "2026-11-16T00:00:00Z"}]}})
    events = [ev(utc("2026-11-10T00:00:00"), input_tokens=5_000_000),  # flat: included
              ev(utc("2026-11-20T00:00:00"), input_tokens=1_500_000)]  # payg: 0.5 M free (prorated)
    rated = rate_period(b, "t", NOV, events)
    assert [(s.plan, s.fraction) for s in rated.segments] == [("flat", D("0.5")), ("payg", D("0.5"))]
    assert amounts(rated.lines, "subscription") == [D("10")]  # 15 of 30 days of $20
    usage = {li.category: li.amount_usd for li in rated.lines if li.kind == "usage"}
    assert usage["input"] == D("3")  # (1.5 M - 0.5 M free) x $3/M
    assert usage["requests"] == D("0.1")
    assert assemble("t", NOV, rated, [], [], {}).total_usd == D("13.10")


def test_proration_at_odd_second_rounds_half_even():
    b = book({"flat": {"subscription_usd": 20}, "other": {"subscription_usd": 0}},
             {"t": {"subscriptions": [{"plan": "flat", "start": "2026-10-01"},
                                      {"plan": "other", "start": utc("2026-11-01T00:00:07")}]}})
    rated = rate_period(b, "t", NOV, [])
    # 7 s of 2,592,000 s of $20 = 0.0000540123... -> 0.000054 at the line; total rounds to 0.00
    assert amounts(rated.lines, "subscription") == [D("0.000054"), D("0")]
    inv = assemble("t", NOV, rated, [], [], {})
    assert inv.total_usd == D("0.00") and amounts(inv.lines, "rounding") == [D("-0.000054")]


def test_minimum_commitment_true_up():
    plans = {"ent": {"minimum_commitment_usd": 500, "usage": {"input": {"usd": 2}, "output": {"usd": 8}}}}
    b = book(plans, {"t": {"subscriptions": [{"plan": "ent", "start": "2026-01-01"}]}})
    rated = rate_period(b, "t", NOV, [ev(utc("2026-11-02T00:00:00"), input_tokens=10_000_000, output=5_000_000)])
    assert amounts(rated.lines, "usage") == [D(20), D(40)]
    assert amounts(rated.lines, "commitment") == [D(440)]
    assert rated.charges_usd == D(500)
    big = rate_period(b, "t", NOV, [ev(utc("2026-11-02T00:00:00"), input_tokens=100_000_000, output=50_000_000)])
    assert amounts(big.lines, "commitment") == [] and big.charges_usd == D(600)


def test_overage_cap_bills_only_requests_over_the_rolling_window():
    plans = {"team": {"subscription_usd": 60, "caps": [
        {"window": "1w", "limit": 1_500_000, "unit": "tokens", "at_cap": "overage",
         "overage": {"input": {"usd": "2.5"}, "output": {"usd": 10}}}]}}
    b = book(plans, {"t": {"subscriptions": [{"plan": "team", "start": "2026-01-01"}]}})
    t0 = utc("2026-11-02T00:00:00")
    events = [ev(t0, input_tokens=1_000_000), ev(t0 + 3600, input_tokens=1_000_000),  # 1 M used before: allowed
              ev(t0 + 7200, input_tokens=500_000, output=100_000),  # 2 M used in the week: overage
              ev(t0 + 8 * 86400, input_tokens=900_000)]  # window has emptied: allowed
    rated = rate_period(b, "t", NOV, events)
    assert amounts(rated.lines, "overage") == [D("1.25"), D("1")]  # 0.5 M x 2.5 + 0.1 M x 10
    assert rated.overage_requests == 1 and rated.charges_usd == D("62.25")


def test_overage_window_sees_previous_period_usage():
    plans = {"team": {"subscription_usd": 0, "caps": [
        {"window": "1w", "limit": 2, "unit": "requests", "at_cap": "overage", "overage": {"requests": {"usd": 1000}}}]}}
    b = book(plans, {"t": {"subscriptions": [{"plan": "team", "start": "2026-01-01"}]}})
    lookback = [ev(utc("2026-10-31T22:00:00")), ev(utc("2026-10-31T23:00:00"))]
    rated = rate_period(b, "t", NOV, [ev(utc("2026-11-01T01:00:00"))], lookback)
    assert amounts(rated.lines, "overage") == [D(1)]  # $1000 per 1000 requests, one request


def test_cost_plus_per_category():
    plans = {"cp": {"cost_plus": {"markup": {"input": "0.3", "output": "0.5"},
                                  "cost_weights": {"input": 1, "output": 4}}}}
    b = book(plans, {"t": {"subscriptions": [{"plan": "cp", "start": "2026-01-01"}]}})
    # 1000 input (weight 1000) + 1000 output (weight 4000): cost $5 splits $1 input, $4 output
    rated = rate_period(b, "t", NOV, [ev(utc("2026-11-05T00:00:00"), input_tokens=1000, output=1000, cost="5")])
    assert {li.category: li.amount_usd for li in rated.lines} == {"input": D("1.3"), "output": D("6")}


def test_list_plan_passes_the_gateway_price_through():
    b = book({})
    rated = rate_period(b, "anyone", NOV, [ev(utc("2026-11-05T00:00:00"), price="0.123456789"),
                                           ev(utc("2026-11-06T00:00:00"), price="1")])
    assert amounts(rated.lines, "list") == [D("1.123457")]
