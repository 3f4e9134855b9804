"""Billing plans enforced by the gateway (issue 7): caps (block / downgrade / overage), the
tenant's price per event in the ledger, caps across a restart, and an invoice over that ledger."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw_helpers import Stub, gateway, list_dep, stubs
from tokenomy.config import load_config, parse_config
from tokenomy.errors import ConfigError
from tokenomy.tokens import count_chat_tokens

MSGS = [{"role": "user", "content": "hello there"}]
IN_TOKENS = count_chat_tokens(MSGS)
OUT_TOKENS = 20  # Stub default
MTOK = Decimal(1_000_000)
FIVE_H = 5 * 3600

PLANS_YAML = """
plans:
  flat-block:
    subscription_usd: 20
    caps: [{window: 5h, limit: 3, unit: requests, at_cap: block}]
  flat-down:
    subscription_usd: 20
    caps: [{window: 5h, limit: 3, unit: requests, at_cap: downgrade, downgrade_group: small}]
  flat-over:
    subscription_usd: 10
    caps:
      - window: 5h
        limit: 3
        unit: requests
        at_cap: overage
        overage: {input: {usd: 4}, output: {usd: 16}}
  cplus:
    cost_plus: {markup: 0.25}
  cplus-split:
    cost_plus: {markup: {input: 0.5, cached_input: 0.5, output: 0.1}}
tenants:
  tb: {subscriptions: [{plan: flat-block, start: 2000-01-01}]}
  td: {subscriptions: [{plan: flat-down, start: 2000-01-01}]}
  to: {subscriptions: [{plan: flat-over, start: 2000-01-01}]}
  tc: {subscriptions: [{plan: cplus, start: 2000-01-01}]}
  ts: {subscriptions: [{plan: cplus-split, start: 2000-01-01}]}
"""


@pytest.fixture
def plans_file(tmp_path: Path) -> Path:
    p = tmp_path / "plans.yaml"
    p.write_text(PLANS_YAML)
    return p


def _cfg(big: Stub, small: Stub, plans) -> dict:
    # big: $10/$30 per Mtok, small: $1/$2 per Mtok (costs stay exact decimals)
    return {"deployments": [list_dep("big-d", big.base_url, 10.0, 30.0),
                            list_dep("small-d", small.base_url, 1.0, 2.0)],
            "model_groups": {"big": {"deployments": ["big-d"]}, "small": {"deployments": ["small-d"]}},
            "plans": plans}


async def _chat(g, key, **extra):
    return await g.post("/v1/chat/completions", {"model": "big", "messages": MSGS, **extra}, key)


def _events(g, tenant: str) -> list:
    return sorted(g.metering.events(tenant), key=lambda e: e.ts)


async def test_flat_plan_blocks_the_4th_request_with_retry_after_and_reset(data_dir, plans_file):
    async with stubs(Stub(), Stub()) as (big, small), gateway(_cfg(big, small, str(plans_file)), data_dir) as g:
        key = g.key("tb")
        t0 = time.time()
        for _ in range(3):
            st, h, _ = await _chat(g, key)
            assert st == 200 and "x-tokenomy-overage" not in h and "x-tokenomy-downgraded" not in h
        st, h, body = await _chat(g, key)
        t1 = time.time()
        assert st == 429
        assert body["error"]["code"] == "plan_cap_reached"
        msg = body["error"]["message"]
        assert "plan 'flat-block'" in msg and "3 requests per 5h" in msg and "blocked until" in msg
        # the window frees up 5 h after the first request (60 s counter buckets: never early)
        retry = int(h["Retry-After"])
        assert FIVE_H - (t1 - t0) - 1 <= retry <= FIVE_H + 61
        reset = datetime.fromisoformat(h["x-tokenomy-cap-reset"].replace("Z", "+00:00")).timestamp()
        assert t0 + FIVE_H <= reset <= t0 + FIVE_H + 61
        assert abs((t1 + retry) - reset) <= 2
        assert h["x-tokenomy-cap-reset"] in msg
        assert big.calls == 3  # the blocked request never reached an upstream
        evs = _events(g, "tb")
        assert len(evs) == 3  # and is not metered
        # flat plan: included usage is priced 0 per event (the fee is on the invoice), cost stays
        assert all(e.price_usd == 0 and e.cost_usd > 0 for e in evs)
        # a tenant without a plan (built-in `list`) is not capped and pays the gateway's price
        other = g.key("walkin")
        for _ in range(4):
            st, h, _ = await _chat(g, other)
            assert st == 200 and h["x-tokenomy-price-usd"] == h["x-tokenomy-cost-usd"]


async def test_downgrade_plan_serves_the_4th_request_from_the_cheaper_group(data_dir, plans_file):
    async with stubs(Stub(), Stub()) as (big, small), gateway(_cfg(big, small, str(plans_file)), data_dir) as g:
        key = g.key("td")
        for _ in range(3):
            st, h, _ = await _chat(g, key)
            assert st == 200 and h["x-tokenomy-deployment"] == "big-d"
        st, h, body = await _chat(g, key)
        assert st == 200
        assert h["x-tokenomy-downgraded"] == "big->small"
        assert h["x-tokenomy-deployment"] == "small-d"
        assert body["choices"][0]["message"]["content"]
        assert (big.calls, small.calls) == (3, 1)
        assert small.bodies[0]["model"] == "small-d"
        evs = _events(g, "td")
        assert [e.deployment for e in evs] == ["big-d"] * 3 + ["small-d"]
        last = evs[-1]
        assert last.model == "small"
        assert last.extra["cap_action"] == "downgrade" and last.extra["downgraded"] == "big->small"
        # served at the small deployment's cost; included in the flat fee
        assert last.cost_usd == (IN_TOKENS * 1 + OUT_TOKENS * 2) / MTOK
        assert last.price_usd == 0


async def test_overage_plan_allows_with_header_and_prices_the_overage(data_dir, plans_file):
    async with stubs(Stub(), Stub()) as (big, small), gateway(_cfg(big, small, str(plans_file)), data_dir) as g:
        key = g.key("to")
        for _ in range(3):
            st, h, _ = await _chat(g, key)
            assert st == 200 and "x-tokenomy-overage" not in h
        st, h, _ = await _chat(g, key)
        assert st == 200 and h["x-tokenomy-overage"] == "true" and h["x-tokenomy-deployment"] == "big-d"
        # streamed too: still over the cap
        st, h, raw = await _chat(g, key, stream=True)
        assert st == 200 and h["x-tokenomy-overage"] == "true" and raw.endswith(b"data: [DONE]\n\n")
        evs = _events(g, "to")
        assert len(evs) == 5
        overage = (IN_TOKENS * Decimal(4) + OUT_TOKENS * Decimal(16)) / MTOK
        assert [e.price_usd for e in evs] == [0, 0, 0, overage, overage]
        assert evs[3].extra["cap_action"] == "overage"
        assert all(e.cost_usd == (IN_TOKENS * 10 + OUT_TOKENS * 30) / MTOK for e in evs)
        assert Decimal(g.metering.usage("to")["price_usd"]) == 2 * overage


async def test_cost_plus_price_is_cost_times_one_plus_markup_exactly(data_dir, plans_file):
    async with stubs(Stub(cached_tokens=4), Stub()) as (big, small), \
            gateway(_cfg(big, small, str(plans_file)), data_dir) as g:
        key = g.key("tc")
        st, h, _ = await _chat(g, key)
        assert st == 200
        st, h2, _ = await _chat(g, key, stream=True)
        assert st == 200
        evs = _events(g, "tc")
        assert len(evs) == 2
        for e in evs:
            assert e.cost_usd > 0
            assert e.price_usd == e.cost_usd * Decimal("1.25")
        assert Decimal(h["x-tokenomy-price-usd"]) == evs[0].price_usd
        # per-category markups: cost apportioned by the plan's cost weights (1 input, 0.25 cached, 4 output)
        key2 = g.key("ts")
        st, _, _ = await _chat(g, key2)
        assert st == 200
        (e,) = _events(g, "ts")
        w_in, w_cached, w_out = Decimal(IN_TOKENS - 4), Decimal(4) * Decimal("0.25"), Decimal(OUT_TOKENS) * 4
        wsum = w_in + w_cached + w_out
        expect = e.cost_usd * ((w_in + w_cached) * Decimal("1.5") + w_out * Decimal("1.1")) / wsum
        assert e.price_usd == expect.quantize(Decimal("1e-12"))


async def test_concurrent_requests_cannot_slip_past_a_requests_cap(data_dir, plans_file):
    # in-flight requests count against the cap before their events are recorded
    async with stubs(Stub(delay_s=0.1), Stub()) as (big, small), \
            gateway(_cfg(big, small, str(plans_file)), data_dir) as g:
        key = g.key("tb")
        statuses = [r[0] for r in await asyncio.gather(*(_chat(g, key) for _ in range(10)))]
        assert sorted(statuses) == [200] * 3 + [429] * 7
        assert big.calls == 3 and len(_events(g, "tb")) == 3
        key_over = g.key("to")
        results = await asyncio.gather(*(_chat(g, key_over) for _ in range(6)))
        assert [r[0] for r in results] == [200] * 6
        assert sum(r[1].get("x-tokenomy-overage") == "true" for r in results) == 3
        assert sum(e.price_usd > 0 for e in _events(g, "to")) == 3
        assert g.gw.plans._in_flight == {}  # every slot released


async def test_caps_survive_a_gateway_restart(data_dir, plans_file):
    async with stubs(Stub(), Stub()) as (big, small):
        cfg = _cfg(big, small, str(plans_file))
        async with gateway(cfg, data_dir) as g:
            key = g.key("tb")
            for _ in range(3):
                assert (await _chat(g, key))[0] == 200
        async with gateway(cfg, data_dir) as g:  # a new process: counters warmed from the ledger
            st, h, body = await _chat(g, key)
            assert st == 429 and body["error"]["code"] == "plan_cap_reached"
            assert int(h["Retry-After"]) > FIVE_H - 120
            assert big.calls == 3
            assert len(_events(g, "tb")) == 3


async def test_inline_plans_and_tenant_plan_assignment_in_the_gateway_config(data_dir):
    inline = {"solo": {"subscription_usd": 5, "caps": [{"window": "1h", "limit": 1, "at_cap": "block"}]}}
    async with stubs(Stub(), Stub()) as (big, small):
        cfg = {**_cfg(big, small, inline), "tenants": [{"name": "acme", "plan": "solo"}, {"name": "free"}]}
        async with gateway(cfg, data_dir) as g:
            key = g.key("acme")
            assert (await _chat(g, key))[0] == 200
            st, h, body = await _chat(g, key)
            assert st == 429 and "plan 'solo' cap of 1 requests per 1h" in body["error"]["message"]
            free = g.key("free")
            assert [(await _chat(g, free))[0] for _ in range(2)] == [200, 200]


def test_invalid_plans_config_names_the_field(tmp_path, plans_file):
    from tokenomy.gateway.plans import check_plans

    base = {"deployments": [list_dep("big-d", "http://127.0.0.1:1/v1", 1, 1)],
            "model_groups": {"big": {"deployments": ["big-d"]}}}
    cfg = parse_config({**base, "plans": str(plans_file)})
    with pytest.raises(ConfigError, match=r"plans\.flat-down\.caps\[0\]\.downgrade_group: 'small' is not a model "
                                          r"group"):
        check_plans(cfg, cfg.groups())
    cfg = parse_config({**base, "plans": {"p": {"subscription_usd": 1}}, "tenants": [{"name": "a", "plan": "nope"}]})
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.plan: unknown plan 'nope'"):
        check_plans(cfg, cfg.groups())
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.plan: no plans configured"):
        parse_config({**base, "tenants": [{"name": "a", "plan": "p"}]})
    cfg = parse_config({**base, "plans": {"p": {"caps": [{"window": "5x", "limit": 1}]}}})
    with pytest.raises(ConfigError, match=r"^invalid config: plans\.p\.caps\[0\]\.window: window '5x' must look like"):
        check_plans(cfg, cfg.groups())
    listed = parse_config({**base, "plans": [{"name": "x", "cost_plus": {"markup": 0.1}}]})
    assert check_plans(listed, listed.groups()).plans["x"].cost_plus.markup == Decimal("0.1")
    cfg = parse_config({**base, "plans": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match="cannot read plans file"):
        check_plans(cfg, cfg.groups())
    # a relative path is relative to the config file
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "plans.yaml").write_text("plans: {p: {subscription_usd: 1}}\n")
    (tmp_path / "conf" / "tokenomy.yaml").write_text(orjson.dumps({**base, "plans": "plans.yaml"}).decode())
    cfg = load_config(tmp_path / "conf" / "tokenomy.yaml")
    assert Path(cfg.plans) == tmp_path / "conf" / "plans.yaml"
    assert set(check_plans(cfg, cfg.groups()).plans) == {"p"}


async def test_invoice_over_the_gateway_ledger_matches_the_requests(data_dir, plans_file):
    from typer.testing import CliRunner

    from tokenomy.cli import app

    async with stubs(Stub(), Stub()) as (big, small), gateway(_cfg(big, small, str(plans_file)), data_dir) as g:
        key = g.key("to")
        for _ in range(4):  # 3 included, 1 overage
            assert (await _chat(g, key))[0] == 200
        evs = _events(g, "to")
    period = datetime.fromtimestamp(evs[0].ts, timezone.utc).strftime("%Y-%m")
    assert datetime.fromtimestamp(evs[-1].ts, timezone.utc).strftime("%Y-%m") == period
    result = CliRunner().invoke(app, ["invoice", "--tenant", "to", "--period", period, "--plans", str(plans_file),
                                      "--data-dir", str(data_dir), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    inv = json.loads(result.stdout)
    lines = {(li["kind"], li.get("category")): li for li in inv["lines"]}
    assert Decimal(lines[("subscription", None)]["amount_usd"]) == 10
    over_in, over_out = lines[("overage", "input")], lines[("overage", "output")]
    assert (over_in["quantity"], over_out["quantity"]) == (IN_TOKENS, OUT_TOKENS)
    assert Decimal(over_in["amount_usd"]) == IN_TOKENS * Decimal(4) / MTOK
    assert Decimal(over_out["amount_usd"]) == OUT_TOKENS * Decimal(16) / MTOK
    # the invoice's overage equals what the gateway priced the overage request at
    assert Decimal(over_in["amount_usd"]) + Decimal(over_out["amount_usd"]) == evs[3].price_usd
    assert {k for k, _ in lines} <= {"subscription", "overage", "rounding"}
    assert inv["usage"]["requests"] == 4
    assert inv["usage"]["input_tokens"] == 4 * IN_TOKENS and inv["usage"]["output_tokens"] == 4 * OUT_TOKENS
    assert Decimal(inv["total_usd"]) == (10 + evs[3].price_usd).quantize(Decimal("0.01"))
    assert sum(Decimal(li["amount_usd"]) for li in inv["lines"]) == Decimal(inv["total_usd"])


def _capped_plan(limit_requests: int, limit_tokens: int):
    from tokenomy.billing.plans import Cap, Plan

    return Plan(name="p", subscription_usd=Decimal(1),
                caps=[Cap(window="5h", limit=limit_requests, unit="requests", at_cap="block"),
                      Cap(window="3h", limit=limit_tokens, unit="tokens", at_cap="downgrade", downgrade_group="s")])


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.floats(0, 40_000), st.integers(0, 3), st.integers(0, 500)), min_size=0, max_size=60),
       bucket=st.sampled_from([0.0, 60.0, 600.0]),
       limits=st.tuples(st.integers(1, 12), st.integers(1, 4000)),
       checks=st.lists(st.floats(0, 80_000), min_size=1, max_size=8),
       pending=st.integers(0, 5))
def test_fast_cap_view_decides_like_the_window_check(ops, bucket, limits, checks, pending):
    """The gateway's O(log n) cap check (RollingCounter.view) agrees with check_caps over the full window."""
    from tokenomy.billing.caps import RollingCounter, check_caps

    plan = _capped_plan(*limits)
    counter = RollingCounter(horizon_seconds=5 * 3600, bucket_seconds=bucket)
    t = 0.0
    for i, (dt, reqs, toks) in enumerate(ops):
        t = dt if i % 7 == 3 else t + dt / 10  # mostly ascending, sometimes out of order
        counter.add(t, requests=reqs, tokens=toks)
        now = t + checks[i % len(checks)] / 10
        assert check_caps(plan, counter.view(now)) == check_caps(plan, counter.window(now))
        w = counter.window(now)
        assert counter.view(now, pending).used(5 * 3600, "requests") == w.used(5 * 3600, "requests") + pending
        assert counter.view(now, pending).used(3 * 3600, "tokens") == w.used(3 * 3600, "tokens")
    for now in checks:
        now = t + now
        assert check_caps(plan, counter.view(now)) == check_caps(plan, counter.window(now))


def test_fast_cap_view_after_compaction():
    from tokenomy.billing.caps import RollingCounter, check_caps

    plan = _capped_plan(40, 5000)
    counter = RollingCounter(horizon_seconds=5 * 3600, bucket_seconds=0)
    for i in range(5000):  # one request every 10 s: old entries are pruned and compacted away
        now = i * 10.0
        counter.add(now, requests=1, tokens=100)
        if i % 97 == 0 or i > 4990:
            w = counter.window(now + 5)
            assert check_caps(plan, counter.view(now + 5)) == check_caps(plan, w)
    assert len(counter._ts) < 5000 and w.used(5 * 3600, "requests") == 5 * 360
    d = check_caps(plan, counter.view(now + 5))
    # frees up when the 40th newest request leaves the 5 h window
    assert d.action == "block" and d.reset_at == now - 39 * 10 + 5 * 3600
