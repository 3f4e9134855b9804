"""The data API over a seeded ledger: numbers agree with the ledger, auth and tenant scoping, CSV."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import httpx
import pytest

from tokenomy.metering.periods import period_bounds

from .conftest import DEPLOYMENTS

pytestmark = pytest.mark.timeout(120)
ENDPOINTS = ["overview", "routing", "deployments", "tenants"]


def get(server, path: str, key: str | None, **params) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{server.url}/dashboard/api/{path}", params=params, headers=headers, timeout=60)


def test_overview_totals_match_the_ledger_exactly(server, seeded):
    body = get(server, "overview", seeded.admin_key, range="all").json()
    usage = seeded.metering.usage(None)
    t = body["totals"]
    assert t["requests"] == usage["requests"] == 1200
    # upstream failures and the clients' own errors apart; together, every non-ok event
    assert t["errors"] == sum(e.status == "upstream_error" for e in seeded.events) > 0
    assert t["client_errors"] == sum(e.status in ("error", "cancelled") for e in seeded.events) > 0
    assert t["errors"] + t["client_errors"] == usage["errors"]
    assert t["input_tokens"] == usage["input_tokens"] and t["output_tokens"] == usage["output_tokens"]
    assert t["cost_usd"] == usage["cost_usd"]          # exact Decimal strings
    assert t["price_usd"] == usage["price_usd"]
    assert t["energy_joules"] == pytest.approx(usage["energy_joules"])
    tokens = usage["input_tokens"] + usage["output_tokens"]
    assert t["usd_per_mtok"] == pytest.approx(float(Decimal(usage["cost_usd"])) / tokens * 1e6)
    assert t["joules_per_token"] == pytest.approx(usage["energy_joules"] / tokens)
    series = body["tables"]["series"]
    assert sum(p["requests"] for p in series) == 1200
    assert body["meta"]["resolution"] == "hour"  # 7 days of data: hourly buckets


def test_overview_of_one_tenant_and_a_recent_window(server, seeded):
    usage = seeded.metering.usage("initech")
    body = get(server, "overview", seeded.admin_key, range="all", tenant="initech").json()
    assert body["totals"]["requests"] == usage["requests"] == 400
    assert body["totals"]["cost_usd"] == usage["cost_usd"]
    # a window: buckets are whole minutes, so compare with the ledger over the snapped window
    body = get(server, "overview", seeded.admin_key, range="6h").json()
    m = body["meta"]
    assert m["resolution"] == "minute" and m["step_s"] == 60
    expected = seeded.metering.usage(None, since=m["since"], until=m["until"])
    assert body["totals"]["requests"] == expected["requests"] > 0
    assert body["totals"]["cost_usd"] == expected["cost_usd"]
    assert len(body["tables"]["series"]) == (m["until"] - m["since"]) // 60  # empty minutes filled with zeros


def test_savings_against_the_two_baselines(server, seeded):
    """All-strong: routed requests re-priced at their strongest candidate, identical to `tokenomy
    route savings` (one definition); single deployment: hand-computed with blended rates."""
    from tokenomy.routing.savings import savings

    body = get(server, "overview", seeded.admin_key, range="all").json()
    sv = body["totals"]["savings"]
    ev = seeded.events
    m = body["meta"]
    cli = savings(seeded.data_dir, m["since"], m["until"], seeded.ledger_url)
    routed = [e for e in ev if e.extra and "route" in e.extra]
    s_in, s_out = DEPLOYMENTS["large@h100"][1:]
    strong = sum((e.input_tokens * s_in + e.output_tokens * s_out) / 1e6 for e in routed)
    actual_routed = sum(float(e.cost_usd) for e in routed)
    assert sv["all_strong"]["routed_requests"] == cli["requests"] == len(routed)
    assert sv["all_strong"]["baseline_usd"] == pytest.approx(float(cli["all_strong_usd"]), rel=1e-9)
    assert sv["all_strong"]["baseline_usd"] == pytest.approx(strong, rel=1e-9)
    assert sv["all_strong"]["saved_usd"] == pytest.approx(float(cli["saved_vs_all_strong_usd"]), rel=1e-9)
    assert sv["all_strong"]["saved_usd"] == pytest.approx(strong - actual_routed, rel=1e-9)
    assert "tokenomy route savings" in sv["all_strong"]["definition"]
    per_bucket = sum(p["all_strong_usd"] for p in body["tables"]["series"])
    assert per_bucket == pytest.approx(strong, rel=1e-9)  # the chart adds up to the card
    rate = {}
    for dep in {e.deployment for e in ev}:
        cost = sum(float(e.cost_usd) for e in ev if e.deployment == dep)
        tok = sum(e.input_tokens + e.output_tokens for e in ev if e.deployment == dep)
        rate[dep] = cost / tok
    n_large = {d: sum(1 for e in ev if e.deployment == d) for d in ("large@h100", "large@api")}
    # single deployment: each model pinned to its most used deployment
    assert sv["single_deployment"]["pinned"] == {"small": "small@l4", "large": max(n_large, key=n_large.get)}
    pinned = sv["single_deployment"]["pinned"]
    single = sum((e.input_tokens + e.output_tokens) * rate[pinned[e.model]] for e in ev)
    assert sv["single_deployment"]["baseline_usd"] == pytest.approx(single, rel=1e-9)


def test_routing_mix_and_strong_share(server, seeded):
    body = get(server, "routing", seeded.admin_key, range="all").json()
    routed = [e for e in seeded.events if e.extra and "route" in e.extra]
    strong = [e for e in routed if e.extra["route"]["strong"]]
    t = body["totals"]
    assert t["routed"] == len(routed) and t["strong"] == len(strong)
    assert t["strong_share"] == pytest.approx(len(strong) / len(routed))
    assert t["predicted_quality_mean"] == pytest.approx(
        sum(e.extra["route"]["predicted_quality"] for e in routed) / len(routed))
    mix = {(r["model"], r["deployment"]): r["requests"] for r in body["tables"]["mix"]}
    assert mix == {(m, d): sum(1 for e in seeded.events if e.deployment == d) for m, d in
                   (("small", "small@l4"), ("small", "small@h100"), ("large", "large@h100"), ("large", "large@api"))}
    assert t["feedback_n"] == 0 and body["tables"]["quality"] == []


def test_deployments_latency_percentiles_and_errors(server, seeded):
    body = get(server, "deployments", seeded.admin_key, range="all").json()
    rows = {r["deployment"]: r for r in body["tables"]["deployments"]}
    for dep, r in rows.items():
        evs = [e for e in seeded.events if e.deployment == dep]
        lat = sorted(e.latency_ms for e in evs)
        assert r["requests"] == len(evs)
        assert r["errors"] == sum(e.status == "upstream_error" for e in evs)
        assert r["client_errors"] == sum(e.status in ("error", "cancelled") for e in evs)
        assert r["error_rate"] == pytest.approx(r["errors"] / len(evs))
        assert r["client_error_rate"] == pytest.approx(r["client_errors"] / len(evs))
        # histogram bins are 2^(1/8) wide: within 5% of the exact order statistic
        assert r["latency_ms_p50"] == pytest.approx(lat[int(0.5 * len(lat)) - 1], rel=0.1)
        assert r["latency_ms_p99"] == pytest.approx(lat[int(0.99 * len(lat)) - 1], rel=0.1)
        assert r["latency_ms_mean"] == pytest.approx(sum(lat) / len(lat))
        assert r["breaker"] is None  # no gateway in this app
    assert body["meta"]["live"] is False


def test_tenants_budgets_margin_and_near_limit(server, seeded):
    body = get(server, "tenants", seeded.admin_key, range="all").json()
    rows = {r["tenant"]: r for r in body["tables"]["tenants"]}
    for name in ("acme", "globex", "initech"):
        u = seeded.metering.usage(name)
        assert rows[name]["cost_usd"] == u["cost_usd"] and rows[name]["revenue_usd"] == u["price_usd"]
        assert Decimal(rows[name]["margin_usd"]) == Decimal(u["price_usd"]) - Decimal(u["cost_usd"])
    # globex was given a daily budget it has used 90% of (today, UTC; the budget rounded to 1e-6 USD; budgets are held in 1e-12 USD)
    day0, _ = period_bounds("daily", seeded.now)
    spent = Decimal(seeded.metering.usage("globex", since=day0)["price_usd"])
    budget = next(t for t in seeded.metering.ledger.list_tenants() if t.name == "globex").budget.budget_pusd
    assert rows["globex"]["budget_used"] == pytest.approx(float(spent * 10**12 / budget), rel=1e-9)
    assert rows["globex"]["budget_used"] == pytest.approx(0.9, abs=0.001)
    assert rows["globex"]["period_spend_usd"] == seeded.metering.usage("globex", since=day0)["price_usd"]
    near = {(n["kind"], n["subject"]) for n in body["tables"]["near_limit"]}
    assert ("tenant budget", "globex") in near
    assert ("tenant soft budget", "acme") in near  # acme's soft budget is $0.5
    assert not any(s == "initech" for _, s in near)
    keys = {k["tenant"]: k for k in body["tables"]["keys"]}
    assert keys["globex"]["rpm"] == 10 and keys["globex"]["tpm"] == 5000


def test_auth_is_required_and_tenant_keys_are_scoped(server, seeded):
    for ep in ENDPOINTS + ["plans", "unit-cost", "whoami"]:
        r = get(server, ep, None)
        assert r.status_code == 401, ep
        assert r.json()["error"]["type"] == "authentication_error"
        assert get(server, ep, "tk-nope-nope").status_code == 401
    key = seeded.secrets["acme"]
    for ep in ENDPOINTS:
        r = get(server, ep, key, tenant="globex", range="all")
        assert r.status_code == 403, ep
        assert "cannot see tenant 'globex'" in r.json()["error"]["message"]
    # no tenant given: the key's own tenant only
    body = get(server, "overview", key, range="all").json()
    assert body["meta"]["tenant"] == "acme"
    assert body["totals"]["price_usd"] == seeded.metering.usage("acme")["price_usd"]  # what it is billed
    body = get(server, "tenants", key, range="all").json()
    assert [r["tenant"] for r in body["tables"]["tenants"]] == ["acme"]
    assert {k["tenant"] for k in body["tables"]["keys"]} == {"acme"}
    assert all(n["tenant"] == "acme" for n in body["tables"]["near_limit"])
    assert get(server, "plans", key).status_code == 403
    who = get(server, "whoami", key).json()
    assert who == who | {"is_admin": False, "tenant": "acme", "tenants": ["acme"]}
    assert "plans" not in who["pages"] and "plans" in get(server, "whoami", seeded.admin_key).json()["pages"]


def test_a_tenant_never_sees_the_operators_cost(server, seeded):
    """Usage, price and limits only: no serving cost, margin, savings or serving $/Mtok at any depth,
    in JSON or in any CSV table; the admin still sees them."""
    from tokenomy.dashboard.queries import OPERATOR_ONLY

    key = seeded.secrets["acme"]

    def keys_of(x):
        if isinstance(x, dict):
            return set(x) | set().union(*(keys_of(v) for v in x.values()))
        if isinstance(x, list):
            return set().union(*(keys_of(v) for v in x)) if x else set()
        return set()

    for ep in ENDPOINTS:
        body = get(server, ep, key, range="all").json()
        assert not keys_of(body) & OPERATOR_ONLY, ep
        for table in body["tables"]:
            header = get(server, ep, key, range="all", format="csv", table=table).text.splitlines()[0].split(",")
            assert not set(header) & OPERATOR_ONLY, (ep, table)
    tenants = get(server, "tenants", key, range="all").json()["tables"]["tenants"][0]
    assert {"requests", "tokens", "budget_usd", "period_spend_usd"} <= set(tenants)
    admin = get(server, "tenants", seeded.admin_key, range="all").json()
    assert {"cost_usd", "margin_usd"} <= set(admin["tables"]["tenants"][0])


def test_csv_export_of_each_table(server, seeded):
    r = get(server, "overview", seeded.admin_key, range="all", format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sum(int(x["requests"]) for x in rows) == 1200
    r = get(server, "tenants", seeded.admin_key, range="all", format="csv", table="keys")
    assert [x["tenant"] for x in csv.DictReader(io.StringIO(r.text))] == sorted(
        ["acme", "initech", "globex"], key=["acme", "initech", "globex"].index)
    r = get(server, "routing", seeded.admin_key, format="csv", table="nope")
    assert r.status_code == 404 and "mix" in r.json()["error"]["message"]
    assert get(server, "overview", seeded.admin_key, format="xml").status_code == 400


def test_bad_parameters_are_400(server, seeded):
    k = seeded.admin_key
    assert get(server, "overview", k, range="3w").status_code == 400
    assert get(server, "overview", k, since="yesterday").status_code == 400
    assert get(server, "overview", k, since="200", until="100").status_code == 400
    assert get(server, "overview", k, res="week").status_code == 400
    r = get(server, "overview", k, since="2026-01-01T00:00:00Z", until="2026-01-02T00:00:00Z")
    assert r.status_code == 200 and r.json()["totals"]["requests"] == 0
    assert r.json()["meta"]["resolution"] == "hour"


def test_new_events_show_up_incrementally(server, seeded):
    from tests.dashboard.conftest import make_event

    window = {"since": str(int(seeded.now) - 3600), "until": str(int(seeded.now) + 3600)}  # fixed, not sliding
    before = get(server, "overview", seeded.admin_key, **window).json()["totals"]
    extra = [make_event(100_000 + i, seeded.now + 1 + i, "initech", seeded.key_ids["initech"], "small@l4",
                        input_tokens=1000, output_tokens=100, latency_ms=100.0) for i in range(5)]
    for e in extra:
        assert server.call(seeded.metering.commit(e)) is True
    after = get(server, "overview", seeded.admin_key, **window).json()["totals"]
    assert after["requests"] == before["requests"] + 5
    assert after["input_tokens"] == before["input_tokens"] + 5000
    assert Decimal(after["cost_usd"]) - Decimal(before["cost_usd"]) == sum((e.cost_usd for e in extra), Decimal(0))
    seeded.events.extend(extra)


def test_unit_cost_is_the_cost_compare_table(server, seeded):
    from tokenomy.catalog import load_catalog
    from tokenomy.economics.compare import compare_deployments

    body = get(server, "unit-cost", seeded.admin_key, model="llama-3-8b", slo_tpot_ms="40").json()
    cat = load_catalog()
    rows, _ = compare_deployments(cat.model("llama-3-8b"), cat.accelerators.values(), cat.sites.values(), slo_tpot_ms=40)
    got = body["tables"]["rows"]
    assert len(got) == len(rows) > 0
    assert [r["usd_per_mtok_output"] for r in got] == pytest.approx([r.usd_per_mtok_output for r in rows])
    assert body["totals"]["cheapest"]["accelerator"] == rows[0].to_dict()["accelerator"]
    assert get(server, "unit-cost", seeded.admin_key, model="gpt-17").status_code == 404
    assert get(server, "unit-cost", seeded.admin_key, slo_tpot_ms="-3").status_code == 400
    # tenants may look at unit costs too (catalog data, no tenant data)
    assert get(server, "unit-cost", seeded.secrets["acme"], model="llama-3-8b").status_code == 200


def test_plans_listing_and_detail(server, seeded, tmp_path):
    d = seeded.data_dir / "plans"
    d.mkdir(exist_ok=True)
    (d / "sim.json").write_text(json.dumps({"seed": 1, "plans": {"flat": {"revenue_usd": 10, "cost_usd": 12,
                                                                          "margin_usd": -2, "unprofitable_share": 0.3}}}))
    (d / "broken.json").write_text("{nope")
    body = get(server, "plans", seeded.admin_key).json()
    kinds = {p["name"]: p["kind"] for p in body["tables"]["plans"]}
    assert kinds["sim"] == "pricing-simulation" and kinds["broken"] == "unreadable"
    one = get(server, "plans/sim", seeded.admin_key).json()
    assert one["tables"]["plans"] == [{"plan": "flat", "revenue_usd": 10, "cost_usd": 12, "margin_usd": -2,
                                       "unprofitable_share": 0.3}]
    assert get(server, "plans/missing", seeded.admin_key).status_code == 404
    assert get(server, "plans/..%2Fledger", seeded.admin_key).status_code in (400, 404)
    (d / "broken.json").unlink()


def test_pages_and_assets_are_local(server):
    r = httpx.get(f"{server.url}/dashboard/overview")
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "http" not in r.text.split("<body")[0].replace('http-equiv', '')  # no external script/style
    for asset in ("vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "dash.js", "dash.css", "login.js"):
        assert httpx.get(f"{server.url}/dashboard/static/{asset}").status_code == 200
    assert httpx.get(f"{server.url}/dashboard/nope").status_code == 404
    r = httpx.get(f"{server.url}/dashboard", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/dashboard/overview"
