"""The official openai SDK against the gateway in front of in-process emulated deployments."""

from __future__ import annotations

from decimal import Decimal

import pytest
from openai import AsyncOpenAI, APIStatusError

from gw_helpers import gateway
from tokenomy.config import default_config


def _fleet() -> dict:
    cfg = default_config(time_scale=0.01).model_dump(by_alias=True, exclude_none=True)
    return cfg


@pytest.fixture
async def fleet(data_dir):
    async with gateway(_fleet(), data_dir) as g:
        key = g.key("sdk")
        client = AsyncOpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0)
        yield g, client
        await client.close()


async def test_chat_non_stream_and_headers(fleet):
    g, client = fleet
    raw = await client.chat.completions.with_raw_response.create(
        model="llama-3-8b", messages=[{"role": "user", "content": "Hello there, how are you?"}], max_tokens=12)
    resp = raw.parse()
    assert resp.choices[0].message.content and resp.usage.completion_tokens == 12
    dep = raw.headers["x-tokenomy-deployment"]
    assert dep in ("llama-3-8b@l4", "llama-3-8b@h100")
    ev = g.metering.events("sdk")[0]
    assert ev.id == raw.headers["x-tokenomy-request-id"]
    assert (ev.input_tokens, ev.output_tokens) == (resp.usage.prompt_tokens, 12)
    assert ev.cost_usd == Decimal(raw.headers["x-tokenomy-cost-usd"]) > 0
    # self-hosted: energy reported by the emulator (its perf-model joules)
    assert ev.energy_joules == pytest.approx(float(raw.headers["x-tokenomy-energy-j"]), rel=1e-5)
    assert ev.energy_joules > 0 and not ev.estimated


async def test_chat_stream_with_usage(fleet):
    g, client = fleet
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Write a haiku"}], max_tokens=15, stream=True,
        stream_options={"include_usage": True})
    text, usage, tail = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
            tail = chunk.model_extra.get("x_tokenomy")
    assert text and usage.completion_tokens == 15
    ev = g.metering.events("sdk")[0]
    assert tail["request_id"] == ev.id and Decimal(tail["cost_usd"]) == ev.cost_usd
    assert ev.deployment == "gpt-4o-mini@openai-emulated"
    # priced from the real price map: $0.15 / $0.60 per Mtok
    assert ev.cost_usd == (Decimal(ev.input_tokens) * Decimal("0.15") + Decimal(15) * Decimal("0.6")) / 1_000_000
    assert ev.ttft_ms is not None and ev.ttft_ms > 0


async def test_plain_stream_and_completions_and_models(fleet):
    g, client = fleet
    stream = await client.chat.completions.create(
        model="llama-3-70b", messages=[{"role": "user", "content": "Hi"}], max_tokens=5, stream=True)
    pieces = [c.choices[0].delta.content async for c in stream]  # every chunk has a choice
    assert len([p for p in pieces if p]) == 5
    comp = await client.completions.create(model="llama-3-8b", prompt="Once upon a time", max_tokens=7)
    assert comp.usage.completion_tokens == 7 and comp.choices[0].text
    cstream = await client.completions.create(model="llama-3-8b", prompt="Once", max_tokens=6, stream=True)
    assert len([c.choices[0].text async for c in cstream if c.choices and c.choices[0].text]) == 6
    models = await client.models.list()
    assert {m.id for m in models.data} >= {"llama-3-8b", "llama-3-70b", "gpt-4o-mini"}
    assert g.metering.usage("sdk")["requests"] == 3
    assert g.metering.usage("sdk", since=0)["output_tokens"] == 5 + 7 + 6
    with pytest.raises(APIStatusError) as exc:
        await client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 404 and "gpt-9" in str(exc.value)


async def test_emulator_faults_fall_back(data_dir):
    cfg = {"deployments": [
        {"name": "flaky", "model": "llama-3-8b", "emulate": {"time_scale": 0.01}, "headers": {"x-emulator-fault": "500"},
         "pricing": {"list": {"input": 0.01, "output": 0.01}}},
        {"name": "steady", "model": "llama-3-8b", "emulate": {"time_scale": 0.01},
         "pricing": {"list": {"input": 1, "output": 1}}}],
        "model_groups": {"m": {"deployments": ["flaky", "steady"]}}}
    async with gateway(cfg, data_dir) as g:
        client = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("f"), max_retries=0)
        r = await client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "x"}], max_tokens=3)
        assert r.headers["x-tokenomy-deployment"] == "steady"
        ev = g.metering.events("f")[0]
        assert ev.extra["attempts"][0]["deployment"] == "flaky" and ev.output_tokens == 3
        await client.close()
