"""A translated provider through the gateway's own pipeline (admit -> dispatch -> settle): the
dispatcher builds the upstream request and reads the answer through the deployment's adapter;
the client sees OpenAI's shape (checked with the official openai SDK); usage is bounded and
metered; provider errors are classified for fallbacks and retries like an OpenAI upstream's."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from tests.gateway.conftest import Stub, gateway, list_dep, stubs

from .fakes import FakeAnthropic, anthropic_message, anthropic_stream, running


@pytest.fixture
async def fake(monkeypatch):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
    async with running(FakeAnthropic()) as f:
        yield f


def _cfg(fake_url: str, *extra_deps: dict) -> dict:
    claude = {"name": "claude", "provider": "anthropic", "base_url": fake_url, "api_key_env": "TEST_ANTHROPIC_KEY",
              "model": "claude-sonnet-4-6", "pricing": {"list": {"input": 3.0, "output": 15.0}}}
    return {"deployments": [claude, *extra_deps],
            "model_groups": {"m": {"deployments": ["claude", *(d["name"] for d in extra_deps)]}},
            "timeouts": {"connect_s": 1.0, "first_byte_s": 2.0, "total_s": 5.0}}


async def test_unary_and_stream_through_the_anthropic_adapter(fake, tmp_path):
    async with gateway(_cfg(fake.url), tmp_path / "ledger") as g:
        client = openai.AsyncOpenAI(api_key=g.key(), base_url=g.url + "/v1", max_retries=0)
        fake.script = [(200, anthropic_message([{"type": "text", "text": "Hello there"}],
                                               usage={"input_tokens": 12, "output_tokens": 5}))]
        r = await client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
        c = r.parse()
        assert c.choices[0].message.content == "Hello there" and c.usage.completion_tokens == 5
        assert r.headers["x-tokenomy-deployment"] == "claude"
        headers, body = fake.requests[-1]
        assert headers["x-api-key"] == "sk-ant-test" and body["max_tokens"] == 50
        ev = max(g.metering.events(), key=lambda e: e.ts)
        assert (ev.input_tokens, ev.output_tokens, ev.status) == (12, 5, "ok")
        assert ev.cost_usd == (Decimal(12) * 3 + Decimal(5) * 15) / 1_000_000

        fake.script = [(200, anthropic_stream(["Hel", "lo"], output_tokens=2))]
        stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                      max_tokens=50, stream=True,
                                                      stream_options={"include_usage": True})
        text, usage = "", None
        async for ch in stream:
            if ch.choices:
                text += ch.choices[0].delta.content or ""
            if ch.usage is not None:
                usage = ch.usage
        assert text == "Hello" and usage is not None and usage.completion_tokens == 2
        ev = max(g.metering.events(), key=lambda e: e.ts)
        assert (ev.input_tokens, ev.output_tokens, ev.status, ev.estimated) == (20, 2, "ok", False)


async def test_an_overloaded_provider_falls_back_and_its_lie_is_bounded(fake, tmp_path):
    async with stubs(Stub(out_tokens=3)) as (backup,):
        backup_dep = list_dep("backup", backup.base_url, 30.0, 30.0)
        async with gateway(_cfg(fake.url, backup_dep), tmp_path / "ledger") as g:
            key = g.key()
            fake.script = [(529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})]
            g.gw.retry_policy.max_attempts = 2  # claude fails, then the fallback
            st, h, body = await g.post("/v1/chat/completions",
                                       {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9},
                                       key)
            assert st == 200 and h["x-tokenomy-deployment"] == "backup"
            ev = max(g.metering.events(), key=lambda e: e.ts)
            assert [(a["deployment"], a["error"]) for a in ev.extra["attempts"]] == [("claude", "http_5xx")]
            # a lying usage through the adapter: bounded like any other upstream's
            fake.script = [(200, anthropic_message([{"type": "text", "text": "ok"}],
                                                   usage={"input_tokens": 10**12, "output_tokens": 10**12}))]
            st, h, body = await g.post("/v1/chat/completions",
                                       {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9},
                                       key)
            assert st == 200 and h["x-tokenomy-deployment"] == "claude"
            ev = max(g.metering.events(), key=lambda e: e.ts)
            assert ev.output_tokens == 9 + 16 and ev.extra["usage_anomaly"] is True
            assert body["usage"]["completion_tokens"] == 9 + 16  # the client is told what is billed
