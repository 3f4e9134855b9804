"""The emulator honours OpenAI's request parameters, driven through the gateway with the openai SDK."""

from __future__ import annotations

import json

import jsonschema_rs
import pytest
from openai import AsyncOpenAI, BadRequestError

from tests.gateway.conftest import gateway
from tokenomy.config import default_config

MODEL = "gpt-4o-mini"  # one emulated deployment: the same prompt always meets the same emulator
MSG = [{"role": "user", "content": "Tell me about the cost of energy for a large model."}]
SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "minLength": 2},
    "days": {"type": "integer", "minimum": 1, "maximum": 14},
    "unit": {"enum": ["celsius", "fahrenheit"]},
    "alerts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    "detail": {"type": "object", "properties": {"hourly": {"type": "boolean"}, "ratio": {"type": "number", "maximum": 1}},
               "required": ["hourly", "ratio"], "additionalProperties": False}},
    "required": ["city", "days", "unit", "alerts", "detail"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "forecast", "description": "weather forecast", "parameters": SCHEMA}},
         {"type": "function", "function": {"name": "other", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture
async def client(tmp_path):
    cfg = default_config(time_scale=0.001).model_dump(by_alias=True, exclude_none=True)
    async with gateway(cfg, tmp_path / "ledger") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("p"), max_retries=0)
        yield c
        await c.close()


async def test_stop_sequence_ends_the_text(client):
    full = (await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=60)).choices[0].message.content
    words = full.split()
    stop = " " + words[len(words) // 2]
    cut_at = full.find(stop)
    r = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=60, stop=[stop, "@@never@@"])
    assert r.choices[0].message.content == full[:cut_at] and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 60
    s = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=60, stop=stop, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in s if c.choices]) == full[:cut_at]


@pytest.mark.parametrize("choice,finish", [("required", "tool_calls"),
                                           ({"type": "function", "function": {"name": "forecast"}}, "stop")])
async def test_forced_tool_yields_valid_arguments(client, choice, finish):
    r = await client.chat.completions.create(model=MODEL, messages=MSG, tools=TOOLS, tool_choice=choice)
    c = r.choices[0]
    assert c.finish_reason == finish and c.message.content is None
    (call,) = c.message.tool_calls
    assert call.function.name == "forecast" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    jsonschema_rs.validate(SCHEMA, args)
    assert r.usage.completion_tokens > 5
    s = await client.chat.completions.create(model=MODEL, messages=MSG, tools=TOOLS, tool_choice=choice, stream=True)
    parts, names = [], []
    async for ch in s:
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            if tc.function.name:
                names.append(tc.function.name)
            parts.append(tc.function.arguments or "")
    assert names == ["forecast"] and json.loads("".join(parts)) == args


async def test_json_mode_and_json_schema(client):
    r = await client.chat.completions.create(model=MODEL, messages=MSG, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    r = await client.chat.completions.create(model=MODEL, messages=MSG, response_format={
        "type": "json_schema", "json_schema": {"name": "forecast", "schema": SCHEMA, "strict": True}})
    jsonschema_rs.validate(SCHEMA, json.loads(r.choices[0].message.content))
    assert r.choices[0].finish_reason == "stop"


async def test_logprobs_in_openai_shape(client):
    r = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=20, logprobs=True, top_logprobs=3)
    c = r.choices[0]
    lp = c.logprobs.content
    assert len(lp) == r.usage.completion_tokens == 20
    assert "".join(e.token for e in lp) == c.message.content
    for e in lp:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3 and e.top_logprobs[0].token == e.token
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)
        assert bytes(e.bytes).decode() == e.token
    s = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=20, logprobs=True, top_logprobs=3,
                                             stream=True)
    streamed = [e async for ch in s if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in lp]
    plain = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=5)
    assert plain.choices[0].logprobs is None


@pytest.mark.parametrize("extra,param,code", [
    ({"temperature": 5}, "temperature", "decimal_above_max_value"),
    ({"temperature": -0.1}, "temperature", "decimal_below_min_value"),
    ({"top_p": 2}, "top_p", "decimal_above_max_value"),
    ({"presence_penalty": 3}, "presence_penalty", "decimal_above_max_value"),
    ({"top_logprobs": 25, "logprobs": True}, "top_logprobs", "integer_above_max_value"),
    ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "invalid_value"),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "invalid_value"),
])
async def test_out_of_range_parameters_get_openais_400(client, extra, param, code):
    with pytest.raises(BadRequestError) as ei:
        await client.chat.completions.create(model=MODEL, messages=MSG, **extra)
    err = ei.value.body
    assert (err["param"], err["code"]) == (param, code), err


async def test_n_below_one_is_a_400(client):
    with pytest.raises(BadRequestError) as ei:
        await client.chat.completions.create(model=MODEL, messages=MSG, n=0)
    assert ei.value.body["param"] == "n"


async def test_completions_stop_and_logprobs(client):
    r = await client.completions.create(model=MODEL, prompt="Say something", max_tokens=12, logprobs=2)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.tokens) == r.usage.completion_tokens
    assert all(len(t) == 2 for t in lp.top_logprobs) and lp.text_offset[0] == 0
    with pytest.raises(BadRequestError):
        await client.completions.create(model=MODEL, prompt="x", logprobs=6)


async def test_min_tokens_and_ignore_eos_give_the_requested_length(client):
    """vLLM's extensions, which `tokenomy bench` sends so every endpoint generates the same
    number of tokens: the emulator honours them like vLLM (issue 20: bench out=128 gave 96)."""
    natural = (await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=4000)).usage.completion_tokens
    assert natural < 400  # the emulator's text stops on its own well before the cap
    want = natural + 37
    r = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=4000, extra_body={"min_tokens": want})
    assert r.usage.completion_tokens == want and r.choices[0].finish_reason == "stop"
    r = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=want + 50,
                                             extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == want + 50 and r.choices[0].finish_reason == "length"
    s = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=want + 50, stream=True,
                                             stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    usage = [c.usage async for c in s if c.usage]
    assert usage[-1].completion_tokens == want + 50
    low = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=4000, extra_body={"min_tokens": 1})
    assert low.usage.completion_tokens == natural  # a floor below the natural length changes nothing


@pytest.mark.parametrize("extra,param", [({"min_tokens": 20, "max_tokens": 10}, "min_tokens"),
                                         ({"min_tokens": -1}, "min_tokens"), ({"min_tokens": "5"}, "min_tokens"),
                                         ({"ignore_eos": "yes"}, "ignore_eos")])
async def test_bad_length_controls_are_400(client, extra, param):
    with pytest.raises(BadRequestError) as e:
        await client.chat.completions.create(model=MODEL, messages=MSG, extra_body=extra)
    assert e.value.status_code == 400 and param in str(e.value)
