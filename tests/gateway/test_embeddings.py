"""POST /v1/embeddings through the real gateway and emulated deployments, the official openai SDK as
client: vectors, metering (one event, input tokens, cost, energy), budgets, limits, bad input,
fallbacks, Azure pass-through and self-hosted pricing."""

from __future__ import annotations

import base64
from decimal import Decimal

import numpy as np
import openai
import orjson
import pytest
from aiohttp import web
from openai import AsyncOpenAI

from gw_helpers import gateway, serve
from tokenomy.config import default_config
from tokenomy.tokencount.openai_bpe import load_encoding

EMB = "text-embedding-3-small"
USD_PER_TOKEN = Decimal("2E-8")  # the price map's text-embedding-3-small input price ($0.02 / Mtok)


def _cl100k(text: str) -> int:
    return len(load_encoding("cl100k_base").encode(text))


@pytest.fixture
async def fleet(data_dir):
    cfg = default_config(time_scale=0.01).model_dump(by_alias=True, exclude_none=True)
    async with gateway(cfg, data_dir) as g:
        client = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("emb"), max_retries=0)
        yield g, client
        await client.close()


async def test_default_fleet_serves_embeddings_metered(fleet):
    g, client = fleet
    texts = ["The quick brown fox jumps over the lazy dog.", "A fast brown fox leaps over a lazy dog!",
             "Quarterly revenue rose 4% on strong cloud demand."]
    raw = await client.embeddings.with_raw_response.create(model=EMB, input=texts, encoding_format="float",
                                                           user="alice")
    resp = raw.parse()
    want_tokens = sum(_cl100k(t) for t in texts)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == want_tokens
    assert [d.index for d in resp.data] == [0, 1, 2] and resp.model == EMB
    vecs = np.array([d.embedding for d in resp.data])
    assert vecs.shape == (3, 1536)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # similar sentences are closer than unrelated ones
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
    (ev,) = g.metering.events("emb")
    assert ev.id == raw.headers["x-tokenomy-request-id"] and ev.deployment == "text-embedding-3-small@openai-emulated"
    assert (ev.model, ev.input_tokens, ev.output_tokens, ev.status, ev.estimated) == (EMB, want_tokens, 0, "ok", False)
    assert ev.cost_usd == want_tokens * USD_PER_TOKEN == Decimal(raw.headers["x-tokenomy-cost-usd"])
    assert ev.energy_joules > 0 and ev.energy_joules == pytest.approx(float(raw.headers["x-tokenomy-energy-j"]), rel=1e-5)
    assert ev.extra["user"] == "alice"


async def test_shapes_dimensions_base64_and_determinism(fleet):
    g, client = fleet
    # the SDK asks for base64 by default and decodes it to floats
    a = await client.embeddings.create(model=EMB, input="hello world", dimensions=256)
    b = await client.embeddings.create(model=EMB, input="hello world", dimensions=256, encoding_format="float")
    assert len(a.data[0].embedding) == 256 and a.data[0].embedding == pytest.approx(b.data[0].embedding, abs=1e-7)
    assert np.linalg.norm(a.data[0].embedding) == pytest.approx(1.0, abs=1e-5)
    full = (await client.embeddings.create(model=EMB, input="hello world", encoding_format="float")).data[0].embedding
    head = np.array(full[:256]) / np.linalg.norm(full[:256])  # shortened = the full vector's prefix, renormalised
    assert np.allclose(head, b.data[0].embedding, atol=1e-5)
    # token ids (one input, and a batch of them)
    ids = load_encoding("cl100k_base").encode("hello world")
    one = await client.embeddings.create(model=EMB, input=ids, encoding_format="float")
    many = await client.embeddings.create(model=EMB, input=[ids, ids[:1]], encoding_format="float")
    assert one.usage.prompt_tokens == len(ids) and many.usage.prompt_tokens == len(ids) + 1
    assert len(many.data) == 2 and many.data[0].embedding == one.data[0].embedding
    # raw wire format: base64 of little-endian float32
    status, _, body = await g.post("/v1/embeddings", {"model": EMB, "input": "hi", "encoding_format": "base64",
                                                      "dimensions": 4}, g.key("raw"))
    assert status == 200
    vec = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert vec.shape == (4,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
    events = g.metering.events("emb")
    assert len(events) == 5 and all(e.output_tokens == 0 and e.status == "ok" for e in events)
    assert sum(e.input_tokens for e in events) == 3 * _cl100k("hello world") + 2 * len(ids) + 1


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"input": ""}, "input", "invalid_value"),
    ({"input": []}, "input", "invalid_value"),
    ({"input": ["a", ""]}, "input[1]", "invalid_value"),
    ({"input": ["x"] * 2049}, "input", "invalid_value"),
    ({"input": 5}, "input", "invalid_type"),
    ({"input": [1.5]}, "input[0]", "invalid_type"),
    ({"input": [[1, -2]]}, "input[0]", "invalid_type"),
    ({"input": ["a", {"t": 1}]}, "input[1]", "invalid_type"),
    ({}, "input", "missing_required_parameter"),
    ({"input": "a", "dimensions": 0}, "dimensions", "invalid_value"),
    ({"input": "a", "dimensions": 1537}, "dimensions", "invalid_value"),
    ({"input": "a", "dimensions": "8"}, "dimensions", "invalid_type"),
    ({"input": "a", "encoding_format": "hex"}, "encoding_format", "invalid_value"),
    ({"input": "a", "user": 7}, "user", "invalid_type"),
])
async def test_bad_input_is_an_openai_400(fleet, body, param, code):
    g, client = fleet
    with pytest.raises(openai.BadRequestError) as exc:
        await client.post("/embeddings", body={"model": EMB, **body}, cast_to=object)
    err = exc.value.body
    assert (exc.value.status_code, err["param"], err["code"], err["type"]) == (400, param, code,
                                                                                 "invalid_request_error")
    assert g.metering.events("emb") == []  # refused before any work: nothing metered


async def test_models_of_the_wrong_mode_are_refused(fleet):
    g, client = fleet
    with pytest.raises(openai.BadRequestError) as exc:
        await client.embeddings.create(model="llama-3-8b", input="hi")
    assert exc.value.body["code"] == "model_not_supported" and "not an embedding model" in exc.value.body["message"]
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(model=EMB, messages=[{"role": "user", "content": "hi"}])
    assert "POST /v1/embeddings" in exc.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="auto", input="hi")  # a routed alias picks chat models
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="nope", input="hi")
    assert g.metering.events("emb") == []


async def test_budget_and_rate_limits_apply(fleet):
    g, _ = fleet
    # 50 tokens of budget: a 10-token input fits, then a 200-token input does not
    key = g.key("poor", budget_usd=str(50 * USD_PER_TOKEN))
    c = AsyncOpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0)
    small = "one two three four five six seven eight nine"
    ok = await c.embeddings.create(model=EMB, input=small)
    with pytest.raises(openai.RateLimitError) as exc:
        await c.embeddings.create(model=EMB, input="word " * 200)
    assert exc.value.body["code"] == "budget_exhausted" and exc.value.body["type"] == "insufficient_quota"
    (ev,) = g.metering.events("poor")
    assert ev.input_tokens == ok.usage.prompt_tokens == _cl100k(small)
    assert Decimal(g.metering.usage("poor")["cost_usd"]) == ev.cost_usd <= 50 * USD_PER_TOKEN
    # tokens per minute count embedding inputs
    limited = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("tpm", tpm=30), max_retries=0)
    await limited.embeddings.create(model=EMB, input="word " * 20)
    with pytest.raises(openai.RateLimitError):
        await limited.embeddings.create(model=EMB, input="word " * 20)
    assert len(g.metering.events("tpm")) == 1
    await c.close()
    await limited.close()


def _emb_dep(name: str, usd_per_mtok: float, **emulate) -> dict:
    return {"name": name, "model": EMB, "mode": "embedding", "embedding_dimensions": 1536,
            "emulate": {"model": "llama-3-8b", "accelerator": "h100", "time_scale": 0.01, **emulate},
            "pricing": {"list": {"input": usd_per_mtok, "output": 0.0}}}


async def test_fallback_to_the_next_deployment_on_upstream_failure(data_dir):
    cfg = {"deployments": [_emb_dep("cheap-broken", 0.01, fault_rate_500=1.0), _emb_dep("dear-ok", 0.05)],
           "model_groups": {EMB: {"deployments": ["cheap-broken", "dear-ok"], "policy": "cost"}}}
    async with gateway(cfg, data_dir) as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("fb"), max_retries=0)
        raw = await c.embeddings.with_raw_response.create(model=EMB, input="fall back please")
        await c.close()
        assert raw.headers["x-tokenomy-deployment"] == "dear-ok"
        (ev,) = g.metering.events("fb")
        assert ev.deployment == "dear-ok" and ev.status == "ok"
        assert [a["deployment"] for a in ev.extra["attempts"]][0] == "cheap-broken"
        assert {a["error"] for a in ev.extra["attempts"]} == {"http_5xx"}
        assert ev.cost_usd == Decimal(ev.input_tokens) * Decimal("0.05") / 1_000_000


async def test_self_hosted_embedding_deployment_is_priced_by_the_cost_model(data_dir):
    from tokenomy.catalog import load_catalog
    from tokenomy.economics import self_hosted_unit_cost

    dep = _emb_dep("bge@h100", 0.0)
    dep["pricing"] = {"self_hosted": {"model": "llama-3-8b", "accelerator": "h100", "count": 1, "site": "us-va"}}
    cfg = {"deployments": [dep], "model_groups": {EMB: {"deployments": ["bge@h100"]}}}
    cat = load_catalog()
    uc = self_hosted_unit_cost(cat.model("llama-3-8b"), cat.accelerator("h100"), cat.site("us-va"))
    async with gateway(cfg, data_dir) as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("sh"), max_retries=0)
        r = await c.embeddings.create(model=EMB, input=["prefill only work", "costs input tokens"])
        await c.close()
        (ev,) = g.metering.events("sh")
    # prefill-only work: the cost model's input price (its prefill throughput), no output tokens
    want = Decimal(repr(uc.usd_per_mtok_input)) * r.usage.prompt_tokens / 1_000_000
    assert ev.output_tokens == 0 and ev.cost_usd == want.quantize(Decimal("1e-12")) > 0
    assert ev.energy_joules > 0


@pytest.fixture
async def azure_embeddings():
    seen: list[tuple[str, dict, dict]] = []

    async def embeddings(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        seen.append((request.path_qs, dict(request.headers), body))
        if request.headers.get("api-key") != "az-key":
            return web.json_response({"error": {"code": "401", "message": "Access denied"}}, status=401)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.6, 0.8]} for i in range(len(inputs))]
        return web.json_response({"object": "list", "data": data, "model": "text-embedding-3-small",
                                  "usage": {"prompt_tokens": 7, "total_tokens": 7}})

    app = web.Application()
    app.router.add_post("/openai/deployments/{dep}/embeddings", embeddings)
    async with serve(app) as url:
        yield url, seen


async def test_azure_embeddings_pass_through(azure_embeddings, data_dir, monkeypatch):
    url, seen = azure_embeddings
    monkeypatch.setenv("AZ_KEY", "az-key")
    dep = {"name": "emb@azure", "provider": "azure", "base_url": url, "api_key_env": "AZ_KEY", "model": "my-emb",
           "mode": "embedding", "pricing": {"price_map": "azure/text-embedding-3-small"}}
    async with gateway({"deployments": [dep], "model_groups": {EMB: {"deployments": ["emb@azure"]}}}, data_dir) as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("az"), max_retries=0)
        r = await c.embeddings.create(model=EMB, input=["a b c", "d"], encoding_format="float", dimensions=2)
        await c.close()
        (ev,) = g.metering.events("az")
    assert [d.embedding for d in r.data] == [[0.6, 0.8], [0.6, 0.8]]
    path, headers, body = seen[0]
    assert path == "/openai/deployments/my-emb/embeddings?api-version=2024-10-21" and headers["api-key"] == "az-key"
    assert body == {"model": "my-emb", "input": ["a b c", "d"], "encoding_format": "float", "dimensions": 2}
    # the upstream's count is billed ($0.022 / Mtok on Azure, LiteLLM's price map)
    assert (ev.input_tokens, ev.output_tokens) == (7, 0) and ev.cost_usd == 7 * Decimal("2.2E-8")


def test_a_group_mixing_modes_is_a_config_error():
    from tokenomy.config import parse_config
    from tokenomy.errors import ConfigError

    chat = {"name": "c", "base_url": "http://h/v1", "pricing": {"list": {"input": 1, "output": 1}}}
    emb = {**chat, "name": "e", "mode": "embedding"}
    with pytest.raises(ConfigError, match="mixes chat and embedding"):
        parse_config({"deployments": [chat, emb], "model_groups": {"g": {"deployments": ["c", "e"]}}}, "<t>")
    with pytest.raises(ConfigError, match="serves embeddings"):
        parse_config({"deployments": [chat, emb], "routing_groups": {"auto": {"candidates": ["c", "e"], "strong_share": 0.3}}}, "<t>")
