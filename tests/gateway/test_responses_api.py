"""POST /v1/responses (the OpenAI Responses API) through the real gateway, served by translation onto
emulated chat deployments, the official openai SDK as client (unary, stream=True, the stream helper):
output items, typed stream events, usage, one metered event per request, budgets, bad input, fallbacks."""

from __future__ import annotations

import json
from decimal import Decimal

import openai
import pytest
from openai import AsyncOpenAI

from gw_helpers import gateway
from tokenomy.config import default_config
from tokenomy.gateway.responses.response import responses_usage

MINI = "gpt-4o-mini"  # one emulated deployment, priced from the price map: $0.15 / $0.075 cached / $0.60 per Mtok
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def _mini_cost(inp: int, cached: int, out: int) -> Decimal:
    return ((inp - cached) * Decimal("0.15") + cached * Decimal("0.075") + out * Decimal("0.6")) / 1_000_000


@pytest.fixture
async def fleet(data_dir):
    cfg = default_config(time_scale=0.01).model_dump(by_alias=True, exclude_none=True)
    async with gateway(cfg, data_dir) as g:
        client = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("resp"), max_retries=0)
        yield g, client
        await client.close()


async def test_unary_text_instructions_and_usage_metered(fleet):
    g, client = fleet
    raw = await client.responses.with_raw_response.create(
        model=MINI, instructions="Answer briefly.", input="What is a GPU?", max_output_tokens=2000, temperature=0.3)
    r = raw.parse()
    assert r.status == "completed" and r.object == "response" and r.model == MINI
    assert r.output_text and [o.type for o in r.output] == ["message"]
    assert r.output[0].content[0].type == "output_text" and r.instructions == "Answer briefly."
    # instructions are the chat request's system message: the same prompt tokens as that chat request
    chat = await client.chat.completions.create(model=MINI, max_tokens=1, messages=[
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is a GPU?"}])
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    ev = next(e for e in g.metering.events("resp") if e.id == raw.headers["x-tokenomy-request-id"])
    assert len(g.metering.events("resp")) == 2  # one event per request
    assert (ev.input_tokens, ev.cached_input_tokens, ev.output_tokens) == (
        r.usage.input_tokens, r.usage.input_tokens_details.cached_tokens, r.usage.output_tokens)
    assert ev.status == "ok" and ev.model == MINI and ev.deployment == "gpt-4o-mini@openai-emulated"
    assert ev.cost_usd == _mini_cost(ev.input_tokens, ev.cached_input_tokens, ev.output_tokens)
    assert ev.cost_usd == Decimal(raw.headers["x-tokenomy-cost-usd"])


async def test_max_output_tokens_and_cached_tokens(fleet):
    g, client = fleet
    r = await client.responses.create(model=MINI, input="Tell me a long story.", max_output_tokens=5)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 5 and r.max_output_tokens == 5
    long_input = "The shared prefix of a long document. " * 60  # many KV blocks: the emulator caches them
    first = await client.responses.create(model=MINI, input=long_input, max_output_tokens=3)
    second = await client.responses.create(model=MINI, input=long_input, max_output_tokens=3)
    assert first.usage.input_tokens == second.usage.input_tokens
    cached = second.usage.input_tokens_details.cached_tokens
    assert 0 < cached <= second.usage.input_tokens
    ev = g.metering.events("resp")[0]  # newest first
    assert ev.cached_input_tokens == cached and ev.cost_usd == _mini_cost(ev.input_tokens, cached, 3)


async def test_message_items_function_calls_and_outputs(fleet):
    g, client = fleet
    r = await client.responses.create(model=MINI, input=[
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}],
        tools=TOOLS, tool_choice="required")
    (call,) = r.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    args = json.loads(call.arguments)
    assert isinstance(args["city"], str)  # valid JSON for the tool's schema (the emulator honours tools)
    assert r.tools[0].name == "get_weather" and r.tool_choice == "required"
    # the next turn: the call and its output are chat's assistant tool_calls and tool message
    follow = await client.responses.create(model=MINI, max_output_tokens=2000, tools=TOOLS, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"}])
    assert follow.status == "completed" and follow.output_text
    chat = await client.chat.completions.create(model=MINI, max_tokens=1, tools=[
        {"type": "function", "function": {k: TOOLS[0][k] for k in ("name", "description", "parameters")}}], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "18 C, sunny"}])
    assert follow.usage.input_tokens == chat.usage.prompt_tokens
    assert len(g.metering.events("resp")) == 3


async def test_stream_typed_events_parsed_by_the_sdk(fleet):
    g, client = fleet
    stream = await client.responses.create(model=MINI, input="Write a haiku about caches.", max_output_tokens=2000,
                                           stream=True)
    types, deltas, done = [], [], None
    async for ev in stream:
        types.append(ev.type)
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
        if ev.type == "response.completed":
            done = ev.response
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert set(types[4:-4]) == {"response.output_text.delta"} and len(deltas) == done.usage.output_tokens
    assert done.output_text == "".join(deltas) and done.status == "completed"
    (ev,) = g.metering.events("resp")
    assert (ev.input_tokens, ev.output_tokens) == (done.usage.input_tokens, done.usage.output_tokens)
    assert ev.cost_usd == _mini_cost(ev.input_tokens, ev.cached_input_tokens, ev.output_tokens) > 0
    assert ev.ttft_ms is not None and ev.status == "ok"
    # the SDK's stream helper accumulates the events into the final response
    async with client.responses.stream(model="llama-3-8b", input="hi", max_output_tokens=2000) as s:
        text = "".join([e.delta async for e in s if e.type == "response.output_text.delta"])
        final = await s.get_final_response()
    assert final.output_text == text and final.usage.output_tokens > 0
    assert len(g.metering.events("resp")) == 2


async def test_stream_function_call(fleet):
    g, client = fleet
    stream = await client.responses.create(model=MINI, input="Weather in Oslo?", tools=TOOLS,
                                           tool_choice={"type": "function", "name": "get_weather"}, stream=True)
    args, done_args, final = [], None, None
    async for ev in stream:
        if ev.type == "response.function_call_arguments.delta":
            args.append(ev.delta)
        elif ev.type == "response.function_call_arguments.done":
            done_args = ev.arguments
        elif ev.type == "response.completed":
            final = ev.response
    assert "".join(args) == done_args and "city" in json.loads(done_args)
    assert [o.type for o in final.output] == ["function_call"] and final.output[0].arguments == done_args
    (ev,) = g.metering.events("resp")
    assert ev.output_tokens == final.usage.output_tokens > 0


async def test_budget_refusal_unary_and_stream(fleet):
    g, _ = fleet
    c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("poor", budget_usd="0.000001"), max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as exc:
            await c.responses.create(model=MINI, input="word " * 200, max_output_tokens=500, stream=stream)
        assert exc.value.body["code"] == "budget_exhausted" and exc.value.response.headers["x-should-retry"] == "false"
    await c.close()
    assert g.metering.events("poor") == []


@pytest.mark.parametrize(("extra", "param", "code"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id", "unsupported_parameter"),
    ({"frobnicate": 1}, "frobnicate", "unknown_parameter"),
    ({"tools": [{"type": "web_search"}]}, "tools[0]", "invalid_value"),
    ({"input": []}, "input", "invalid_value"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type", "invalid_value"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type", "invalid_value"),
    ({"max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice", "invalid_value"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type", "invalid_value"),
    ({"store": "yes"}, "store", "invalid_type"),
    ({"input": None}, "input", "missing_required_parameter"),
])
async def test_bad_input_is_an_openai_400(fleet, extra, param, code):
    g, client = fleet
    with pytest.raises(openai.BadRequestError) as exc:
        await client.post("/responses", body={"model": MINI, "input": "hi", **extra}, cast_to=object)
    assert (exc.value.body["param"], exc.value.body["code"]) == (param, code)
    assert g.metering.events("resp") == []


async def test_dropped_fields_are_named_in_the_warning_header(fleet):
    g, client = fleet
    raw = await client.responses.with_raw_response.create(model=MINI, input="hi", max_output_tokens=3,
                                                          reasoning={"effort": "low"}, store=True)
    assert "reasoning" in raw.headers["x-tokenomy-warning"] and "store" in raw.headers["x-tokenomy-warning"]
    r = raw.parse()
    assert r.store is False and r.usage.output_tokens == 3


def _emu(name: str, usd_in: float, **emulate) -> dict:
    return {"name": name, "model": "m", "emulate": {"time_scale": 0.01, **emulate},
            "pricing": {"list": {"input": usd_in, "output": usd_in * 4}}}


async def test_fallback_unary_and_stream(data_dir):
    cfg = {"deployments": [_emu("cheap-broken", 0.1, fault_rate_500=1.0), _emu("dear-ok", 1.0)],
           "model_groups": {"m": {"deployments": ["cheap-broken", "dear-ok"], "policy": "cost"}}}
    async with gateway(cfg, data_dir) as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("fb"), max_retries=0)
        raw = await c.responses.with_raw_response.create(model="m", input="fall back", max_output_tokens=4)
        assert raw.headers["x-tokenomy-deployment"] == "dear-ok" and raw.parse().usage.output_tokens == 4
        stream = await c.responses.create(model="m", input="fall back", max_output_tokens=4, stream=True)
        kinds = [ev.type async for ev in stream]
        await c.close()
        assert kinds[0] == "response.created" and kinds[-1] == "response.incomplete"
        events = g.metering.events("fb")
    assert len(events) == 2 and {e.deployment for e in events} == {"dear-ok"}
    assert all(e.extra["attempts"][0]["deployment"] == "cheap-broken" for e in events)
    assert all(e.cost_usd == (Decimal(e.input_tokens) * 1 + 4 * 4) / Decimal(1_000_000) for e in events)


def test_usage_details_are_mapped():
    u = responses_usage({"prompt_tokens": 30, "completion_tokens": 12, "prompt_tokens_details": {"cached_tokens": 8},
                         "completion_tokens_details": {"reasoning_tokens": 7}})
    assert u == {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 8}, "output_tokens": 12,
                 "output_tokens_details": {"reasoning_tokens": 7}, "total_tokens": 42}
    assert responses_usage(None)["total_tokens"] == 0


async def test_routed_alias_and_rate_limit(fleet):
    g, client = fleet
    raw = await client.responses.with_raw_response.create(model="auto", input="Hello there", max_output_tokens=4)
    r = raw.parse()
    assert raw.headers["x-tokenomy-route-model"] in ("llama-3-8b", "llama-3-70b") and r.model == "auto"
    (ev,) = g.metering.events("resp")
    assert ev.model == raw.headers["x-tokenomy-route-model"] and ev.output_tokens == r.usage.output_tokens == 4
    limited = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("rpm", rpm=1), max_retries=0)
    await limited.responses.create(model=MINI, input="one", max_output_tokens=2)
    with pytest.raises(openai.RateLimitError):
        await limited.responses.create(model=MINI, input="two", max_output_tokens=2, stream=True)
    await limited.close()
    assert len(g.metering.events("rpm")) == 1
