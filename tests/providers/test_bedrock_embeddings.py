"""Embeddings on Bedrock deployments: POST /v1/embeddings as InvokeModel (Titan Text Embeddings, Cohere
Embed), SigV4-signed. The fake answers InvokeModel as Bedrock does and is also called by boto3 itself
(same path, signed the same way, its answer parsed), so it cannot drift from the real wire format
unnoticed; the client is the official openai SDK through the real gateway."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import boto3
import orjson
import pytest
from aiohttp import web
from botocore.config import Config
from openai import AsyncOpenAI, BadRequestError, RateLimitError

from tests.gateway.conftest import gateway, serve
from tokenomy.gateway.providers.base import FANOUT_CONCURRENCY, MAX_FANOUT_CALLS

TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"


class FakeBedrockEmbed:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        self.in_flight = self.max_in_flight = 0
        self.gate: asyncio.Event | None = None  # set: each call waits until `gate_at` calls are in flight
        self.gate_at = 0
        self.flaked: set[str] = set()  # "flaky..." inputs that already failed once (500, then fine)
        self.app = web.Application()
        self.app.router.add_post("/model/{model_id}/invoke", self.invoke)

    async def invoke(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                if self.in_flight >= self.gate_at:
                    self.gate.set()
                await asyncio.wait_for(self.gate.wait(), 10)
            return await self._invoke(request)
        finally:
            self.in_flight -= 1

    async def _invoke(self, request: web.Request) -> web.Response:
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
            text = body["inputText"]
            if text.startswith("flaky") and text not in self.flaked:
                self.flaked.add(text)
                return web.json_response({"message": "internal failure"}, status=500,
                                         headers={"x-amzn-ErrorType": "InternalServerException:http://internal.amazon.com/"})
            if text.startswith("throttle"):
                return web.json_response({"message": "Too many requests, please wait before trying again."},
                                         status=429, headers={"x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/"})
            count: object = words + 1 if (words := len(text.split())) and not text.startswith("lie") else 10**9
            return web.json_response({"embedding": [float(len(text))] + [0.5] * (n - 1), "inputTextTokenCount": count})
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
        with pytest.raises(BadRequestError) as dims:
            await c.embeddings.create(model="cohere", input="x", dimensions=2)
        await c.close()
        events = {e.deployment + ":" + e.status: e for e in g.metering.events("br")}
    assert len(t.data[0].embedding) == 256 and t.data[0].embedding[:2] == pytest.approx([16.0, 0.5])
    assert t.usage.prompt_tokens == 4  # Titan's inputTextTokenCount
    assert [d.embedding for d in co.data] == [[2.0, 1.0], [4.0, 1.0]] and co.usage.prompt_tokens == 14
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


def _titan(url: str, **top) -> dict:
    return {"deployments": [{"name": "titan", "provider": "bedrock", "base_url": url, "region": "us-east-1", "model": TITAN,
                             "mode": "embedding", "embedding_dimensions": 1024, "pricing": {"price_map": TITAN}}], **top}


async def test_titan_list_is_one_call_per_input_in_order_bounded_one_event(fake, tmp_path):
    f, url = fake
    texts = [("w " * (i + 1)).strip() for i in range(10)]  # input i: i + 1 words, 2i + 1 characters
    f.gate, f.gate_at = asyncio.Event(), FANOUT_CONCURRENCY  # calls wait until 4 are in flight at once
    async with gateway(_titan(url), tmp_path / "ledger") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("br"), max_retries=0)
        r = await c.embeddings.create(model="titan", input=texts, dimensions=256)  # the SDK's default: base64
        await c.close()
        (ev,) = g.metering.events("br")
    assert [d.index for d in r.data] == list(range(10))
    assert [d.embedding[0] for d in r.data] == [float(2 * i + 1) for i in range(10)]  # input order, not finish order
    assert all(len(d.embedding) == 256 for d in r.data)
    # one InvokeModel per input, each its own signed Titan body; never more than 4 in flight
    assert sorted(b["inputText"] for _, _, b in f.requests) == sorted(texts)
    assert all(set(b) == {"inputText", "normalize", "dimensions"} for _, _, b in f.requests)
    assert len({h["Authorization"] for _, h, _ in f.requests}) == 10  # each body signed on its own
    assert f.max_in_flight == FANOUT_CONCURRENCY
    want = sum(i + 2 for i in range(10))  # inputTextTokenCount: words + 1, summed
    assert r.usage.prompt_tokens == want
    assert (ev.status, ev.input_tokens, ev.output_tokens, ev.estimated) == ("ok", want, 0, False)
    assert ev.cost_usd == want * Decimal("2E-8")


async def test_titan_list_one_failing_call_fails_the_request_and_the_cap(fake, tmp_path):
    f, url = fake
    async with gateway(_titan(url, retry={"max_attempts": 1}), tmp_path / "ledger") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("br"), max_retries=0)
        with pytest.raises(RateLimitError) as throttled:
            await c.embeddings.create(model="titan", input=["a b", "throttle me", "c d"])
        n_sent = len(f.requests)
        f.requests.clear()
        with pytest.raises(BadRequestError) as many:
            await c.embeddings.create(model="titan", input=["x"] * (MAX_FANOUT_CALLS + 1))
        ok = await c.embeddings.create(model="titan", input=["x"] * MAX_FANOUT_CALLS, encoding_format="float")
        await c.close()
        events = g.metering.events("br")
    assert "Too many requests" in throttled.value.message  # Bedrock's ThrottlingException, as OpenAI's 429
    assert 1 <= n_sent <= 3  # one attempt (no retry configured): at most the three calls
    assert many.value.status_code == 400 and many.value.body["param"] == "input"
    assert str(MAX_FANOUT_CALLS) in many.value.body["message"] and "one input per call" in many.value.body["message"]
    assert len(ok.data) == MAX_FANOUT_CALLS and len(f.requests) == MAX_FANOUT_CALLS  # the refused one sent nothing
    # each client request one event; the refused list is an error event that costs nothing
    assert sorted((e.status, e.http_status, e.cost_usd > 0) for e in events) == [
        ("error", 400, False), ("ok", 200, True), ("upstream_error", 429, False)]


async def test_titan_list_with_a_lying_token_count_is_bounded(fake, tmp_path):
    f, url = fake
    async with gateway(_titan(url), tmp_path / "ledger") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("br"), max_retries=0)
        r = await c.embeddings.create(model="titan", input=["one two", "lie about it"], encoding_format="float")
        await c.close()
        (ev,) = g.metering.events("br")
    # 3 + 10**9 summed: far above the gateway's own count, so billed at the bound, flagged
    assert ev.extra.get("usage_anomaly") is True and ev.input_tokens < 200
    assert len(r.data) == 2 and r.usage.prompt_tokens == ev.input_tokens  # the client sees the billed figure


async def test_cohere_list_longer_than_96_is_split(fake, tmp_path):
    f, url = fake
    dep = {"name": "cohere", "provider": "bedrock", "base_url": url, "region": "us-east-1", "model": COHERE,
           "mode": "embedding", "pricing": {"price_map": COHERE}}
    texts = [" ".join(["alpha"] * (2 + i % 7)) for i in range(100)]  # own count near the 7 tokens billed
    async with gateway({"deployments": [dep]}, tmp_path / "ledger") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("br"), max_retries=0)
        r = await c.embeddings.create(model="cohere", input=texts, encoding_format="float")
        await c.close()
        (ev,) = g.metering.events("br")
    assert [len(b["texts"]) for _, _, b in sorted(f.requests, key=lambda q: -len(q[2]["texts"]))] == [96, 4]
    assert [d.embedding[0] for d in r.data] == [float(len(t)) for t in texts]
    assert r.usage.prompt_tokens == ev.input_tokens == 7 * 100 and not ev.estimated


async def test_a_fanned_out_list_retried_after_one_part_failed_is_billed_once(fake, tmp_path):
    """One part's 500 fails the attempt (its sibling parts' answers are dropped, none billed); the
    retry resends every part and only its merged usage is metered: each input counted once."""
    f, url = fake
    cfg = {**_titan(url), "retry": {"max_attempts": 2, "backoff_base_s": 0.0}}
    texts = ["one two", "flaky three four", "five"]
    async with gateway(cfg, tmp_path / "ledger") as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("br"), max_retries=0)
        r = await c.embeddings.create(model="titan", input=texts, encoding_format="float")
        await c.close()
        (ev,) = g.metering.events("br")
        price = g.gw.deployments["titan"].price.cost_usd(9, 0, 0, 0).quantize(Decimal("1e-12"))
    assert [d.embedding[0] for d in r.data] == [float(len(t)) for t in texts]
    sent = [b["inputText"] for _, _, b in f.requests]
    assert sent.count("flaky three four") == 2 and len(sent) >= 4  # the whole list went again
    assert (ev.input_tokens, ev.estimated, ev.status) == (3 + 4 + 2, False, "ok")  # words + 1 each, once
    assert r.usage.prompt_tokens == 9 and ev.cost_usd == price > 0
    assert [a["error"] for a in ev.extra["attempts"]] == ["http_5xx"]
