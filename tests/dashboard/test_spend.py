"""Spend by end user and tag on the dashboard (issue 21): /dashboard/api/spend against the seeded
ledger (SQLite and PostgreSQL), exact money, filters, drill-down scope, tenant isolation, bad input."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from decimal import Decimal

import pytest

from tokenomy.dashboard.spend import SpendQuery, SpendQueryError, parse_query, spend_table

from .test_api import get

pytestmark = pytest.mark.timeout(120)


def expected(events, by: str, *, tenant=None, user=None, tag=None) -> dict[str, dict]:
    """What the page must show, from the events themselves: {value: {requests, price, cost}}."""
    out: dict[str, dict] = defaultdict(lambda: {"requests": 0, "price": Decimal(0), "cost": Decimal(0)})
    for e in events:
        u, tags = e.extra.get("user"), e.extra.get("tags") or {}
        if (tenant and e.tenant != tenant) or (user and u != user) or (tag and tags.get(tag[0]) != tag[1]):
            continue
        for value in ([u] if by == "user" and u else [] if by == "user" else [f"{k}={v}" for k, v in tags.items()]):
            g = out[value]
            g["requests"] += 1
            g["price"] += e.price_usd
            g["cost"] += e.cost_usd
    return dict(out)


def test_spend_by_user_matches_the_events_exactly_and_is_ordered_by_billed_spend(server, seeded):
    body = get(server, "spend", seeded.admin_key, range="all", by="user").json()
    want = expected(seeded.events, "user")
    rows = body["tables"]["spend"]
    assert len(want) == 9 and {r["user"] for r in rows} == set(want)
    for r in rows:
        assert r["requests"] == want[r["user"]]["requests"]
        assert Decimal(r["price_usd"]) == want[r["user"]]["price"] and Decimal(r["cost_usd"]) == want[r["user"]]["cost"]
    billed = [Decimal(r["price_usd"]) for r in rows]
    assert billed == sorted(billed, reverse=True)
    assert body["totals"]["requests"] == sum(w["requests"] for w in want.values()) == 900  # 3 in 4 name a user
    assert Decimal(body["totals"]["price_usd"]) == sum(w["price"] for w in want.values())
    assert sum(r["share_of_spend"] for r in rows) == pytest.approx(1.0)
    assert body["meta"]["by"] == "user" and body["meta"]["filters"] == {"user": None, "tag": None, "q": None}


def test_drill_down_a_users_spend_by_tag_and_a_tags_spend_by_user(server, seeded):
    body = get(server, "spend", seeded.admin_key, range="all", by="tag", user="user-3").json()
    want = expected(seeded.events, "tag", user="user-3")
    got = {r["tag"]: (r["requests"], Decimal(r["price_usd"])) for r in body["tables"]["spend"]}
    assert got == {k: (w["requests"], w["price"]) for k, w in want.items()} and len(got) == 5
    assert body["meta"]["note"]  # a request counts under each of its tags
    body = get(server, "spend", seeded.admin_key, range="all", by="user", tag="feature=search").json()
    want = expected(seeded.events, "user", tag=("feature", "search"))
    got = {r["user"]: (r["requests"], Decimal(r["price_usd"])) for r in body["tables"]["spend"]}
    assert got == {k: (w["requests"], w["price"]) for k, w in want.items()} and got
    assert body["meta"]["filters"]["tag"] == "feature=search"
    # a tag nobody sent: no rows, not an error
    body = get(server, "spend", seeded.admin_key, range="all", by="user", tag="feature=nope").json()
    assert body["tables"]["spend"] == [] and body["totals"]["values"] == 0


def test_text_filter_and_limit_sum_the_rest_into_others(server, seeded):
    body = get(server, "spend", seeded.admin_key, range="all", by="tag", q="FEATURE=").json()
    assert {r["tag"] for r in body["tables"]["spend"]} == {"feature=search", "feature=chat", "feature=summarise"}
    full = get(server, "spend", seeded.admin_key, range="all", by="user").json()
    top = get(server, "spend", seeded.admin_key, range="all", by="user", limit="2").json()
    assert [r["user"] for r in top["tables"]["spend"]] == [r["user"] for r in full["tables"]["spend"][:2]]
    o = top["totals"]["others"]
    assert o["values"] == 7 and o["requests"] == sum(r["requests"] for r in full["tables"]["spend"][2:])
    assert Decimal(o["price_usd"]) == sum(Decimal(r["price_usd"]) for r in full["tables"]["spend"][2:])
    assert top["totals"]["price_usd"] == full["totals"]["price_usd"]  # the totals cover every match


def test_a_tenant_key_sees_its_own_requests_and_never_the_serving_cost(server, seeded):
    key = seeded.secrets["acme"]
    body = get(server, "spend", key, range="all", by="user").json()
    want = expected(seeded.events, "user", tenant="acme")
    assert {r["user"]: r["requests"] for r in body["tables"]["spend"]} == {k: w["requests"] for k, w in want.items()}
    assert "cost_usd" not in body["totals"] and all("cost_usd" not in r for r in body["tables"]["spend"])
    r = get(server, "spend", key, range="all", tenant="globex")
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    assert get(server, "spend", None, range="all").status_code == 401


@pytest.mark.parametrize("params,param", [
    ({"by": "colour"}, "by"), ({"tag": "feature"}, "tag"), ({"tag": "=x"}, "tag"), ({"limit": "0"}, "limit"),
    ({"limit": "many"}, "limit"), ({"limit": "501"}, "limit"), ({"q": "x" * 201}, "q"), ({"user": "u" * 300}, "user"),
    ({"since": "yesterday"}, "since"),
])
def test_bad_filters_are_a_400_naming_the_parameter(server, seeded, params, param):
    r = get(server, "spend", seeded.admin_key, **params)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_csv_of_the_spend_table(server, seeded):
    r = get(server, "spend", seeded.admin_key, range="all", by="user", format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    want = expected(seeded.events, "user")
    assert {x["user"]: int(x["requests"]) for x in rows} == {k: w["requests"] for k, w in want.items()}


def test_spend_table_orders_ties_and_keeps_money_exact():
    g = {"b": {"requests": 2, "price_usd": "0.1", "cost_usd": "0.05"},
         "a": {"requests": 2, "price_usd": "0.1", "cost_usd": "0.05"},
         "c": {"requests": 5, "price_usd": "0.1", "cost_usd": "0.01"},
         "d": {"requests": 1, "price_usd": "0.000000000001", "cost_usd": "0"}}
    out = spend_table(g, SpendQuery(by="user", limit=3))
    assert [r["user"] for r in out["tables"]["spend"]] == ["c", "a", "b"]  # spend, then requests, then name
    assert out["totals"]["price_usd"] == "0.300000000001" and out["totals"]["others"]["price_usd"] == "0.000000000001"
    assert out["tables"]["spend"][0]["share_of_spend"] == pytest.approx(0.1 / 0.300000000001)
    empty = spend_table({}, SpendQuery())
    assert empty["totals"]["values"] == 0 and empty["totals"]["price_usd"] == "0"
    with pytest.raises(SpendQueryError) as err:
        parse_query({"tag": "no-equals-sign"})
    assert err.value.param == "tag"
    assert parse_query({"tag": "k=v=w"}).tag == ("k", "v=w")  # the first '=' splits: values may hold '='
