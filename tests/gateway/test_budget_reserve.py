"""Reservations for the deployment chosen, top-ups before a dearer fallback (or skipping it),
max_tokens capped to what the budget affords, and refusals the openai SDK does not retry
uselessly (issue 14 §2). Real stubs on 127.0.0.1; the official openai SDK as the client."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest

from gw_helpers import FAST_TIMEOUTS, Stub, gateway, list_dep, stubs

from tokenomy.tokens import count_chat_tokens

MSGS = [{"role": "user", "content": "hello there"}]
INP = count_chat_tokens(MSGS)
RESERVED_INPUT = int(INP * 1.1) + 16  # the reservation's input margin (lifecycle/budget.py)


def _pair(cheap: Stub, dear: Stub, **extra) -> dict:
    # $/Mtok: cheap 1000 (in and out), dear 3000: the cost policy tries cheap first
    return {"deployments": [list_dep("cheap", cheap.base_url, 1000.0, 1000.0),
                            list_dep("dear", dear.base_url, 3000.0, 3000.0)],
            "model_groups": {"m": {"deployments": ["cheap", "dear"]}}, "timeouts": FAST_TIMEOUTS, **extra}


async def test_reservation_is_priced_at_the_chosen_deployment(data_dir):
    async with stubs(Stub(out_tokens=10), Stub(out_tokens=10)) as (cheap, dear):
        async with gateway(_pair(cheap, dear), data_dir) as g:
            # worth exactly one worst case on `cheap` (max_tokens 100): $0.001 a token
            worst_cheap = Decimal(RESERVED_INPUT + 100) / 1000
            key = g.key(budget_usd=str(worst_cheap))
            st, h, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS, "max_tokens": 100}, key)
            # priced at the dearest deployment (as before) it would need 3x that and be refused
            assert st == 200 and h["x-tokenomy-deployment"] == "cheap"


async def test_fallback_to_a_dearer_deployment_tops_up_or_is_skipped(data_dir):
    async with stubs(Stub(mode="500"), Stub(out_tokens=10)) as (cheap, dear):
        async with gateway(_pair(cheap, dear), data_dir) as g:
            worst_dear = Decimal(RESERVED_INPUT + 100) * 3 / 1000
            body = {"model": "m", "messages": MSGS, "max_tokens": 100}
            # room for dear's worst case: topped up, served by the fallback
            key = g.key("roomy", budget_usd=str(worst_dear))
            st, h, _ = await g.post("/v1/chat/completions", body, key)
            assert st == 200 and h["x-tokenomy-deployment"] == "dear"
            ev = g.metering.events("roomy")[0]
            assert ev.price_usd == Decimal(INP + 10) * 3 / 1000
            assert g.metering.spend(g.metering.authenticate(key))["key"]["reserved_usd"] in ("0", "0.0")
            # room for cheap's worst case only: the dearer fallback is skipped, the client gets the 502
            key = g.key("tight", budget_usd=str(worst_dear / 2))
            st, h, b = await g.post("/v1/chat/completions", body, key)
            assert st == 502
            ev = g.metering.events("tight")[0]
            assert [(a["deployment"], a["error"]) for a in ev.extra["attempts"]][:2] == [("cheap", "http_5xx"),
                                                                                        ("dear", "budget")]
            assert dear.calls == 1  # only the roomy request reached it


async def test_without_max_tokens_the_upstream_gets_what_the_budget_affords(data_dir):
    async with stubs(Stub(out_tokens=1000)) as (s,):
        cfg = {"deployments": [list_dep("only", s.base_url, 1000.0, 1000.0, max_output_tokens=500)],
               "timeouts": FAST_TIMEOUTS}
        async with gateway(cfg, data_dir) as g:
            budget = Decimal(RESERVED_INPUT + 300.5) / 1000  # affords 300 output tokens (and a half)
            key = g.key("b", budget_usd=str(budget))
            st, h, _ = await g.post("/v1/chat/completions", {"model": "only", "messages": MSGS}, key)
            assert st == 200 and h["x-tokenomy-max-tokens-capped"] == "300"
            assert s.bodies[-1]["max_tokens"] == 300
            ev = g.metering.events("b")[0]
            assert ev.output_tokens == 300 and ev.price_usd <= budget
            # an ample budget: capped at the deployment's own output limit
            key = g.key("rich", budget_usd="1000")
            st, h, _ = await g.post("/v1/chat/completions", {"model": "only", "messages": MSGS}, key)
            assert h["x-tokenomy-max-tokens-capped"] == "500" and s.bodies[-1]["max_tokens"] == 500
            # no hard budget: nothing capped, the upstream's own default applies
            st, h, _ = await g.post("/v1/chat/completions", {"model": "only", "messages": MSGS}, g.key("free"))
            assert "x-tokenomy-max-tokens-capped" not in h and "max_tokens" not in s.bodies[-1]
            # the client's own max_tokens is never changed
            st, h, _ = await g.post("/v1/chat/completions", {"model": "only", "messages": MSGS, "max_tokens": 7}, key)
            assert "x-tokenomy-max-tokens-capped" not in h and s.bodies[-1]["max_tokens"] == 7


async def test_a_spent_budget_is_not_retried_by_the_openai_sdk(data_dir):
    async with stubs(Stub(out_tokens=10)) as (s,):
        cfg = {"deployments": [list_dep("only", s.base_url, 1000.0, 1000.0)], "timeouts": FAST_TIMEOUTS}
        async with gateway(cfg, data_dir) as g:
            key = g.key("spent", budget_usd="0.00001")  # not even one request
            requests = []

            async def count(request: httpx.Request) -> None:
                requests.append(request)

            http = httpx.AsyncClient(event_hooks={"request": [count]})
            client = openai.AsyncOpenAI(api_key=key, base_url=g.url + "/v1", max_retries=2, http_client=http)
            with pytest.raises(openai.RateLimitError) as exc:
                await client.chat.completions.create(model="only", messages=MSGS, max_tokens=5)
            await http.aclose()
            assert len(requests) == 1  # x-should-retry: false — no useless retries
            err = exc.value
            assert err.code == "budget_exhausted" and err.type == "insufficient_quota"
            assert err.response.headers["x-tokenomy-budget-refused"] == "exhausted"
            assert "budget exceeded" in err.message
            assert s.calls == 0


async def test_a_daily_budget_refusal_names_its_reset(data_dir):
    async with stubs(Stub(out_tokens=10)) as (s,):
        cfg = {"deployments": [list_dep("only", s.base_url, 1000.0, 1000.0)], "timeouts": FAST_TIMEOUTS}
        async with gateway(cfg, data_dir) as g:
            key = g.key("daily", budget_usd="0.00001", budget_period="daily")
            st, h, b = await g.post("/v1/chat/completions", {"model": "only", "messages": MSGS, "max_tokens": 5}, key)
            assert st == 429 and b["error"]["code"] == "budget_exhausted"
            assert h["x-tokenomy-budget-reset"].endswith("T00:00:00Z")
            assert "resets at" in b["error"]["message"]


async def test_counters_unavailable_anywhere_on_the_path_is_its_503_not_a_500(data_dir):
    from tokenomy.metering.redis_counters import CountersUnavailable

    async with stubs(Stub(out_tokens=10)) as (s,):
        cfg = {"deployments": [list_dep("only", s.base_url, 1000.0, 1000.0)], "timeouts": FAST_TIMEOUTS}
        async with gateway(cfg, data_dir) as g:
            key = g.key("k", budget_usd="1")

            async def down(*a, **kw):
                raise CountersUnavailable("counters (Redis) are unavailable", retry_after_s=1.0)

            g.metering.areserve = down
            st, h, b = await g.post("/v1/chat/completions", {"model": "only", "messages": MSGS, "max_tokens": 5}, key)
            assert st == 503 and b["error"]["code"] == "service_unavailable" and h["Retry-After"] == "1"
            assert s.calls == 0
