"""Embeddings on a Gemini deployment: POST /v1/embeddings translated to batchEmbedContents. The fake
server checks each request against google-genai's types and is also called by the google-genai SDK
itself (its request must look like the adapter's, its response must parse), so the fake cannot drift
from the real wire format unnoticed; the client is the official openai SDK through the real gateway."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web
from openai import AsyncOpenAI

from tests.gateway.conftest import gateway, serve
from tokenomy.tokencount import counter_for

_ONE_REQUEST = {"model", "content", "outputDimensionality", "taskType", "title"}


class FakeGeminiEmbed:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        self.status = 200
        self.app = web.Application()
        self.app.router.add_post("/v1/models/{tail:.+}", self.embed)
        self.app.router.add_post("/v1beta/models/{tail:.+}", self.embed)

    async def embed(self, request: web.Request) -> web.Response:
        from google.genai import types

        body = orjson.loads(await request.read())
        self.requests.append((request.path_qs, dict(request.headers), body))
        if not request.path.endswith(":batchEmbedContents"):
            return web.json_response({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}, status=404)
        if self.status != 200:
            return web.json_response({"error": {"code": self.status, "message": "Resource has been exhausted",
                                                "status": "RESOURCE_EXHAUSTED"}}, status=self.status)
        reqs = body.get("requests")
        assert isinstance(reqs, list) and reqs and set(body) == {"requests"}, body
        out = []
        for r in reqs:
            assert set(r) <= _ONE_REQUEST and r["model"].startswith("models/"), r
            content = types.Content.model_validate(r["content"])  # google-genai's own schema
            n = r.get("outputDimensionality", 4)
            seed = len(content.parts[0].text)
            out.append({"values": [float(seed + i) for i in range(n)]})
        return web.json_response({"embeddings": out})


@pytest.fixture
async def fake():
    f = FakeGeminiEmbed()
    async with serve(f.app) as url:
        yield f, url


async def test_the_google_genai_sdk_speaks_the_same_wire_format(fake):
    from google import genai
    from google.genai import types

    f, url = fake
    client = genai.Client(api_key="g-key", http_options=types.HttpOptions(base_url=url, api_version="v1"))
    r = await client.aio.models.embed_content(model="gemini-embedding-001", contents=["abc", "hello"],
                                              config=types.EmbedContentConfig(output_dimensionality=3))
    assert [e.values for e in r.embeddings] == [[3.0, 4.0, 5.0], [5.0, 6.0, 7.0]]
    path, headers, body = f.requests[0]
    assert path == "/v1/models/gemini-embedding-001:batchEmbedContents" and headers["x-goog-api-key"] == "g-key"
    assert body["requests"][0]["outputDimensionality"] == 3


async def test_gateway_embeddings_on_gemini(fake, tmp_path, monkeypatch):
    f, url = fake
    monkeypatch.setenv("GEMINI_KEY", "g-key")
    dep = {"name": "emb@gemini", "provider": "gemini", "base_url": url, "api_key_env": "GEMINI_KEY",
           "model": "gemini-embedding-001", "mode": "embedding", "embedding_dimensions": 3072,
           "pricing": {"price_map": "gemini-embedding-001"}}
    cfg = {"deployments": [dep], "model_groups": {"emb": {"deployments": ["emb@gemini"]}}}
    async with gateway(cfg, tmp_path / "ledger") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("gem"), max_retries=0)
        r = await c.embeddings.create(model="emb", input=["abc", "hello"], dimensions=3, encoding_format="float")
        b64 = await c.embeddings.create(model="emb", input="abc", dimensions=2)  # the SDK's default: base64
        f.status = 429
        with pytest.raises(Exception) as exc:
            await c.embeddings.create(model="emb", input="abc")
        status, _, tok = await g.post("/v1/embeddings", {"model": "emb", "input": [1, 2, 3]}, g.key("gem"))
        await c.close()
        events = g.metering.events("gem")
    assert [d.embedding for d in r.data] == [[3.0, 4.0, 5.0], [5.0, 6.0, 7.0]] and r.model == "gemini-embedding-001"
    assert b64.data[0].embedding == [3.0, 4.0]
    assert getattr(exc.value, "status_code", None) == 429
    assert status == 400 and tok["error"]["param"] == "input"  # Gemini embeds text, not token ids
    # the adapter's request: what the google-genai SDK sends for the same call
    assert f.requests[0][2] == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "abc"}]}, "outputDimensionality": 3},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 3}]}
    assert f.requests[0][0] == "/v1/models/gemini-embedding-001:batchEmbedContents"
    ok = sorted((e for e in events if e.status == "ok"), key=lambda e: e.ts)
    assert len(ok) == 2 and all(e.output_tokens == 0 and e.estimated for e in ok)  # Gemini reports no token count
    tc = counter_for(g.gw.deployments["emb@gemini"])
    assert ok[0].input_tokens == tc.count_text("abc") + tc.count_text("hello")
    assert ok[0].cost_usd == ok[0].input_tokens * __import__("decimal").Decimal("1.5E-7")
    assert sorted(e.http_status for e in events if e.status != "ok") == [400, 429]


def test_gemini_and_vertex_answers_parse_through_one_helper():
    """batchEmbedContents, :predict and :embedContent answers of the same vectors give the same
    OpenAI list (base.embedding_list); a count that is not one gives no usage (the gateway counts)."""
    from tokenomy.gateway.providers.base import ProviderError
    from tokenomy.gateway.providers.gemini import _embeddings_from_gemini, _embeddings_from_vertex

    gem = _embeddings_from_gemini({"embeddings": [{"values": [1, 2]}, {"values": [3.5, 4]}],
                                   "usageMetadata": {"promptTokenCount": 6}}, "m", "float")
    pred = _embeddings_from_vertex({"predictions": [{"embeddings": {"values": [1, 2], "statistics": {"token_count": 2.0}}},
                                                    {"embeddings": {"values": [3.5, 4], "statistics": {"token_count": 4}}}]},
                                   "m", "float")
    assert gem == pred == {"object": "list", "model": "m", "usage": {"prompt_tokens": 6, "total_tokens": 6},
                           "data": [{"object": "embedding", "index": 0, "embedding": [1.0, 2.0]},
                                    {"object": "embedding", "index": 1, "embedding": [3.5, 4.0]}]}
    one = _embeddings_from_vertex({"embedding": {"values": [1, 2]}, "usageMetadata": {"promptTokenCount": "2"}}, "m", "float")
    assert one["data"][0]["embedding"] == [1.0, 2.0] and "usage" not in one
    for bad in ({"embeddings": [{"values": ["x"]}]}, {"embeddings": [{}]}, {"embeddings": []}, {}):
        out = _embeddings_from_gemini(bad, "m", "float")
        assert isinstance(out, ProviderError) and out.kind == "garbage" and out.status == 502
