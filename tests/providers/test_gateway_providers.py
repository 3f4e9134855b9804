"""The gateway in front of an Anthropic deployment (local Messages API fake), driven with the
openai SDK: translation both ways, streaming, metering, fallbacks on provider errors."""

from __future__ import annotations

from decimal import Decimal

import pytest
from openai import APIStatusError, AsyncOpenAI

from tests.gateway.conftest import Stub, gateway, stubs

from .fakes import FakeAnthropic, anthropic_message, anthropic_stream, running

USAGE = {"input_tokens": 10, "output_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 6}


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "ledger"


@pytest.fixture
async def fake(monkeypatch):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
    async with running(FakeAnthropic()) as f:
        yield f


def _config(fake_url: str, backup_url: str | None = None) -> dict:
    deps = [{"name": "claude@anthropic", "provider": "anthropic", "base_url": fake_url,
             "api_key_env": "TEST_ANTHROPIC_KEY", "model": "claude-sonnet-4-6",
             "pricing": {"price_map": "claude-sonnet-4-6"}}]
    group = ["claude@anthropic"]
    if backup_url:
        deps.append({"name": "backup", "base_url": backup_url, "model": "backup",
                     "pricing": {"list": {"input": 100.0, "output": 200.0}}})  # dearer: tried second
        group.append("backup")
    return {"deployments": deps, "model_groups": {"claude": {"deployments": group, "policy": "cost"}},
            "retry": {"max_attempts": 2, "backoff_base_s": 0.0}, "timeouts": {"connect_s": 1, "first_byte_s": 2, "total_s": 4}}


async def test_unary_through_the_gateway_metered(fake, data_dir):
    fake.script = [(200, anthropic_message([{"type": "text", "text": "Paris."}], usage=USAGE, model="claude-sonnet-4-6"))]
    async with gateway(_config(fake.url), data_dir) as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("t"), max_retries=0)
        raw = await c.chat.completions.with_raw_response.create(
            model="claude", messages=[{"role": "system", "content": "terse"}, {"role": "user", "content": "Capital of France?"}],
            max_tokens=50, seed=3)
        await c.close()
        r = raw.parse()
        assert r.choices[0].message.content == "Paris." and r.choices[0].finish_reason == "stop"
        assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.prompt_tokens_details.cached_tokens) == (16, 4, 6)
        assert "seed" in raw.headers["x-tokenomy-warning"]
        (ev,) = g.metering.events("t")
        assert (ev.input_tokens, ev.cached_input_tokens, ev.output_tokens) == (16, 6, 4)
        assert ev.deployment == "claude@anthropic" and not ev.estimated
        assert ev.cost_usd == Decimal(raw.headers["x-tokenomy-cost-usd"]) > 0
    hdr, body = fake.requests[0]
    assert hdr["x-api-key"] == "sk-ant-test" and body["system"] == [{"type": "text", "text": "terse"}]
    assert body["max_tokens"] == 50 and body["model"] == "claude-sonnet-4-6"


async def test_stream_through_the_gateway(fake, data_dir):
    fake.script = [(200, anthropic_stream(["Hel", "lo", "!"], usage_in={"input_tokens": 9}, output_tokens=3))]
    async with gateway(_config(fake.url), data_dir) as g:
        c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("t"), max_retries=0)
        stream = await c.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True})
        text, usage, finish = "", None, None
        async for ch in stream:
            if ch.choices:
                text += ch.choices[0].delta.content or ""
                finish = ch.choices[0].finish_reason or finish
            if ch.usage:
                usage = ch.usage
        await c.close()
        assert text == "Hello!" and finish == "stop"
        assert (usage.prompt_tokens, usage.completion_tokens) == (9, 3)
        (ev,) = g.metering.events("t")
        assert (ev.input_tokens, ev.output_tokens, ev.status) == (9, 3, "ok") and not ev.estimated
    assert fake.requests[0][1]["stream"] is True


@pytest.mark.parametrize("stream", [False, True])
async def test_overloaded_falls_back_to_the_next_deployment(fake, data_dir, stream):
    fake.script = [(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]
    async with stubs(Stub(out_tokens=5)) as (backup,):
        async with gateway(_config(fake.url, backup.base_url), data_dir) as g:
            c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("t"), max_retries=0)
            if stream:
                s = await c.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}],
                                                    stream=True)
                text = "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])
            else:
                text = (await c.chat.completions.create(model="claude",
                                                        messages=[{"role": "user", "content": "hi"}])).choices[0].message.content
            await c.close()
            assert text == " hello" * 5
            (ev,) = g.metering.events("t")
            assert ev.deployment == "backup"
            assert [a["deployment"] for a in ev.extra["attempts"]] == ["claude@anthropic"]
            assert ev.extra["attempts"][0]["error"] == "http_5xx"
    assert len(fake.requests) == 1 and backup.calls == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_context_too_long_is_the_callers_400_without_fallback(fake, data_dir, stream):
    fake.script = [(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                       "message": "prompt is too long: 250000 tokens > 200000 maximum"}})]
    async with stubs(Stub()) as (backup,):
        async with gateway(_config(fake.url, backup.base_url), data_dir) as g:
            c = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("t"), max_retries=0)
            with pytest.raises(APIStatusError) as ei:
                await c.chat.completions.create(model="claude", messages=[{"role": "user", "content": "long"}],
                                                stream=stream)
            await c.close()
            assert ei.value.status_code == 400
            assert ei.value.body["code"] == "context_length_exceeded"
            assert "prompt is too long" in ei.value.body["message"]
            (ev,) = g.metering.events("t")
            assert ev.output_tokens == 0 and ev.cost_usd == 0
    assert backup.calls == 0


async def test_untranslatable_request_is_rejected_before_sending(fake, data_dir):
    async with gateway(_config(fake.url), data_dir) as g:
        status, _, body = await g.post("/v1/chat/completions", {"model": "claude", "n": 3,
                                                                 "messages": [{"role": "user", "content": "x"}]},
                                       g.key("t"))
    assert status == 400 and body["error"]["param"] == "n" and fake.requests == []
