"""Embeddings on Bedrock deployments: POST /v1/embeddings as InvokeModel (Titan Text Embeddings, Cohere
Embed), SigV4-signed. The fake answers InvokeModel as Bedrock does and is also called by boto3 itself
(same path, signed the same way, its answer parsed), so it cannot drift from the real wire format
unnoticed; the client is the official openai SDK through the real gateway."""

from __future__ import annotations

from decimal import Decimal

import boto3
import orjson
import pytest
from aiohttp import web
from botocore.config import Config
from openai import AsyncOpenAI, BadRequestError

from tests.gateway.conftest import gateway, serve

TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"


class FakeBedrockEmbed:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        self.app = web.Application()
        self.app.router.add_post("/model/{model_id}/invoke", self.invoke)

    async def invoke(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.requests.append((request.raw_path, dict(request.headers), body))
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/") or "/bedrock/aws4_request" not in auth:
            return web.json_response({"message": "The security token included in the request is invalid."}, status=403,
                                     headers={"x-amzn-ErrorType": "UnrecognizedClientException:http://internal.amazon.com/"})
        model = request.match_info["model_id"]
        if model == TITAN:
            assert set(body) <= {"inputText", "dimensions", "normalize", "embeddingTypes"}, body
            n = body.get("dimensions", 1024)
            assert n in (256, 512, 1024)
            words = len(body["inputText"].split())
            return web.json_response({"embedding": [0.5] * n, "inputTextTokenCount": words + 1})
        if model == COHERE:
            if "output_dimension" in body:  # Embed v3 has one size (v4 takes output_dimension)
                return web.json_response({"message": "extraneous key [output_dimension] is not permitted"}, status=400,
                                         headers={"x-amzn-ErrorType": "ValidationException:http://internal.amazon.com/"})
            assert set(body) <= {"texts", "input_type", "truncate", "embedding_types"} and body["input_type"], body
            vecs = [[float(len(t)), 1.0] for t in body["texts"]]
            return web.json_response({"id": "e1", "response_type": "embeddings_by_type", "texts": body["texts"],
                                      "embeddings": {"float": vecs}},
                                     headers={"X-Amzn-Bedrock-Input-Token-Count": str(7 * len(vecs))})
        return web.json_response({"message": f"unknown model {model}"}, status=404,
                                 headers={"x-amzn-ErrorType": "ResourceNotFoundException:http://internal.amazon.com/"})


@pytest.fixture
async def fake(monkeypatch):
    for k, val in {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "tok",
                   "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}.items():
        monkeypatch.setenv(k, val)
    f = FakeBedrockEmbed()
    async with serve(f.app) as url:
        yield f, url


async def test_boto3_speaks_the_same_wire_format(fake):
    import asyncio

    f, url = fake
    client = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=url,
                          config=Config(retries={"max_attempts": 1}))
    r = await asyncio.to_thread(client.invoke_model, modelId=COHERE, contentType="application/json",
                                body=orjson.dumps({"texts": ["ab"], "input_type": "search_document",
                                                   "embedding_types": ["float"]}))
    assert orjson.loads(r["body"].read())["embeddings"]["float"] == [[2.0, 1.0]]
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "7"
    assert f.requests[0][0] == "/model/cohere.embed-english-v3/invoke"


async def test_gateway_embeddings_on_bedrock_titan_and_cohere(fake, tmp_path):
    f, url = fake
    deps = [{"name": "titan", "provider": "bedrock", "base_url": url, "region": "us-east-1", "model": TITAN,
             "mode": "embedding", "embedding_dimensions": 1024, "pricing": {"price_map": TITAN}},
            {"name": "cohere", "provider": "bedrock", "base_url": url, "region": "us-east-1", "model": COHERE,
             "mode": "embedding", "pricing": {"price_map": COHERE}}]
    async with gateway({"deployments": deps}, tmp_path / "ledger") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("br"), max_retries=0)
        t = await c.embeddings.create(model="titan", input="three words here", dimensions=256)
        co = await c.embeddings.create(model="cohere", input=["ab", "abcd"], encoding_format="float")
        with pytest.raises(BadRequestError) as many:
            await c.embeddings.create(model="titan", input=["a", "b"])
        with pytest.raises(BadRequestError) as dims:
            await c.embeddings.create(model="cohere", input="x", dimensions=2)
        await c.close()
        events = {e.deployment + ":" + e.status: e for e in g.metering.events("br")}
    assert len(t.data[0].embedding) == 256 and t.data[0].embedding[0] == pytest.approx(0.5)
    assert t.usage.prompt_tokens == 4  # Titan's inputTextTokenCount
    assert [d.embedding for d in co.data] == [[2.0, 1.0], [4.0, 1.0]] and co.usage.prompt_tokens == 14
    assert many.value.body["param"] == "input" and "one input" in many.value.body["message"]
    assert "output_dimension" in dims.value.body["message"]  # Cohere v3's own 400, passed back
    # the adapter's InvokeModel requests: SigV4-signed, the models' own bodies, ARN-safe paths
    path, headers, body = f.requests[0]
    assert path == "/model/amazon.titan-embed-text-v2%3A0/invoke" and headers["Authorization"].startswith("AWS4-HMAC")
    assert body == {"inputText": "three words here", "normalize": True, "dimensions": 256}
    assert f.requests[1][2] == {"texts": ["ab", "abcd"], "input_type": "search_document", "embedding_types": ["float"]}
    ti, ce = events["titan:ok"], events["cohere:ok"]
    assert (ti.input_tokens, ti.output_tokens, ti.estimated) == (4, 0, False)
    assert ti.cost_usd == 4 * Decimal("2E-8") and ce.cost_usd == 14 * Decimal("1E-7")
    assert events["cohere:error"].http_status == 400
