"""Embeddings on a Vertex deployment: POST /v1/embeddings as Vertex AI's :predict (text-embedding-*,
gemini-embedding-001) or :embedContent (newer Gemini embedding models). The fake server answers as
Vertex does and is also called by the google-genai SDK in Vertex mode (its requests must equal the
adapter's, its answers must parse), so the fake cannot drift from the real wire format unnoticed;
the client is the official openai SDK through the real gateway, google-auth's token refresh included."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest
from aiohttp import web
from openai import AsyncOpenAI, BadRequestError, RateLimitError

from tests.gateway.conftest import gateway, serve
from tokenomy.gateway.providers.base import MAX_FANOUT_CALLS
from tokenomy.gateway.providers.gemini import VERTEX_MAX_INSTANCES
from tokenomy.tokencount import counter_for

PREFIX = "/v1/projects/proj-1/locations/us-central1/publishers/google/models/"


class FakeVertexEmbed:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        self.token_count: object = None  # set: every statistics.token_count / promptTokenCount reported
        self.app = web.Application()
        self.app.router.add_post(PREFIX + "{tail:.+}", self.embed)
        self.app.router.add_post("/token", self.token)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        return web.json_response({"access_token": "ya29.vertex", "expires_in": 3600, "token_type": "Bearer"})

    def _vector(self, text: str, n: int) -> list[float]:
        return [float(len(text) + i) for i in range(n)]

    def _count(self, text: str) -> object:
        return len(text.split()) + 1 if self.token_count is None else self.token_count

    async def embed(self, request: web.Request) -> web.Response:
        from google.genai import types

        body = orjson.loads(await request.read())
        model, _, op = request.match_info["tail"].partition(":")
        self.requests.append((request.path, dict(request.headers), body))
        if request.headers.get("Authorization") != "Bearer ya29.vertex":
            return web.json_response({"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                                                "status": "UNAUTHENTICATED"}}, status=401)
        if op == "predict":
            assert set(body) <= {"instances", "parameters"}, body
            inst, params = body["instances"], body.get("parameters", {})
            assert set(params) <= {"outputDimensionality", "autoTruncate"}, params
            assert all(set(i) <= {"content", "task_type", "title", "mimeType"} and isinstance(i["content"], str)
                       for i in inst), inst
            limit = 1 if model == "gemini-embedding-001" else VERTEX_MAX_INSTANCES
            if not 1 <= len(inst) <= limit:
                return web.json_response({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                                    "message": f"{len(inst)} instances: at most {limit}"}}, status=400)
            if any(i["content"].startswith("quota") for i in inst):
                return web.json_response({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                                    "message": "Quota exceeded for aiplatform.googleapis.com"}}, status=429)
            n = params.get("outputDimensionality", 768)
            stats = [{"token_count": self._count(i["content"]), "truncated": False} for i in inst]
            for st in stats:
                if st["token_count"] == "absent":
                    del st["token_count"]
            return web.json_response({"predictions": [
                {"embeddings": {"values": self._vector(i["content"], n), "statistics": st}}
                for i, st in zip(inst, stats)], "metadata": {"billableCharacterCount": sum(len(i["content"]) for i in inst)}})
        if op == "embedContent":
            assert set(body) <= {"content", "embedContentConfig"}, body
            content = types.Content.model_validate(body["content"])  # google-genai's own schema
            cfg = types.EmbedContentConfig.model_validate(
                {"output_dimensionality": body.get("embedContentConfig", {}).get("outputDimensionality"),
                 "auto_truncate": body.get("embedContentConfig", {}).get("autoTruncate")})
            text = content.parts[0].text
            return web.json_response({"embedding": {"values": self._vector(text, cfg.output_dimensionality or 3072)},
                                      "usageMetadata": {"promptTokenCount": self._count(text)}, "truncated": False})
        return web.json_response({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}, status=404)


@pytest.fixture
async def fake(tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    f = FakeVertexEmbed()
    async with serve(f.app) as url:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        creds = tmp_path / "sa.json"
        creds.write_text(json.dumps({"type": "service_account", "project_id": "proj-1", "private_key_id": "k1",
                                     "private_key": pem, "client_email": "gw@proj.iam.gserviceaccount.com",
                                     "client_id": "1", "token_uri": url + "/token"}))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(creds))
        yield f, url


def _config(url: str, model: str, **dep) -> dict:
    return {"deployments": [{"name": "emb@vertex", "provider": "vertex", "base_url": url, "project": "proj-1",
                             "region": "us-central1", "model": model, "mode": "embedding",
                             "pricing": {"list": {"input": 0.1, "output": 0}}, **dep}],
            "model_groups": {"emb": {"deployments": ["emb@vertex"]}}, "retry": {"max_attempts": 1}}


async def _genai(url: str, model: str, contents, dims: int):
    """The google-genai SDK in Vertex mode against the fake: (its parsed answer, the request it sent)."""
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    client = genai.Client(vertexai=True, project="proj-1", location="us-central1",
                          credentials=google.oauth2.credentials.Credentials("ya29.vertex"),
                          http_options=types.HttpOptions(base_url=url, api_version="v1"))
    r = await client.aio.models.embed_content(model=model, contents=contents,
                                              config=types.EmbedContentConfig(output_dimensionality=dims,
                                                                              auto_truncate=False))
    return r


async def test_predict_through_the_gateway_matches_google_genai(fake, tmp_path):
    f, url = fake
    sdk = await _genai(url, "text-embedding-005", ["abc", "hello world"], 3)
    assert [e.values for e in sdk.embeddings] == [[3.0, 4.0, 5.0], [11.0, 12.0, 13.0]]
    assert [e.statistics.token_count for e in sdk.embeddings] == [2, 3] and sdk.embeddings[0].statistics.truncated is False
    sdk_path, _, sdk_body = f.requests.pop()
    async with gateway(_config(url, "text-embedding-005", embedding_dimensions=768), tmp_path / "l") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("v"), max_retries=0)
        r = await c.embeddings.create(model="emb", input=["abc", "hello world"], dimensions=3, encoding_format="float")
        b64 = await c.embeddings.create(model="emb", input="abc", dimensions=2)  # the SDK's default: base64
        with pytest.raises(BadRequestError) as too_big:
            await c.embeddings.create(model="emb", input="abc", dimensions=769)
        status, _, tok = await g.post("/v1/embeddings", {"model": "emb", "input": [1, 2, 3]}, g.key("v"))
        await c.close()
        events = sorted(g.metering.events("v"), key=lambda e: e.ts)
    # the adapter's request is the one google-genai sends for the same call
    path, headers, body = f.requests[0]
    assert (path, body) == (sdk_path, sdk_body) == (PREFIX + "text-embedding-005:predict", {
        "instances": [{"content": "abc"}, {"content": "hello world"}],
        "parameters": {"outputDimensionality": 3, "autoTruncate": False}})
    assert headers["Authorization"] == "Bearer ya29.vertex"  # google-auth's token, refreshed from the fake
    assert [d.embedding for d in r.data] == [[3.0, 4.0, 5.0], [11.0, 12.0, 13.0]] and r.model == "text-embedding-005"
    assert r.usage.prompt_tokens == 5 and b64.data[0].embedding == [3.0, 4.0]
    assert too_big.value.body["param"] == "dimensions" and len(f.requests) == 2  # refused before any call
    assert status == 400 and tok["error"]["param"] == "input"  # Vertex embeds text, not token ids
    ok = [e for e in events if e.status == "ok"]
    assert [(e.input_tokens, e.output_tokens, e.estimated) for e in ok] == [(5, 0, False), (2, 0, False)]
    assert ok[0].cost_usd == 5 * Decimal("1E-7")


async def test_embed_content_models_take_one_input_per_call(fake, tmp_path):
    f, url = fake
    sdk = await _genai(url, "gemini-embedding-2", "abc", 4)
    assert sdk.embeddings[0].values == [3.0, 4.0, 5.0, 6.0] and sdk.embeddings[0].statistics.token_count == 2
    sdk_path, _, sdk_body = f.requests.pop()
    async with gateway(_config(url, "gemini-embedding-2"), tmp_path / "l") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("v"), max_retries=0)
        r = await c.embeddings.create(model="emb", input=["abc", "hello world", "x y z w"], dimensions=4,
                                      encoding_format="float")
        await c.close()
        (ev,) = g.metering.events("v")
    assert sdk_path == PREFIX + "gemini-embedding-2:embedContent"
    mine = {orjson.dumps(b, option=orjson.OPT_SORT_KEYS) for p, _, b in f.requests if p == sdk_path}
    assert orjson.dumps(sdk_body, option=orjson.OPT_SORT_KEYS) in mine and len(f.requests) == 3  # one call per input, the SDK's body
    assert [d.embedding[0] for d in r.data] == [3.0, 11.0, 7.0]  # input order
    assert r.usage.prompt_tokens == ev.input_tokens == 2 + 3 + 5 and not ev.estimated


async def test_gemini_embedding_001_is_one_instance_per_predict_and_the_cap(fake, tmp_path):
    f, url = fake
    async with gateway(_config(url, "gemini-embedding-001"), tmp_path / "l") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("v"), max_retries=0)
        r = await c.embeddings.create(model="emb", input=["a b", "c d e"], encoding_format="float", dimensions=2)
        with pytest.raises(BadRequestError) as many:
            await c.embeddings.create(model="emb", input=["x"] * (MAX_FANOUT_CALLS + 1))
        with pytest.raises(RateLimitError):
            await c.embeddings.create(model="emb", input=["a", "quota please", "b"])
        await c.close()
        events = g.metering.events("v")
    assert [len(b["instances"]) for _, _, b in f.requests[:2]] == [1, 1]
    assert [d.embedding for d in r.data] == [[3.0, 4.0], [5.0, 6.0]] and r.usage.prompt_tokens == 3 + 4
    assert many.value.body["param"] == "input" and str(MAX_FANOUT_CALLS) in many.value.body["message"]
    assert sorted((e.status, e.http_status) for e in events) == [("error", 400), ("ok", 200), ("upstream_error", 429)]


async def test_long_lists_split_at_250_instances(fake, tmp_path):
    f, url = fake
    texts = [f"text number {i}" for i in range(VERTEX_MAX_INSTANCES + 10)]
    async with gateway(_config(url, "text-embedding-005"), tmp_path / "l") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("v"), max_retries=0)
        r = await c.embeddings.create(model="emb", input=texts, dimensions=1, encoding_format="float")
        await c.close()
        (ev,) = g.metering.events("v")
    assert sorted(len(b["instances"]) for _, _, b in f.requests) == [10, VERTEX_MAX_INSTANCES]
    assert [d.embedding[0] for d in r.data] == [float(len(t)) for t in texts] and [d.index for d in r.data] == list(
        range(len(texts)))
    assert ev.input_tokens == 4 * len(texts) and not ev.estimated


@pytest.mark.parametrize("bad", [-3, "12", True, 1e300, "absent"])
async def test_untrusted_token_counts(fake, tmp_path, bad):
    """An invalid count is no count (the gateway counts, estimated); an absurd one is bounded and flagged."""
    f, url = fake
    f.token_count = bad
    async with gateway(_config(url, "text-embedding-005"), tmp_path / "l") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("v"), max_retries=0)
        r = await c.embeddings.create(model="emb", input=["alpha beta", "gamma"], encoding_format="float")
        await c.close()
        (ev,) = g.metering.events("v")
        tc = counter_for(g.gw.deployments["emb@vertex"])
    own = tc.count_text("alpha beta") + tc.count_text("gamma")
    assert (ev.input_tokens, ev.estimated) == (own, True)
    if bad == 1e300:  # a whole number beyond any real count: not taken, and flagged as a lie
        assert ev.extra.get("usage_anomaly") is True
    assert r.usage.prompt_tokens == ev.input_tokens and len(r.data) == 2
