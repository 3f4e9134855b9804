"""POST /v1/messages with the official anthropic SDK as client, against the real gateway in front
of the emulated fleet (OpenAI-compatible deployments): unary, stream, tools, errors, auth —
each answer's usage and cost checked against the ONE metered event of its request."""

from __future__ import annotations

import json
from decimal import Decimal

import aiohttp

import anthropic
import pytest
from anthropic import AsyncAnthropic

from tests.gateway.conftest import gateway
from tokenomy.config import default_config

WEATHER = {"name": "get_weather", "description": "Weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
async def fleet(tmp_path):
    cfg = default_config(time_scale=0.01).model_dump(by_alias=True, exclude_none=True)
    async with gateway(cfg, tmp_path / "ledger") as g:
        client = AsyncAnthropic(base_url=g.url, api_key=g.key("sdk"), max_retries=0)
        yield g, client
        await client.close()


def _price(ev) -> Decimal:  # gpt-4o-mini from the price map: $0.15 / $0.60 per Mtok
    return (Decimal(ev.input_tokens) * Decimal("0.15") + Decimal(ev.output_tokens) * Decimal("0.6")) / 1_000_000


async def test_unary_system_multi_turn_metered(fleet):
    g, c = fleet
    raw = await c.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=12, system=[{"type": "text", "text": "Be terse."}],
        messages=[{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."},
                  {"role": "user", "content": [{"type": "text", "text": "Tell me a story"}]}])
    m = await raw.parse()
    assert m.type == "message" and m.role == "assistant" and m.model == "gpt-4o-mini"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 12
    (ev,) = g.metering.events("sdk")
    assert ev.id == raw.headers["x-tokenomy-request-id"] and m.id == "msg_" + ev.id.removeprefix("req_")
    assert (m.usage.input_tokens, m.usage.output_tokens) == (ev.input_tokens, ev.output_tokens)
    assert m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0
    assert ev.cost_usd == Decimal(raw.headers["x-tokenomy-cost-usd"]) == _price(ev) > 0
    assert ev.model == "gpt-4o-mini" and ev.status == "ok"


async def test_unary_short_answer_ends_the_turn(fleet):
    g, c = fleet
    m = await c.messages.create(model="llama-3-8b", max_tokens=4000, messages=[{"role": "user", "content": "Hi"}])
    assert m.stop_reason == "end_turn" and 0 < m.usage.output_tokens < 4000
    (ev,) = g.metering.events("sdk")
    assert ev.output_tokens == m.usage.output_tokens and ev.deployment.startswith("llama-3-8b@")


async def test_stream_events_and_usage(fleet):
    g, c = fleet
    types = []
    async with c.messages.stream(model="gpt-4o-mini", max_tokens=9,
                                 messages=[{"role": "user", "content": "Write a haiku"}]) as s:
        async for ev in s:
            types.append(ev.type)
        m = await s.get_final_message()
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types.count("content_block_start") == 1 and types.count("content_block_stop") == 1
    assert types.count("text") == 9  # the SDK's text event: one per text_delta (one per token here)
    assert "message_delta" in types
    (ev,) = g.metering.events("sdk")
    assert m.stop_reason == "max_tokens" and m.content[0].text
    # message_delta carries the billed usage, exact
    assert (m.usage.input_tokens, m.usage.output_tokens) == (ev.input_tokens, ev.output_tokens) and ev.output_tokens == 9
    assert ev.cost_usd == _price(ev) and ev.ttft_ms is not None


async def test_stream_raw_events_are_anthropic_sse(fleet):
    g, c = fleet
    stream = await c.messages.create(model="gpt-4o-mini", max_tokens=3, stream=True,
                                     messages=[{"role": "user", "content": "Hi"}])
    evs = [e async for e in stream]  # the SDK yields every event but ping
    assert [e.type for e in evs] == ["message_start", "content_block_start", "content_block_delta",
                                     "content_block_delta", "content_block_delta", "content_block_stop",
                                     "message_delta", "message_stop"]
    assert all(e.delta.type == "text_delta" for e in evs if e.type == "content_block_delta")
    assert evs[-2].delta.stop_reason == "max_tokens" and evs[-2].usage.output_tokens == 3
    # on the wire: `event:` names matching each data's type, a ping, and the x-tokenomy cost comment
    async with aiohttp.ClientSession() as s, s.post(
            g.url + "/v1/messages", headers={"x-api-key": g.key("wire"), "anthropic-version": "2023-06-01"},
            json={"model": "gpt-4o-mini", "max_tokens": 2, "stream": True,
                  "messages": [{"role": "user", "content": "Hi"}]}) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    blocks = [b for b in raw.split("\n\n") if b]
    names = [b.split("\n")[0].removeprefix("event: ") for b in blocks if b.startswith("event:")]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    for b in blocks:
        if b.startswith("event:"):
            name, data = b.split("\n")
            assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")
    (tail,) = [b for b in blocks if b.startswith(": x-tokenomy ")]
    (ev,) = g.metering.events("wire")
    assert Decimal(json.loads(tail.removeprefix(": x-tokenomy "))["cost_usd"]) == ev.cost_usd
    assert len(g.metering.events("sdk")) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_tools_forced_and_tool_result_round_trip(fleet, stream):
    g, c = fleet
    kw = dict(model="gpt-4o-mini", max_tokens=60, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"},
              messages=[{"role": "user", "content": "Weather in Paris?"}])
    if stream:
        async with c.messages.stream(**kw) as s:
            m = await s.get_final_message()
    else:
        m = await c.messages.create(**kw)
    (call,) = m.content
    assert call.type == "tool_use" and call.name == "get_weather" and isinstance(call.input["city"], str)
    assert m.stop_reason == "tool_use"
    # The tool's answer goes back as a tool_result block; the chat upstream sees a tool message.
    again = await c.messages.create(
        model="gpt-4o-mini", max_tokens=5, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name,
                                                     "input": call.input}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"},
                                               {"type": "text", "text": "Thanks! Summarise."}]}])
    assert again.content[0].type == "text" and again.stop_reason == "max_tokens"
    evs = g.metering.events("sdk")
    assert len(evs) == 2 and all(e.status == "ok" for e in evs)
    assert sorted(e.output_tokens for e in evs) == sorted([m.usage.output_tokens, again.usage.output_tokens])


async def test_tool_choice_any_and_none(fleet):
    g, c = fleet
    m = await c.messages.create(model="gpt-4o-mini", max_tokens=60, tools=[WEATHER], tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": "Weather?"}])
    assert [b.type for b in m.content] == ["tool_use"] and m.stop_reason == "tool_use"
    m = await c.messages.create(model="gpt-4o-mini", max_tokens=5, tools=[WEATHER], tool_choice={"type": "none"},
                                messages=[{"role": "user", "content": "Weather?"}])
    assert [b.type for b in m.content] == ["text"]


async def test_stop_sequences_end_the_text(fleet):
    g, c = fleet
    full = await c.messages.create(model="gpt-4o-mini", max_tokens=30, messages=[{"role": "user", "content": "Go"}])
    words = full.content[0].text.split()
    stop = words[3]
    cut = await c.messages.create(model="gpt-4o-mini", max_tokens=30, stop_sequences=[stop],
                                  messages=[{"role": "user", "content": "Go"}])
    assert stop not in cut.content[0].text and full.content[0].text.startswith(cut.content[0].text)
    assert cut.stop_reason in ("stop_sequence", "end_turn") and cut.usage.output_tokens < full.usage.output_tokens


async def test_bad_input_is_anthropic_shaped(fleet):
    g, c = fleet
    with pytest.raises(anthropic.BadRequestError) as ei:
        await c.messages.create(model="gpt-4o-mini", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert ei.value.body["type"] == "error" and ei.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in ei.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as ei:
        await c.messages.create(model="gpt-4o-mini", max_tokens=5,
                                messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}])
    assert "messages.0.content.0.type" in ei.value.message
    with pytest.raises(anthropic.NotFoundError) as ei:
        await c.messages.create(model="claude-9", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert ei.value.body["error"]["type"] == "not_found_error"
    st, _, body = await g.post("/v1/messages", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                               g.key("raw"))
    assert st == 400 and body["error"]["type"] == "invalid_request_error" and "max_tokens" in body["error"]["message"]
    st, _, body = await g.post("/v1/messages", b"{not json", g.key("raw"))
    assert st == 400 and body["type"] == "error"
    assert g.metering.events("sdk") == [] and g.metering.events("raw") == []  # refused before any work


async def test_auth_x_api_key_bearer_and_wrong_key(fleet):
    g, c = fleet
    bearer = AsyncAnthropic(base_url=g.url, auth_token=g.key("bearer"), max_retries=0)
    m = await bearer.messages.create(model="gpt-4o-mini", max_tokens=2, messages=[{"role": "user", "content": "x"}])
    await bearer.close()
    assert m.usage.output_tokens == 2 and len(g.metering.events("bearer")) == 1
    wrong = AsyncAnthropic(base_url=g.url, api_key="tk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as ei:
        await wrong.messages.create(model="gpt-4o-mini", max_tokens=2, messages=[{"role": "user", "content": "x"}])
    await wrong.close()
    assert ei.value.body["error"]["type"] == "authentication_error"


async def test_budget_refusal_is_a_final_billing_error(fleet):
    g, _ = fleet
    # $1e-9 affords not one token of gpt-4o-mini: spent before the first request
    c = AsyncAnthropic(base_url=g.url, api_key=g.key("poor", budget_usd="0.000000001"), max_retries=2)
    with pytest.raises(anthropic.APIStatusError) as ei:
        await c.messages.create(model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "x"}])
    await c.close()
    e = ei.value
    assert e.status_code == 402 and e.body["error"]["type"] == "billing_error"
    assert e.response.headers["x-should-retry"] == "false"  # the SDK does not retry it
    assert g.metering.events("poor") == []


async def test_rate_limit_is_retryable_rate_limit_error(fleet):
    g, _ = fleet
    c = AsyncAnthropic(base_url=g.url, api_key=g.key("slow", rpm=1), max_retries=0)
    await c.messages.create(model="gpt-4o-mini", max_tokens=2, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.RateLimitError) as ei:
        await c.messages.create(model="gpt-4o-mini", max_tokens=2, messages=[{"role": "user", "content": "x"}])
    await c.close()
    assert ei.value.body["error"]["type"] == "rate_limit_error" and int(ei.value.response.headers["retry-after"]) >= 1
    assert len(g.metering.events("slow")) == 1
