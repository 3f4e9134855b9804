"""OpenAI passthrough (today's bytes) and Azure OpenAI (deployment URLs, api-version, api-key)."""

from __future__ import annotations

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tokenomy.config import Deployment
from tokenomy.gateway.providers import ProviderError, adapter_for, resolve_header_value

from .fakes import Runtime


COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop",
                           "logprobs": None}],
              "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


def test_openai_passthrough_is_todays_request(monkeypatch):
    monkeypatch.setenv("K", "sk-1")
    cfg = Deployment(name="a", base_url="http://h:1/v1", api_key_env="K", model="up", pricing={"price_map": "gpt-4o-mini"},
                     headers={"X-Org": "o"})
    ad = adapter_for(cfg)
    assert ad.passthrough and ad.provider == "openai"
    body = {"model": "alias", "messages": [{"role": "user", "content": "x"}], "stream": True}
    req = ad.build_request(body, Runtime(cfg, cfg.base_url), stream=True)
    assert req.url == "http://h:1/v1/chat/completions"
    assert req.headers == {"Content-Type": "application/json", "X-Org": "o", "Authorization": "Bearer sk-1"}
    want = {"model": "up", "messages": [{"role": "user", "content": "x"}], "stream": True,
            "stream_options": {"include_usage": True}}
    assert req.body == orjson.dumps(want) and req.warnings == ()
    assert ad.build_request({"model": "m", "prompt": "p"}, Runtime(cfg, cfg.base_url), stream=False,
                            kind="completions").url == "http://h:1/v1/completions"


def test_header_values_name_environment_variables(monkeypatch):
    monkeypatch.setenv("ORG_ID", "org-9")
    assert resolve_header_value("env:ORG_ID") == "org-9"
    assert resolve_header_value("Bearer ${ORG_ID}!") == "Bearer org-9!"
    assert resolve_header_value("plain") == "plain"
    monkeypatch.delenv("ORG_ID")
    assert resolve_header_value("env:ORG_ID") == ""


def test_openai_errors_classified():
    cfg = Deployment(name="a", base_url="http://h:1/v1", pricing={"price_map": "gpt-4o-mini"})
    ad = adapter_for(cfg)
    e = ad.parse_response(400, {}, orjson.dumps({"error": {"message": "This model's maximum context length is 8192 tokens",
                                                           "type": "invalid_request_error"}}))
    assert isinstance(e, ProviderError) and e.body["error"]["code"] == "context_length_exceeded" and not e.retryable
    e = ad.parse_response(200, {}, b"<html>")
    assert isinstance(e, ProviderError) and e.kind == "garbage" and e.retryable


@pytest.fixture
async def azure():
    seen: list[tuple[str, dict, dict]] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append((request.path_qs, dict(request.headers), orjson.loads(await request.read())))
        if request.headers.get("api-key") != "az-key":
            return web.json_response({"error": {"code": "401", "message": "Access denied due to invalid subscription key"}},
                                     status=401)
        return web.json_response(COMPLETION)

    app = web.Application()
    app.router.add_post("/openai/deployments/{dep}/chat/completions", chat)
    app.router.add_post("/openai/v1/chat/completions", chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), seen
    await server.close()


async def test_azure_deployment_url_api_version_and_key(azure, monkeypatch):
    url, seen = azure
    monkeypatch.setenv("AZ_KEY", "az-key")
    cfg = Deployment(name="gpt@azure", provider="azure", base_url=url, api_key_env="AZ_KEY", model="my-gpt4o",
                     api_version="2024-10-21", pricing={"price_map": "gpt-4o-mini"})
    ad = adapter_for(cfg)
    req = ad.build_request({"model": "x", "messages": [{"role": "user", "content": "hi"}]}, Runtime(cfg, url), stream=False)
    assert req.url == f"{url}/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    assert req.headers["api-key"] == "az-key" and "Authorization" not in req.headers
    async with aiohttp.ClientSession() as s, s.post(req.url, data=req.body, headers=req.headers) as r:
        out = ad.parse_response(r.status, dict(r.headers), await r.read(), req)
    assert out["choices"][0]["message"]["content"] == "hi"
    assert seen[0][0] == "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    # the official SDK's Azure client addresses the same URL shape with the same auth
    c = openai.AsyncAzureOpenAI(api_key="az-key", api_version="2024-10-21", azure_endpoint=url)
    sdk = await c.chat.completions.create(model="my-gpt4o", messages=[{"role": "user", "content": "hi"}])
    await c.close()
    assert sdk.choices[0].message.content == "hi"
    assert seen[1][0] == seen[0][0] and seen[1][1]["api-key"] == "az-key"


async def test_azure_v1_api_and_bad_key(azure, monkeypatch):
    url, seen = azure
    monkeypatch.setenv("AZ_KEY", "wrong")
    cfg = Deployment(name="gpt@azure", provider="azure", base_url=url + "/openai", api_key_env="AZ_KEY",
                     model="gpt-4o-mini", api_version="v1", pricing={"price_map": "gpt-4o-mini"})
    ad = adapter_for(cfg)
    req = ad.build_request({"model": "x", "messages": [{"role": "user", "content": "hi"}]},
                           Runtime(cfg, cfg.base_url), stream=False)
    assert req.url == f"{url}/openai/v1/chat/completions"
    async with aiohttp.ClientSession() as s, s.post(req.url, data=req.body, headers=req.headers) as r:
        out = ad.parse_response(r.status, dict(r.headers), await r.read(), req)
    assert isinstance(out, ProviderError) and out.status == 401 and out.kind == "client_error"
    assert "invalid subscription key" in out.body["error"]["message"]
    assert seen[0][2]["model"] == "gpt-4o-mini"


def test_unknown_provider_config_is_rejected():
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        Deployment(name="x", provider="cohere", base_url="http://h", pricing={"price_map": "gpt-4o-mini"})
    with pytest.raises(ValidationError, match="emulate serves the OpenAI protocol"):
        Deployment(name="x", provider="anthropic", emulate={}, pricing={"price_map": "gpt-4o-mini"})
