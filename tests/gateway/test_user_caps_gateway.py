"""End-user caps through the gateway (the essay's heavy-user problem): a tenant's default cap per
`user`, a user's own override; a user at the cap gets the budget 429 naming the user cap (and its
reset), another user of the same tenant is served; a concurrent burst never overshoots. Real
stubs on 127.0.0.1, the official openai SDK as the client."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import openai
import pytest

from gw_helpers import FAST_TIMEOUTS, Stub, gateway, list_dep, stubs

from tokenomy.ledgerdb import LedgerDB
from tokenomy.metering.spend_by import usage_by
from tokenomy.tokens import count_chat_tokens

MSGS = [{"role": "user", "content": "hello there"}]
INP = count_chat_tokens(MSGS)
RESERVED_INPUT = int(INP * 1.1) + 16  # the reservation's input margin (lifecycle/budget.py)


def _cfg(stub: Stub) -> dict:
    # $1000/Mtok in and out: one token costs $0.001
    return {"deployments": [list_dep("d", stub.base_url, 1000.0, 1000.0)],
            "model_groups": {"m": {"deployments": ["d"]}}, "timeouts": FAST_TIMEOUTS}


def _client(g, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0, http_client=httpx.AsyncClient())


async def test_user_at_cap_is_refused_another_user_served(data_dir):
    async with stubs(Stub(out_tokens=10)) as (stub,):
        async with gateway(_cfg(stub), data_dir) as g:
            key = g.key("acme", budget_usd="100")
            # one request's worst case (max_tokens 10) fits the cap, a second does not
            worst = Decimal(RESERVED_INPUT + 10) / 1000
            g.metering.set_user_cap("acme", "*", budget_usd=str(worst * Decimal("1.5")), budget_period="monthly")
            client = _client(g, key)
            ok = await client.chat.completions.create(model="m", messages=MSGS, max_tokens=10, user="heavy")
            assert ok.usage.completion_tokens == 10
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(model="m", messages=MSGS, max_tokens=10, user="heavy")
            r = refused.value.response
            assert r.status_code == 429 and r.headers["x-tokenomy-budget-scope"] == "user"
            assert r.headers["x-tokenomy-budget-refused"] == "exhausted" and r.headers["x-should-retry"] == "false"
            err = r.json()["error"]
            assert err["code"] == "budget_exhausted" and err["type"] == "insufficient_quota"
            assert "user 'heavy' of tenant 'acme'" in err["message"] and "resets at" in err["message"]
            assert r.headers["x-tokenomy-budget-reset"].endswith("-01T00:00:00Z")  # the next UTC month
            light = await client.chat.completions.create(model="m", messages=MSGS, max_tokens=10, user="light")
            assert light.usage.completion_tokens == 10
            assert stub.calls == 2  # the refused request never went upstream
            db = LedgerDB.for_ledger(g.metering.ledger)
            by_user = usage_by(db, "user", "acme")
            db.close()
            assert {u: v["requests"] for u, v in by_user.items()} == {"heavy": 1, "light": 1}


async def test_burst_never_overshoots_the_user_cap(data_dir):
    async with stubs(Stub(out_tokens=10, delay_s=0.05)) as (stub,):
        async with gateway(_cfg(stub), data_dir) as g:
            key = g.key("acme")
            worst = Decimal(RESERVED_INPUT + 10) / 1000
            cap = worst * 4  # exactly four worst cases
            g.metering.set_user_cap("acme", "bob", budget_usd=str(cap))
            body = {"model": "m", "messages": MSGS, "max_tokens": 10, "user": "bob"}
            got = await asyncio.gather(*(g.post("/v1/chat/completions", body, key) for _ in range(16)))
            statuses = sorted(st for st, _, _ in got)
            # the first four fit at once; the rest wait (bounded) for those to settle at their actual
            # cost and are served while a worst case still fits: at most n_max in all, never more
            actual = Decimal(INP + 10) / 1000
            n_max = int((cap - worst) // actual) + 1
            served = statuses.count(200)
            spent = sum(e.price_usd for e in g.metering.events("acme") if e.status == "ok")
            assert spent == served * actual and spent <= cap
            assert 4 <= served <= n_max and n_max < 16
            assert set(statuses) <= {200, 429} and stub.calls == served
            p = g.metering.authenticate(key)
            from dataclasses import replace

            info = g.metering.spend(replace(p, user="bob"))["user"]
            assert Decimal(info["spent_usd"]) == spent and info["reserved_usd"] == "0"
            # another user of the tenant is unaffected
            st, _, _ = await g.post("/v1/chat/completions", {**body, "user": "alice"}, key)
            assert st == 200


async def test_user_rate_limit_through_the_gateway(data_dir):
    async with stubs(Stub(out_tokens=2)) as (stub,):
        async with gateway(_cfg(stub), data_dir) as g:
            key = g.key("acme")
            g.metering.set_user_cap("acme", "*", rpm=1)
            body = {"model": "m", "messages": MSGS, "max_tokens": 2, "user": "bob"}
            assert (await g.post("/v1/chat/completions", body, key))[0] == 200
            st, h, b = await g.post("/v1/chat/completions", body, key)
            assert st == 429 and b["error"]["code"] == "rate_limit_exceeded" and int(h["Retry-After"]) >= 1
            assert "user 'bob' of tenant 'acme'" in b["error"]["message"]
            assert (await g.post("/v1/chat/completions", {**body, "user": "carol"}, key))[0] == 200
            assert (await g.post("/v1/chat/completions", {k: v for k, v in body.items() if k != "user"}, key))[0] == 200


async def test_config_user_caps_apply_at_start_and_the_ledger_wins_after(data_dir):
    async with stubs(Stub(out_tokens=2)) as (stub,):
        from tokenomy.config import parse_config
        from tokenomy.gateway.bootstrap import apply_identities  # what `tokenomy up` runs at start

        cfg = {**_cfg(stub), "tenants": [{"name": "acme", "user_caps": {"*": {"rpm": 1}, "vip": {"budget_usd": 2}}}]}
        async with gateway(cfg, data_dir) as g:
            apply_identities(parse_config(cfg, "<test>"), g.metering, create_demo=False)
            caps = {c["user"]: (c["budget_usd"], c["rpm"]) for c in g.metering.user_caps("acme")}
            assert caps == {"*": (None, 1), "vip": ("2", None)}
            assert [c["actor"] for c in g.metering.changes()] == ["config", "config", "config"]
            key = g.key("acme")
            body = {"model": "m", "messages": MSGS, "max_tokens": 2, "user": "bob"}
            assert (await g.post("/v1/chat/completions", body, key))[0] == 200
            assert (await g.post("/v1/chat/completions", body, key))[0] == 429
            g.metering.set_user_cap("acme", "*", rpm=100, actor="admin")  # changed over the API
        async with gateway(cfg, data_dir) as g:  # restart: the file does not undo it
            apply_identities(parse_config(cfg, "<test>"), g.metering, create_demo=False)
            assert {c["user"]: c["rpm"] for c in g.metering.user_caps("acme")} == {"*": 100, "vip": None}


def test_config_user_cap_without_any_cap_is_refused_naming_the_field():
    from tokenomy.config import parse_config
    from tokenomy.errors import ConfigError

    base = {"deployments": [list_dep("d", "http://127.0.0.1:1/v1", 1.0, 1.0)]}
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.user_caps\.\*: a user cap needs budget_usd, rpm or tpm"):
        parse_config({**base, "tenants": [{"name": "acme", "user_caps": {"*": {"budget_period": "daily"}}}]}, "x.yaml")
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.user_caps\.bob\.rpm"):
        parse_config({**base, "tenants": [{"name": "acme", "user_caps": {"bob": {"rpm": 0}}}]}, "x.yaml")
