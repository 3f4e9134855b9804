"""/v1/messages in front of a `provider: anthropic` deployment is relayed natively: the client's
Messages body goes upstream as it was sent (model swapped), and the answer / stream comes back as
Anthropic sent it (thinking blocks, signatures, cache usage), while the gateway meters it exactly as
on the translated path (one event, budgets reserved and settled, untrusted usage bounded). The
local Messages API fake checks each request against the anthropic SDK's own request types; the
client is the anthropic SDK through the real gateway."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import pytest
from anthropic import AsyncAnthropic

from tests.gateway.conftest import Stub, gateway, stubs
from tests.providers.fakes import FakeAnthropic, anthropic_message, anthropic_stream, running

USAGE = {"input_tokens": 10, "output_tokens": 4, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 6}
THINKING = {"type": "thinking", "thinking": "The capital of France is Paris.", "signature": "sig-abc=="}
CACHED_SYSTEM = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]


@pytest.fixture
async def fake(monkeypatch):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
    async with running(FakeAnthropic()) as f:
        yield f


def _config(url: str, backup_url: str | None = None, **dep) -> dict:
    deps = [{"name": "claude@anthropic", "provider": "anthropic", "base_url": url, "api_key_env": "TEST_ANTHROPIC_KEY",
             "model": "claude-sonnet-4-6", "pricing": {"price_map": "claude-sonnet-4-6"}, **dep}]
    group = ["claude@anthropic"]
    if backup_url:
        deps.append({"name": "backup", "base_url": backup_url, "model": "backup",
                     "pricing": {"list": {"input": 100.0, "output": 200.0}}})  # dearer: tried second
        group.append("backup")
    return {"deployments": deps, "model_groups": {"claude": {"deployments": group}},
            "retry": {"max_attempts": 2, "backoff_base_s": 0.0},
            "timeouts": {"connect_s": 1, "first_byte_s": 2, "total_s": 4}}


def _thinking_stream(usage_in: dict, output_tokens: object, *, end: bool = True) -> list[tuple[str, dict]]:
    ev = anthropic_stream(["Paris."], usage_in=usage_in, output_tokens=output_tokens)  # type: ignore[arg-type]
    # a thinking block (thinking_delta, signature_delta) before the text block, as extended thinking streams
    think = [("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
             ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "thinking_delta", "thinking": "Capital of France: Paris."}}),
             ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "signature_delta", "signature": "sig-abc=="}}),
             ("content_block_stop", {"type": "content_block_stop", "index": 0})]
    for name, data in ev:
        if isinstance(data.get("index"), int):
            data["index"] += 1
    ev[2:2] = think
    return ev if end else [e for e in ev if e[0] not in ("message_delta", "message_stop")]


async def test_unary_is_relayed_as_sent_and_as_answered(fake, tmp_path):
    fake.script = [(200, anthropic_message([THINKING, {"type": "text", "text": "Paris."}], usage=USAGE))]
    async with gateway(_config(fake.url), tmp_path / "l") as g:
        key = g.key("t", budget_usd="5")
        c = AsyncAnthropic(base_url=g.url, api_key=key, max_retries=0)
        raw = await c.messages.with_raw_response.create(
            model="claude", max_tokens=2048, system=CACHED_SYSTEM, metadata={"user_id": "u-1"},
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": [{"type": "text", "text": "Capital of France?",
                                                     "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
            extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
        m = await raw.parse()
        await c.close()
        (ev,) = g.metering.events("t")
        spend = g.metering.spend(g.metering.authenticate(key))
    (headers, sent), = fake.requests
    # the client's body as it sent it: thinking, cache_control, metadata; only the model swapped
    assert sent == {"model": "claude-sonnet-4-6", "max_tokens": 2048, "system": CACHED_SYSTEM,
                    "metadata": {"user_id": "u-1"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "Capital of France?",
                                                               "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]}
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14" and headers["x-api-key"] == "sk-ant-test"
    # the answer as Anthropic sent it: the thinking block and its signature come back
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert m.content[0].thinking == THINKING["thinking"] and m.content[0].signature == "sig-abc=="
    assert m.id == "msg_01" and m.model == "claude" and m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens, m.usage.cache_read_input_tokens,
            m.usage.cache_creation_input_tokens) == (10, 4, 6, 20)
    assert "x-tokenomy-warning" not in raw.headers  # nothing was dropped
    # metered as on the translated path: one event, cache categories, the reservation settled
    assert (ev.input_tokens, ev.cached_input_tokens, ev.cache_write_tokens, ev.output_tokens, ev.estimated) == (
        36, 6, 20, 4, False)
    assert ev.cost_usd == (10 * Decimal("3") + 6 * Decimal("0.3") + 20 * Decimal("3.75") + 4 * Decimal("15")) / 10**6
    assert Decimal(raw.headers["x-tokenomy-cost-usd"]) == ev.cost_usd
    assert Decimal(spend["key"]["spent_usd"]) == ev.price_usd and Decimal(spend["key"]["reserved_usd"]) == 0


async def test_stream_is_relayed_event_by_event_and_metered(fake, tmp_path):
    fake.script = [(200, _thinking_stream({"input_tokens": 30, "cache_read_input_tokens": 5}, 12))]
    async with gateway(_config(fake.url), tmp_path / "l") as g:
        key = g.key("t", budget_usd="5")
        c = AsyncAnthropic(base_url=g.url, api_key=key, max_retries=0)
        seen: list[str] = []
        async with c.messages.stream(model="claude", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                                     messages=[{"role": "user", "content": "Capital of France?"}]) as s:
            async for e in s:
                seen.append(e.type)
                if e.type == "message_stop":  # the request's event is committed before its end reaches us
                    assert len(g.metering.events("t")) == 1
            m = await s.get_final_message()
        await c.close()
        (ev,) = g.metering.events("t")
        spend = g.metering.spend(g.metering.authenticate(key))
    (_, sent), = fake.requests
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024} and sent["stream"] is True
    assert [b.type for b in m.content] == ["thinking", "text"] and m.content[0].signature == "sig-abc=="
    assert m.content[1].text == "Paris." and m.model == "claude" and m.id == "msg_02"
    assert "thinking" in seen and "signature" in seen  # the SDK's events of the relayed thinking deltas
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (30, 5, 12)
    assert (ev.input_tokens, ev.cached_input_tokens, ev.output_tokens, ev.estimated, ev.status) == (35, 5, 12, False, "ok")
    assert Decimal(spend["key"]["spent_usd"]) == ev.price_usd and Decimal(spend["key"]["reserved_usd"]) == 0


async def test_sampling_fields_only_on_the_legacy_api_version(fake, tmp_path):
    fake.script = [(200, anthropic_message([{"type": "text", "text": "ok"}]))]
    async with gateway(_config(fake.url), tmp_path / "l") as g:
        c = AsyncAnthropic(base_url=g.url, api_key=g.key("t"), max_retries=0)
        # (the SDK's types are API 2026-10-21, which has no sampling fields: sent as extra_body)
        modern = await c.messages.with_raw_response.create(
            model="claude", max_tokens=20, messages=[{"role": "user", "content": "x"}],
            extra_body={"top_k": 5, "temperature": 0.5})
        legacy = await c.messages.with_raw_response.create(
            model="claude", max_tokens=20, messages=[{"role": "user", "content": "x"}],
            extra_body={"top_k": 5, "temperature": 0.5}, extra_headers={"anthropic-version": "2023-06-01"})
        await c.close()
    (h1, b1), (h2, b2) = fake.requests
    # API 2026-10-21 answers sampling fields with a 400: dropped, and said so
    assert "temperature" not in b1 and "top_k" not in b1 and h1["anthropic-version"] == "2026-10-21"
    assert "top_k" in modern.headers["x-tokenomy-warning"]
    # the client speaks 2023-06-01: relayed with its version, top_k and temperature included
    assert h2["anthropic-version"] == "2023-06-01" and (b2["top_k"], b2["temperature"]) == (5, 0.5)
    assert "x-tokenomy-warning" not in legacy.headers
    assert (await legacy.parse()).content[0].text == "ok"


@pytest.mark.parametrize("usage, why", [
    ({"input_tokens": 10**9, "output_tokens": 4}, "prompt_tokens"),
    ({"input_tokens": "ten", "output_tokens": 4}, "prompt_tokens invalid"),
    ({"input_tokens": 10, "output_tokens": 10**6}, "completion_tokens"),
    ({"input_tokens": 10, "output_tokens": True}, "completion_tokens invalid"),
])
async def test_unary_lying_usage_is_bounded_and_the_client_told_what_is_billed(fake, tmp_path, usage, why):
    fake.script = [(200, anthropic_message([{"type": "text", "text": "Paris is the capital."}], usage=usage))]
    async with gateway(_config(fake.url), tmp_path / "l") as g:
        c = AsyncAnthropic(base_url=g.url, api_key=g.key("t"), max_retries=0)
        m = await c.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": "Capital?"}])
        await c.close()
        (ev,) = g.metering.events("t")
    assert ev.extra["usage_anomaly"] is True and any(why in a for a in ev.extra["usage_anomalies"])
    assert ev.input_tokens < 200 and ev.output_tokens <= 50 + 16
    assert (m.usage.input_tokens, m.usage.output_tokens) == (ev.input_tokens, ev.output_tokens)  # never the lie


async def test_unary_without_usage_is_counted_by_the_gateway(fake, tmp_path):
    msg = anthropic_message([{"type": "text", "text": "Paris is the capital."}])
    del msg["usage"]
    fake.script = [(200, msg)]
    async with gateway(_config(fake.url), tmp_path / "l") as g:
        c = AsyncAnthropic(base_url=g.url, api_key=g.key("t"), max_retries=0)
        m = await c.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": "Capital?"}])
        await c.close()
        (ev,) = g.metering.events("t")
    assert ev.estimated and ev.input_tokens > 0 and ev.output_tokens > 0  # not billed as zero
    assert (m.usage.input_tokens, m.usage.output_tokens) == (ev.input_tokens, ev.output_tokens)


async def test_stream_lying_usage_is_bounded_in_message_delta(fake, tmp_path):
    fake.script = [(200, _thinking_stream({"input_tokens": 9}, 10**7))]
    async with gateway(_config(fake.url), tmp_path / "l") as g:
        c = AsyncAnthropic(base_url=g.url, api_key=g.key("t"), max_retries=0)
        async with c.messages.stream(model="claude", max_tokens=40, messages=[{"role": "user", "content": "x"}]) as s:
            m = await s.get_final_message()
        await c.close()
        (ev,) = g.metering.events("t")
    assert ev.extra["usage_anomaly"] is True and ev.output_tokens == 40 + 16  # the request's own output bound
    assert (m.usage.input_tokens, m.usage.output_tokens) == (9, ev.output_tokens)
    assert m.content[-1].text == "Paris."


async def test_truncated_stream_is_an_error_and_metered_once(fake, tmp_path):
    fake.script = [(200, _thinking_stream({"input_tokens": 9}, 3, end=False))]  # no message_delta / message_stop
    async with gateway(_config(fake.url), tmp_path / "l") as g:
        key = g.key("t", budget_usd="5")
        c = AsyncAnthropic(base_url=g.url, api_key=key, max_retries=0)
        seen: list[str] = []
        with pytest.raises(anthropic.APIStatusError):
            async with c.messages.stream(model="claude", max_tokens=40, messages=[{"role": "user", "content": "x"}]) as s:
                async for e in s:
                    seen.append(e.type)
        await c.close()
        (ev,) = g.metering.events("t")
        spend = g.metering.spend(g.metering.authenticate(key))
    assert "message_stop" not in seen and "text" in seen  # what came was relayed; no end was made up
    assert (ev.status, ev.http_status, ev.estimated) == ("upstream_error", 502, True) and ev.output_tokens > 0
    assert Decimal(spend["key"]["reserved_usd"]) == 0 and Decimal(spend["key"]["spent_usd"]) == ev.price_usd


async def test_fallback_to_another_provider_uses_the_translation(fake, tmp_path):
    fake.script = [(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]
    async with stubs(Stub()) as (backup,):
        async with gateway(_config(fake.url, backup.base_url), tmp_path / "l") as g:
            c = AsyncAnthropic(base_url=g.url, api_key=g.key("t"), max_retries=0)
            raw = await c.messages.with_raw_response.create(
                model="claude", max_tokens=5, system=CACHED_SYSTEM, thinking={"type": "enabled", "budget_tokens": 1024},
                messages=[{"role": "user", "content": "hi"}])
            await c.close()
            (ev,) = g.metering.events("t")
    m = await raw.parse()
    assert len(fake.requests) == 1 and fake.requests[0][1]["thinking"]["type"] == "enabled"  # the native attempt
    assert backup.bodies[0]["messages"][0] == {"role": "system", "content": "You are terse."}  # then the translation
    assert ev.deployment == "backup" and [a["deployment"] for a in ev.extra["attempts"]] == ["claude@anthropic"]
    assert m.content[0].type == "text" and m.model == "claude" and m.usage.output_tokens == ev.output_tokens
    assert "thinking" in raw.headers["x-tokenomy-warning"]  # dropped by the translation, and said so


async def test_thinking_sent_back_in_a_tool_loop_counts_as_prompt(fake, tmp_path):
    """Anthropic bills the thinking blocks a tool-use loop sends back as input: the gateway's own
    prompt count includes them, so a long one is not taken for a lie (nor under-reserved)."""
    thought = " ".join(f"step {i} considers the weather API and its arguments carefully." for i in range(150))
    turns = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": [{"type": "thinking", "thinking": thought, "signature": "sig=="},
                                               {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                                "input": {"city": "Paris"}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"}]}]
    tools = [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    async with gateway(_config(fake.url), tmp_path / "l") as g:
        tc = __import__("tokenomy.tokencount", fromlist=["counter_for"]).counter_for(g.gw.groups["claude"])
        billed_in = tc.count_text(thought) + 60  # what Anthropic would report: mostly the thinking block
        fake.script = [(200, anthropic_message([{"type": "text", "text": "18C and sunny."}],
                                               usage={"input_tokens": billed_in, "output_tokens": 6}))]
        c = AsyncAnthropic(base_url=g.url, api_key=g.key("t"), max_retries=0)
        m = await c.messages.create(model="claude", max_tokens=1500, tools=tools, messages=turns,
                                    thinking={"type": "enabled", "budget_tokens": 1024})
        await c.close()
        (ev,) = g.metering.events("t")
    assert fake.requests[0][1]["messages"] == turns  # the thinking block went back as sent
    assert "usage_anomaly" not in ev.extra and (ev.input_tokens, ev.estimated) == (billed_in, False)
    assert m.usage.input_tokens == billed_in


def test_native_encoder_relays_events_and_ends_a_stream_with_billed_usage():
    """MessagesEncoder on native chunks: the upstream's events as they came (model set to the alias),
    end events held until [DONE], their usage the billed one; closed by itself if none came."""
    import orjson

    from tokenomy.gateway.messages.sse import MessagesEncoder

    def sse(obj) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    start = ["message_start", {"type": "message_start", "message": {"id": "msg_9", "model": "claude-x", "content": [],
                                                                     "usage": {"input_tokens": 7, "output_tokens": 1}}}]
    delta = ["message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 99}}]
    stop = ["message_stop", {"type": "message_stop"}]
    billed = {"prompt_tokens": 7, "completion_tokens": 3}

    def run(usage_chunk: dict) -> list[tuple[str, dict]]:
        enc = MessagesEncoder("msg_x", "alias", 7, [])
        raw = enc.feed(sse({"choices": [{"index": 0, "delta": {}}], "x_native": [start]}) + sse(usage_chunk)
                       + b": x-tokenomy {}\n\n" + b"data: [DONE]\n\n")
        evs = [b for b in raw.split(b"\n\n") if b.startswith(b"event:")]
        return [(e.split(b"\n")[0][7:].decode(), orjson.loads(e.split(b"\n")[1][6:])) for e in evs]

    got = run({"choices": [], "usage": billed, "x_native": [delta, stop]})
    assert [n for n, _ in got] == ["message_start", "message_delta", "message_stop"]
    assert got[0][1]["message"]["model"] == "alias" and got[0][1]["message"]["id"] == "msg_9"
    assert got[1][1]["usage"]["output_tokens"] == 3 and got[1][1]["delta"] == {"stop_reason": "end_turn"}
    got = run({"choices": [], "usage": billed})  # a usage chunk without the upstream's end events
    assert [n for n, _ in got] == ["message_start", "message_delta", "message_stop"]
    assert got[1][1]["usage"]["output_tokens"] == 3
