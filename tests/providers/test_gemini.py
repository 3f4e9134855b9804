"""Gemini and Vertex adapters against a local generateContent server (requests checked with
google-genai's types; answers and streams also parsed by the google-genai SDK)."""

from __future__ import annotations

import datetime
import json

import aiohttp
import orjson
import pytest
from google import genai
from google.genai import types
from openai import AsyncOpenAI

from tests.gateway.conftest import gateway
from tokenomy.config import Deployment
from tokenomy.gateway.providers import ProviderError, adapter_for

from .fakes import FakeGemini, Runtime, check_gemini, gemini_response, running


@pytest.fixture
async def fake(monkeypatch):
    monkeypatch.setenv("TEST_GEMINI_KEY", "AIza-test")
    async with running(FakeGemini()) as f:
        yield f


def _cfg(url: str, **kw) -> Deployment:
    return Deployment(**{"name": "gemini@google", "provider": "gemini", "base_url": url, "api_key_env": "TEST_GEMINI_KEY",
                         "model": "gemini-2.5-flash", "pricing": {"price_map": "gemini-2.5-flash"}, **kw})


async def _call(ad, d, body: dict, stream: bool = False):
    req = ad.build_request(body, d, stream=stream)
    assert not isinstance(req, ProviderError), req
    if ad.needs_prepare:
        pass
    async with aiohttp.ClientSession() as s, s.post(req.url, data=req.body, headers=req.headers) as r:
        raw = await r.read()
        if not stream or r.status != 200:
            return req, ad.parse_response(r.status, dict(r.headers), raw, req)
        dec = ad.stream_decoder(req)
        chunks = []
        for i in range(0, len(raw), 5):
            chunks += dec.feed(raw[i:i + 5])
        return req, (chunks + dec.close(), dec)


BODY = {"model": "g", "messages": [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                 {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}},
                                 {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "user", "content": "So?"}],
    "tools": [{"type": "function", "function": {"name": "weather", "description": "weather now",
                                                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "tool_choice": {"type": "function", "function": {"name": "weather"}}, "stop": "END", "temperature": 0.2,
    "top_p": 0.5, "max_tokens": 64, "n": 2, "seed": 5, "logprobs": True,
    "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}}


async def test_request_translation_is_a_valid_generate_content_request(fake):
    fake.script = [(200, gemini_response([{"text": "{}"}]))]
    cfg = _cfg(fake.url)
    ad = adapter_for(cfg)
    req, out = await _call(ad, Runtime(cfg, fake.url), dict(BODY))
    path, headers, body = fake.requests[0]
    assert path == "/v1/models/gemini-2.5-flash:generateContent" and headers["x-goog-api-key"] == "AIza-test"
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][0]["parts"][1:] == [{"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/sky.png"}},
                                                {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}}]
    assert body["contents"][1]["parts"] == [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}]
    assert body["contents"][2]["parts"][0] == {"functionResponse": {"name": "weather", "response": {"content": "sunny"}}}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}
    assert body["generationConfig"] == {"maxOutputTokens": 64, "temperature": 0.2, "topP": 0.5, "seed": 5,
                                        "stopSequences": ["END"], "candidateCount": 2,
                                        "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}}
    assert body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["properties"] == {"city": {"type": "string"}}
    assert req.warnings == ("dropped unsupported field(s) for this provider: logprobs",)
    assert out["choices"][0]["message"]["content"] == "{}"


def test_the_schema_check_itself_rejects_bad_requests():
    assert check_gemini({"contents": [{"role": "user", "parts": [{"text": "x"}]}]}) is None
    assert check_gemini({"contents": [{"role": "user", "parts": [{"txt": "x"}]}]})
    assert check_gemini({"contents": [], "generationConfig": {"max_output_tokenz": 1}})
    assert check_gemini({"contents": [], "messages": []})


async def test_response_usage_and_sdk_agree(fake):
    usage = {"promptTokenCount": 100, "candidatesTokenCount": 20, "cachedContentTokenCount": 60,
             "thoughtsTokenCount": 30, "totalTokenCount": 150}
    fake.script = [(200, gemini_response([{"text": "thinking...", "thought": True}, {"text": "Calling."},
                                          {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}],
                                         usage=usage))]
    cfg = _cfg(fake.url)
    _, out = await _call(adapter_for(cfg), Runtime(cfg, fake.url), {"model": "g", "messages": [{"role": "user", "content": "x"}]})
    ch = out["choices"][0]
    assert ch["message"]["content"] == "Calling." and ch["finish_reason"] == "tool_calls"
    assert ch["message"]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city":"Oslo"}'}
    u = out["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"]) == (100, 50)
    assert u["prompt_tokens_details"]["cached_tokens"] == 60 and u["completion_tokens_details"]["reasoning_tokens"] == 30
    client = genai.Client(api_key="AIza-test", http_options=types.HttpOptions(base_url=fake.url))
    sdk = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert sdk.usage_metadata.cached_content_token_count == 60 and sdk.usage_metadata.thoughts_token_count == 30
    assert sdk.function_calls[0].args == {"city": "Oslo"}


async def test_stream_and_sdk_agree(fake):
    evs = [{"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 7}, "modelVersion": "gemini-2.5-flash", "responseId": "r"},
           {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "index": 0}],
            "modelVersion": "gemini-2.5-flash", "responseId": "r"},
           {"candidates": [{"content": {"role": "model", "parts": [{"text": "!"}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "thoughtsTokenCount": 2,
                              "totalTokenCount": 12}, "modelVersion": "gemini-2.5-flash", "responseId": "r"}]
    fake.script = [(200, evs)]
    cfg = _cfg(fake.url)
    req, (chunks, dec) = await _call(adapter_for(cfg), Runtime(cfg, fake.url),
                                     {"model": "g", "messages": [{"role": "user", "content": "x"}]}, stream=True)
    assert req.url.endswith(":streamGenerateContent?alt=sse")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello!"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == ["stop"]
    assert chunks[-1]["choices"] == [] and dec.usage["completion_tokens"] == 5 and dec.done
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake.url))
    text = "".join([c.text async for c in await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="x")])
    assert text == "Hello!"


@pytest.mark.parametrize("status,gstatus,message,want_status,want_code,retryable", [
    (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", 429, "rate_limit_exceeded", True),
    (400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
     400, "context_length_exceeded", False),
    (503, "UNAVAILABLE", "The model is overloaded. Please try again later.", 503, "upstream_overloaded", True),
    (403, "PERMISSION_DENIED", "API key not valid.", 403, "upstream_auth_failed", False),
])
async def test_errors_map_to_openai_shape(fake, status, gstatus, message, want_status, want_code, retryable):
    fake.script = [(status, {"error": {"code": status, "message": message, "status": gstatus}})]
    cfg = _cfg(fake.url)
    _, out = await _call(adapter_for(cfg), Runtime(cfg, fake.url), {"model": "g", "messages": [{"role": "user", "content": "x"}]})
    assert isinstance(out, ProviderError)
    assert (out.status, out.body["error"]["code"], out.retryable) == (want_status, want_code, retryable)


async def test_vertex_refreshes_google_credentials(fake, tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    fake.public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    creds = tmp_path / "sa.json"
    creds.write_text(json.dumps({"type": "service_account", "project_id": "proj-from-file", "private_key_id": "k1",
                                 "private_key": pem, "client_email": "gw@proj.iam.gserviceaccount.com",
                                 "client_id": "1", "token_uri": fake.url + "/token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(creds))
    fake.script = [(200, gemini_response([{"text": "ok"}]))]
    cfg = Deployment(name="g@vertex", provider="vertex", base_url=fake.url, model="gemini-2.5-flash", project="proj-1",
                     region="europe-west4", pricing={"price_map": "gemini-2.5-flash"})
    ad = adapter_for(cfg)
    await ad.prepare()
    await ad.prepare()  # still valid: no second token
    _, out = await _call(ad, Runtime(cfg, fake.url), {"model": "g", "messages": [{"role": "user", "content": "x"}]})
    assert out["choices"][0]["message"]["content"] == "ok" and fake.tokens_issued == 1
    path, headers, _ = fake.requests[0]
    assert path == "/v1/projects/proj-1/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    assert headers["authorization"] == "Bearer ya29.token-1" and "x-goog-api-key" not in headers
    ad._creds.expiry = datetime.datetime(2000, 1, 1)  # expired: the next prepare refreshes
    await ad.prepare()
    assert fake.tokens_issued == 2 and ad.headers["authorization"] == "Bearer ya29.token-2"


async def test_gemini_through_the_gateway(fake, tmp_path):
    fake.script = [(200, gemini_response([{"text": "Hi there"}],
                                         usage={"promptTokenCount": 9, "candidatesTokenCount": 2,
                                                "cachedContentTokenCount": 4, "totalTokenCount": 11}))]
    cfg = {"deployments": [{"name": "gemini@google", "provider": "gemini", "base_url": fake.url,
                            "api_key_env": "TEST_GEMINI_KEY", "model": "gemini-2.5-flash",
                            "pricing": {"price_map": "gemini-2.5-flash"}}]}
    async with gateway(cfg, tmp_path / "ledger") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("t"), max_retries=0)
        r = await c.chat.completions.create(model="gemini@google", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == "Hi there"
        fake.script = [(200, [{"candidates": [{"content": {"role": "model", "parts": [{"text": "Yo"}]},
                                               "finishReason": "STOP", "index": 0}],
                               "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}}])]
        fake.requests.clear()
        s = await c.chat.completions.create(model="gemini@google", messages=[{"role": "user", "content": "hi"}],
                                            stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])
        await c.close()
        assert text == "Yo"
        ev_unary, ev_stream = sorted(g.metering.events("t"), key=lambda e: e.input_tokens, reverse=True)
        assert (ev_unary.input_tokens, ev_unary.cached_input_tokens, ev_unary.output_tokens) == (9, 4, 2)
        assert (ev_stream.input_tokens, ev_stream.output_tokens, ev_stream.estimated) == (5, 1, False)
