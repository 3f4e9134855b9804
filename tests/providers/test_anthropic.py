"""Anthropic adapter against a local Messages API server (requests checked with the SDK's types;
answers also parsed by the official anthropic SDK)."""

from __future__ import annotations

import aiohttp
import anthropic
import orjson
import pytest

from tokenomy.config import Deployment
from tokenomy.gateway.providers import ProviderError, adapter_for
from tokenomy.gateway.routing import DeploymentRuntime  # noqa: F401 (the runtime shape adapters read)

from .fakes import FakeAnthropic, Runtime, anthropic_message, anthropic_stream, check_typed, running


@pytest.fixture
async def fake(monkeypatch):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
    monkeypatch.setenv("TEST_BETA", "prompt-caching-2024-07-31")
    async with running(FakeAnthropic()) as f:
        yield f


def _cfg(url: str, **headers: str) -> Deployment:
    return Deployment(name="claude@anthropic", provider="anthropic", base_url=url, api_key_env="TEST_ANTHROPIC_KEY",
                      model="claude-sonnet-4-6", pricing={"price_map": "claude-sonnet-4-5"},
                      headers={"anthropic-beta": "env:TEST_BETA", **headers})


async def _call(fake, body: dict, stream: bool = False, **headers: str):
    cfg = _cfg(fake.url, **headers)
    ad = adapter_for(cfg, default_max_tokens=1024)
    d = Runtime(cfg, fake.url)
    req = ad.build_request(body, d, stream=stream)
    assert not isinstance(req, ProviderError), req
    async with aiohttp.ClientSession() as s, s.post(req.url, data=req.body, headers=req.headers) as r:
        raw = await r.read()
        if not stream or r.status != 200:
            return ad, req, ad.parse_response(r.status, dict(r.headers), raw, req)
        dec = ad.stream_decoder(req)
        chunks = []
        for i in range(0, len(raw), 7):  # awkward chunk boundaries on purpose
            chunks += dec.feed(raw[i:i + 7])
        return ad, req, (chunks, dec)


CHAT = {"model": "claude", "messages": [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": [{"type": "text", "text": "What is in these?"},
                                 {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"cat\"}"}}]},
    {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"},
    {"role": "user", "content": "And now?"}],
    "tools": [{"type": "function", "function": {"name": "lookup", "description": "look up",
                                                  "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
    "tool_choice": "required", "parallel_tool_calls": False, "stop": ["\n\n"], "temperature": 0.3, "top_p": 0.9,
    "max_tokens": 200, "user": "u-42", "seed": 7}


async def test_request_translation_is_a_valid_messages_request(fake):
    fake.script = [(200, anthropic_message([{"type": "text", "text": "A cat."}]))]
    _, req, out = await _call(fake, dict(CHAT))
    headers, body = fake.requests[0]
    assert headers["x-api-key"] == "sk-ant-test" and headers["anthropic-version"] == "2026-10-21"
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"  # env: header value expanded
    assert body["system"] == [{"type": "text", "text": "Be terse."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    imgs = [b for b in body["messages"][0]["content"] if b["type"] == "image"]
    assert imgs == [{"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]
    assert body["messages"][1]["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "cat"}}]
    assert body["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"}
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["stop_sequences"] == ["\n\n"] and body["max_tokens"] == 200
    assert "temperature" not in body and "top_p" not in body  # 2026-10-21 has no sampling parameters
    assert body["metadata"] == {"user_id": "u-42"} and body["model"] == "claude-sonnet-4-6"
    assert req.warnings == ("dropped unsupported field(s) for this provider: seed",
                            "dropped temperature, top_p: Anthropic API 2026-10-21 has no sampling parameters")
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "A cat."}


async def test_max_tokens_default_and_temperature_clamp_on_the_legacy_version(fake):
    fake.script = [(200, anthropic_message([{"type": "text", "text": "ok"}]))]
    _, req, _ = await _call(fake, {"model": "c", "messages": [{"role": "user", "content": "hi"}], "temperature": 1.7},
                            **{"Anthropic-Version": "2023-06-01"})
    headers, body = fake.requests[0]
    assert headers["anthropic-version"] == "2023-06-01"
    assert body["max_tokens"] == 1024 and body["temperature"] == 1.0
    assert any("temperature 1.7 clamped" in w for w in req.warnings)


async def test_response_usage_tool_calls_and_sdk_agree(fake):
    msg = anthropic_message([{"type": "text", "text": "Let me look."},
                             {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"q": "dog"}}],
                            stop_reason="tool_use",
                            usage={"input_tokens": 10, "output_tokens": 30, "cache_creation_input_tokens": 100,
                                   "cache_read_input_tokens": 1000})
    fake.script = [(200, msg)]
    _, _, out = await _call(fake, dict(CHAT))
    m = out["choices"][0]
    assert m["finish_reason"] == "tool_calls"
    assert m["message"]["tool_calls"] == [{"id": "toolu_9", "type": "function",
                                          "function": {"name": "lookup", "arguments": '{"q":"dog"}'}}]
    assert out["usage"]["prompt_tokens"] == 1110 and out["usage"]["completion_tokens"] == 30
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 1000, "cache_write_tokens": 100}
    # the official SDK parses the fake's answer into the same numbers
    async with anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=fake.url) as c:
        sdk = await c.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                                      messages=[{"role": "user", "content": "x"}])
    assert sdk.stop_reason == "tool_use" and sdk.content[1].input == {"q": "dog"}
    assert sdk.usage.cache_read_input_tokens == 1000 and sdk.usage.cache_creation_input_tokens == 100


async def test_json_schema_via_forced_tool(fake):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fake.script = [(200, anthropic_message([{"type": "tool_use", "id": "t", "name": "json_response",
                                             "input": {"city": "Paris"}}], stop_reason="tool_use"))]
    _, req, out = await _call(fake, {"model": "c", "messages": [{"role": "user", "content": "capital of France?"}],
                                     "response_format": {"type": "json_schema",
                                                         "json_schema": {"name": "a", "schema": schema}}})
    body = fake.requests[0][1]
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
    assert body["tools"][0]["input_schema"] == schema
    assert orjson.loads(out["choices"][0]["message"]["content"]) == {"city": "Paris"}
    assert out["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in out["choices"][0]["message"]


async def test_stream_text_tool_and_usage_chunks(fake):
    events = anthropic_stream(["Hel", "lo"], tool=("toolu_3", "lookup", ['{"q": ', '"x"}']),
                              usage_in={"cache_read_input_tokens": 50}, output_tokens=9, stop_reason="tool_use")
    fake.script = [(200, events)]
    _, _, (chunks, dec) = await _call(fake, dict(CHAT), stream=True)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello"
    args = "".join(tc["function"]["arguments"] for c in chunks if c["choices"]
                   for tc in c["choices"][0]["delta"].get("tool_calls") or ())
    assert orjson.loads(args) == {"q": "x"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["tool_calls"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 70
    assert dec.usage["completion_tokens"] == 9 and dec.usage["prompt_tokens_details"]["cached_tokens"] == 50
    # the SDK reads the same stream into the same message
    async with anthropic.AsyncAnthropic(api_key="k", base_url=fake.url) as c:
        async with c.messages.stream(model="claude-sonnet-4-6", max_tokens=10,
                                     messages=[{"role": "user", "content": "x"}]) as s:
            final = await s.get_final_message()
    assert final.content[0].text == "Hello" and final.content[1].input == {"q": "x"}
    assert final.usage.output_tokens == 9


@pytest.mark.parametrize("status,etype,message,want_status,want_kind,want_code", [
    (529, "overloaded_error", "Overloaded", 503, "http_5xx", "upstream_overloaded"),
    (429, "rate_limit_error", "Number of request tokens has exceeded your rate limit", 429, "http_429",
     "rate_limit_exceeded"),
    (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", 400, "client_error",
     "context_length_exceeded"),
    (400, "invalid_request_error", "messages.0: bad", 400, "client_error", "invalid_request"),
    (401, "authentication_error", "invalid x-api-key", 401, "client_error", "upstream_auth_failed"),
    (500, "api_error", "Internal server error", 502, "http_5xx", "upstream_error"),
])
async def test_errors_map_to_openai_shape(fake, status, etype, message, want_status, want_kind, want_code):
    fake.script = [(status, {"type": "error", "error": {"type": etype, "message": message}})]
    _, _, out = await _call(fake, {"model": "c", "messages": [{"role": "user", "content": "hi"}]})
    assert isinstance(out, ProviderError)
    assert (out.status, out.kind, out.body["error"]["code"]) == (want_status, want_kind, want_code)
    assert out.body["error"]["message"] == message
    assert out.retryable == (want_kind != "client_error")


def test_rejects_what_anthropic_cannot_do():
    cfg = _cfg("http://127.0.0.1:1")
    ad = adapter_for(cfg)
    d = Runtime(cfg, cfg.base_url)
    for body, param in [({"model": "c", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
                        ({"model": "c", "messages": [{"role": "user", "content": "x"}],
                          "tools": [{"type": "code_interpreter"}]}, "tools"),
                        ({"model": "c", "messages": [{"role": "user", "content": [
                            {"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}, "messages"),
                        ({"model": "c", "messages": [{"role": "system", "content": "only system"}]}, "messages")]:
        out = ad.build_request(body, d, stream=False)
        assert isinstance(out, ProviderError) and out.status == 400 and out.body["error"]["param"] == param


def test_the_schema_check_itself_rejects_bad_requests():
    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
    assert check_typed(MessageCreateParamsNonStreaming, {"model": "m", "max_tokens": 5,
                                                         "messages": [{"role": "user", "content": "x"}]}) is None
    assert check_typed(MessageCreateParamsNonStreaming, {"model": "m", "max_tokens": 5, "n": 2,
                                                         "messages": [{"role": "user", "content": "x"}]})
    assert check_typed(MessageCreateParamsNonStreaming, {"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "url"}}]}]})
