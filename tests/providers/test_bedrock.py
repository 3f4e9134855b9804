"""Bedrock Converse / ConverseStream adapter against a local server (requests checked against
botocore's bedrock-runtime service model; answers and event streams also parsed by boto3)."""

from __future__ import annotations

import asyncio

import aiohttp
import boto3
import orjson
import pytest
from botocore.config import Config
from openai import APIStatusError, AsyncOpenAI
from yarl import URL

from tests.gateway.conftest import gateway
from tokenomy.config import Deployment
from tokenomy.gateway.providers import ProviderError, adapter_for

from .fakes import FakeBedrock, Runtime, check_converse, converse_response, running


MODEL = "anthropic.claude-sonnet-4-6-v1:0"


@pytest.fixture
async def fake(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-tok")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    async with running(FakeBedrock()) as f:
        yield f


def _cfg(url: str) -> Deployment:
    return Deployment(name="claude@bedrock", provider="bedrock", base_url=url, model=MODEL, region="eu-west-1",
                      pricing={"price_map": "claude-sonnet-4-6"})


async def _call(fake, body: dict, stream: bool = False):
    cfg = _cfg(fake.url)
    ad = adapter_for(cfg, default_max_tokens=512)
    req = ad.build_request(body, Runtime(cfg, fake.url), stream=stream)
    assert not isinstance(req, ProviderError), req
    async with aiohttp.ClientSession() as s, s.post(URL(req.url, encoded=True), data=req.body, headers=req.headers) as r:
        raw = await r.read()
        if not stream or r.status != 200:
            return req, ad.parse_response(r.status, dict(r.headers), raw, req)
        dec = ad.stream_decoder(req)
        chunks = []
        for i in range(0, len(raw), 9):
            chunks += dec.feed(raw[i:i + 9])
        return req, (chunks, dec)


def _boto(fake):
    return boto3.client("bedrock-runtime", region_name="eu-west-1", endpoint_url=fake.url,
                        config=Config(retries={"max_attempts": 1}, read_timeout=10))


BODY = {"model": "x", "messages": [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
    {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "tu1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"png\"}"}}]},
    {"role": "tool", "tool_call_id": "tu1", "content": "an image"},
    {"role": "user", "content": "So?"}],
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
                                                                                "properties": {"q": {"type": "string"}}}}}],
    "tool_choice": "required", "stop": ["\n"], "temperature": 0.4, "top_p": 0.8, "max_tokens": 99, "user": "u1"}


async def test_request_is_valid_converse_and_signed(fake):
    fake.script = [(200, converse_response([{"text": "A PNG."}]))]
    req, out = await _call(fake, dict(BODY))
    path, headers, body = fake.requests[0]
    assert path == "/model/anthropic.claude-sonnet-4-6-v1%3A0/converse"
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert "/eu-west-1/bedrock/aws4_request" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "session-tok" and "X-Amz-Date" in headers
    assert body["system"] == [{"text": "Be terse."}]
    assert body["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
    assert body["messages"][1]["content"][1] == {"toolUse": {"toolUseId": "tu1", "name": "lookup", "input": {"q": "png"}}}
    assert body["messages"][2]["content"][0]["toolResult"] == {"toolUseId": "tu1", "content": [{"text": "an image"}]}
    assert body["inferenceConfig"] == {"maxTokens": 99, "temperature": 0.4, "topP": 0.8, "stopSequences": ["\n"]}
    assert body["toolConfig"]["toolChoice"] == {"any": {}}
    assert req.warnings == ("dropped unsupported field(s) for this provider: user",)
    assert out["choices"][0]["message"]["content"] == "A PNG."


def test_the_schema_check_itself_rejects_bad_requests():
    ok = {"messages": [{"role": "user", "content": [{"text": "x"}]}]}
    assert check_converse("m", ok, False) is None
    assert check_converse("m", {**ok, "inferenceConfig": {"maxTokenz": 3}}, False)
    assert check_converse("m", {"messages": [{"role": "user", "content": [{"txt": "x"}]}]}, False)


async def test_response_usage_and_boto3_agree(fake):
    usage = {"inputTokens": 10, "outputTokens": 7, "totalTokens": 1117, "cacheReadInputTokens": 1000,
             "cacheWriteInputTokens": 100}
    fake.script = [(200, converse_response([{"text": "Calling."},
                                            {"toolUse": {"toolUseId": "tu9", "name": "lookup", "input": {"q": "a"}}}],
                                           stop="tool_use", usage=usage))]
    _, out = await _call(fake, dict(BODY))
    c = out["choices"][0]
    assert c["finish_reason"] == "tool_calls" and c["message"]["tool_calls"][0]["function"]["arguments"] == '{"q":"a"}'
    assert out["usage"]["prompt_tokens"] == 1110 and out["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 1000, "cache_write_tokens": 100}
    sdk = await asyncio.to_thread(  # boto3 is blocking: off the loop that serves the fake
        _boto(fake).converse, modelId=MODEL, messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert sdk["usage"]["cacheReadInputTokens"] == 1000 and sdk["stopReason"] == "tool_use"
    assert sdk["output"]["message"]["content"][1]["toolUse"]["input"] == {"q": "a"}


STREAM = [("messageStart", {"role": "assistant"}),
          ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
          ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
          ("contentBlockStop", {"contentBlockIndex": 0}),
          ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu2", "name": "lookup"}}}),
          ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"q\":"}}}),
          ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": " \"b\"}"}}}),
          ("contentBlockStop", {"contentBlockIndex": 1}),
          ("messageStop", {"stopReason": "tool_use"}),
          ("metadata", {"usage": {"inputTokens": 20, "outputTokens": 9, "totalTokens": 29}, "metrics": {"latencyMs": 5}})]


async def test_converse_stream_and_boto3_agree(fake):
    fake.script = [(200, STREAM)]
    req, (chunks, dec) = await _call(fake, dict(BODY), stream=True)
    assert req.url.endswith("/converse-stream") and req.headers["Accept"] == "application/vnd.amazon.eventstream"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello"
    args = "".join(tc["function"]["arguments"] for c in chunks if c["choices"]
                   for tc in c["choices"][0]["delta"].get("tool_calls") or ())
    assert orjson.loads(args) == {"q": "b"}
    assert chunks[-1]["choices"] == [] and dec.usage["prompt_tokens"] == 20 and dec.done
    def read_all():
        r = _boto(fake).converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "x"}]}])
        return list(r["stream"])

    events = await asyncio.to_thread(read_all)
    assert [next(iter(e)) for e in events] == [et for et, _ in STREAM]
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 9


@pytest.mark.parametrize("status,etype,msg,want_status,want_code,retryable", [
    (429, "ThrottlingException", "Too many requests, please wait before trying again.", 429, "rate_limit_exceeded", True),
    (400, "ValidationException", "Input is too long for requested model.", 400, "context_length_exceeded", False),
    (503, "ServiceUnavailableException", "Bedrock is unable to process your request.", 503, "upstream_error", True),
    (400, "ValidationException", "messages.0: bad", 400, "invalid_request", False),
])
async def test_errors_map_to_openai_shape(fake, status, etype, msg, want_status, want_code, retryable):
    fake.script = [(status, (etype, msg))]
    _, out = await _call(fake, {"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert isinstance(out, ProviderError)
    assert (out.status, out.body["error"]["code"], out.retryable) == (want_status, want_code, retryable)


async def test_stream_exception_frame_and_rejections(fake):
    fake.script = [(200, [("messageStart", {"role": "assistant"}),
                          ("!throttlingException", {"message": "slow down"})])]
    _, (chunks, dec) = await _call(fake, {"model": "x", "messages": [{"role": "user", "content": "hi"}]}, stream=True)
    assert dec.error is not None and dec.error.status == 429 and not dec.done
    cfg = _cfg(fake.url)
    out = adapter_for(cfg).build_request({"model": "x", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}, Runtime(cfg, fake.url), stream=False)
    assert isinstance(out, ProviderError) and out.status == 400 and "bytes only" in out.body["error"]["message"]


async def test_bedrock_through_the_gateway(fake, tmp_path):
    fake.script = [(200, converse_response([{"text": "Hi"}]))]
    cfg = {"deployments": [{"name": "claude@bedrock", "provider": "bedrock", "base_url": fake.url, "model": MODEL,
                            "region": "eu-west-1", "pricing": {"price_map": "claude-sonnet-4-6"}}]}
    async with gateway(cfg, tmp_path / "ledger") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("t"), max_retries=0)
        r = await c.chat.completions.create(model="claude@bedrock", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == "Hi" and r.usage.prompt_tokens == 11
        fake.script = [(200, STREAM)]
        s = await c.chat.completions.create(model="claude@bedrock", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, stream_options={"include_usage": True})
        got = [ch async for ch in s]
        assert "".join(ch.choices[0].delta.content or "" for ch in got if ch.choices) == "Hello"
        assert got[-1].usage.completion_tokens == 9
        fake.script = [(400, ("ValidationException", "Input is too long for requested model."))]
        with pytest.raises(APIStatusError) as ei:
            await c.chat.completions.create(model="claude@bedrock", messages=[{"role": "user", "content": "hi"}])
        await c.close()
        assert ei.value.status_code == 400 and ei.value.body["code"] == "context_length_exceeded"
        evs = g.metering.events("t")
        assert sorted(e.output_tokens for e in evs) == [0, 4, 9]
