"""/v1/messages in front of a `provider: anthropic` deployment (the local Messages API fake of
tests/providers): Anthropic in, Anthropic out, the cache usage categories carried through and
metered."""

from __future__ import annotations

from decimal import Decimal

import pytest
from anthropic import AsyncAnthropic

from tests.gateway.conftest import gateway
from tests.providers.fakes import FakeAnthropic, anthropic_message, anthropic_stream, running

USAGE = {"input_tokens": 10, "output_tokens": 4, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 6}


@pytest.fixture
async def fake(monkeypatch):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
    async with running(FakeAnthropic()) as f:
        yield f


def _config(url: str) -> dict:
    return {"deployments": [{"name": "claude@anthropic", "provider": "anthropic", "base_url": url,
                             "api_key_env": "TEST_ANTHROPIC_KEY", "model": "claude-sonnet-4-6",
                             "pricing": {"price_map": "claude-sonnet-4-6"}}],
            "model_groups": {"claude": {"deployments": ["claude@anthropic"]}}}


async def test_unary_cache_usage_through(fake, tmp_path):
    fake.script = [(200, anthropic_message([{"type": "text", "text": "Paris."}], usage=USAGE))]
    async with gateway(_config(fake.url), tmp_path / "l") as g:
        c = AsyncAnthropic(base_url=g.url, api_key=g.key("t"), max_retries=0)
        m = await c.messages.create(model="claude", max_tokens=50, system="terse",
                                    messages=[{"role": "user", "content": "Capital of France?"}])
        await c.close()
        (ev,) = g.metering.events("t")
    assert m.content[0].text == "Paris." and m.stop_reason == "end_turn" and m.model == "claude"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (10, 4)
    assert (m.usage.cache_read_input_tokens, m.usage.cache_creation_input_tokens) == (6, 20)
    (headers, sent), = fake.requests
    assert headers["x-api-key"] == "sk-ant-test" and sent["system"] == "terse"  # relayed as the client sent it
    assert sent["model"] == "claude-sonnet-4-6" and sent["max_tokens"] == 50
    assert (ev.input_tokens, ev.cached_input_tokens, ev.cache_write_tokens, ev.output_tokens) == (36, 6, 20, 4)
    # claude-sonnet-4-6 in the price map (LiteLLM): $3 input, $0.30 cache read, $3.75 cache write, $15 output /Mtok
    assert ev.cost_usd == (10 * Decimal("3") + 6 * Decimal("0.3") + 20 * Decimal("3.75") + 4 * Decimal("15")) / 10**6


async def test_stream_tool_use_through(fake, tmp_path):
    fake.script = [(200, anthropic_stream(["Let me check."], tool=("toolu_9", "get_weather", ['{"city":', ' "Paris"}']),
                                          usage_in={"input_tokens": 30, "cache_read_input_tokens": 5},
                                          output_tokens=12, stop_reason="tool_use"))]
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    async with gateway(_config(fake.url), tmp_path / "l") as g:
        c = AsyncAnthropic(base_url=g.url, api_key=g.key("t"), max_retries=0)
        async with c.messages.stream(model="claude", max_tokens=50, tools=tools,
                                     messages=[{"role": "user", "content": "Weather in Paris?"}]) as s:
            m = await s.get_final_message()
        await c.close()
        (ev,) = g.metering.events("t")
    assert [b.type for b in m.content] == ["text", "tool_use"]
    assert m.content[0].text == "Let me check." and m.content[1].input == {"city": "Paris"}
    assert m.content[1].id == "toolu_9" and m.stop_reason == "tool_use"
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (30, 5, 12)
    assert (ev.input_tokens, ev.cached_input_tokens, ev.output_tokens) == (35, 5, 12)
