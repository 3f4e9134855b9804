"""Budgets (reserve worst case -> settle), rate limits, soft-limit warnings, cancelled streams."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import orjson

from gw_helpers import Stub, gateway, list_dep, stubs
from tokenomy.tokens import count_chat_tokens

MSGS = [{"role": "user", "content": "hello there"}]


def _cfg(stub: Stub) -> dict:
    # $1000/Mtok both ways: one token costs $0.001, easy to reason about
    return {"deployments": [list_dep("d", stub.base_url, 1000.0, 1000.0)], "model_groups": {"m": {"deployments": ["d"]}}}


async def test_200_concurrent_requests_against_a_hard_budget(data_dir):
    async with stubs(Stub(out_tokens=10, delay_s=0.02)) as (s,), gateway(_cfg(s), data_dir) as g:
        inp = count_chat_tokens(MSGS)
        per_request = Decimal(inp + 10) / 1000  # actual cost of one request
        budget = per_request * 10  # worth ~10 requests
        key = g.key("capped", budget_usd=str(budget))
        body = orjson.dumps({"model": "m", "messages": MSGS, "max_tokens": 10})
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as sess:
            async def one():
                async with sess.post(g.url + "/v1/chat/completions", data=body,
                                     headers={"Authorization": f"Bearer {key}"}) as r:
                    return r.status, await r.json()
            results = await asyncio.gather(*(one() for _ in range(200)))
        statuses = [st for st, _ in results]
        ok = statuses.count(200)
        assert ok + statuses.count(429) == 200
        assert 1 <= ok <= 10
        refused = [b for st, b in results if st == 429]
        assert refused and all(b["error"]["code"] in ("budget_exhausted", "budget_held")
                               and "budget exceeded" in b["error"]["message"] for b in refused)
        usage = g.metering.usage("capped")
        assert usage["requests"] == ok  # refused requests are not billed
        assert Decimal(usage["price_usd"]) == per_request * ok <= budget


async def test_rate_limit_429_with_retry_after(data_dir):
    async with stubs(Stub(out_tokens=2)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("r", rpm=3)
        statuses = []
        for _ in range(4):
            st, h, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
            statuses.append(st)
        assert statuses == [200, 200, 200, 429]
        assert int(h["Retry-After"]) >= 1
        assert body["error"]["code"] == "rate_limit_exceeded" and "3 requests/min" in body["error"]["message"]
        assert s.calls == 3
        # tokens per minute: a prompt bigger than the whole TPM can never fit
        key2 = g.key("r2", tpm=100)
        big = [{"role": "user", "content": "word " * 300}]
        st, h, body = await g.post("/v1/chat/completions", {"model": "m", "messages": big}, key2)
        assert st == 429 and "tokens/min" in body["error"]["message"]


async def test_soft_budget_warning_header(data_dir):
    async with stubs(Stub(out_tokens=2)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("soft", soft_budget_usd="0.001")
        st, h, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
        assert st == 200 and "x-tokenomy-warning" not in h
        st, h, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
        assert st == 200 and "soft budget" in h["x-tokenomy-warning"]


async def test_client_disconnect_mid_stream_pays_what_was_generated(data_dir):
    async with stubs(Stub(out_tokens=200, chunk_delay_s=0.01)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("c", budget_usd="1")
        async with aiohttp.ClientSession() as sess:
            r = await sess.post(g.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                json={"model": "m", "messages": MSGS, "stream": True, "max_tokens": 300})
            assert r.status == 200
            for _ in range(5):
                await r.content.readline()
            r.close()  # the client goes away
        for _ in range(100):
            events = g.metering.events("c")
            if events:
                break
            await asyncio.sleep(0.05)
        ev = events[0]
        assert ev.status == "cancelled" and ev.estimated
        assert 2 <= ev.output_tokens < 200
        assert ev.cost_usd == Decimal(ev.input_tokens + ev.output_tokens) / 1000
        spend = g.metering.spend(g.metering.authenticate(key))["key"]
        assert Decimal(spend["reserved_usd"]) == 0 and Decimal(spend["spent_usd"]) == ev.price_usd
