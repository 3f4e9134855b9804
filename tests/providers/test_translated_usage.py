"""A translated provider's usage is untrusted input, bounded by the gateway's one policy
(lifecycle/usage.py, as for an OpenAI upstream): local Gemini, Bedrock and Anthropic servers
(tests/providers/fakes.py) report token counts that are strings, floats, booleans, negative or
beyond 64 bits, or no usage at all; the gateway bills its own count (not 0), flags the lie, and
tells the client what it billed."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from tests.gateway.conftest import gateway
from tokenomy.gateway.lifecycle.usage import COMPLETION_SLACK_TOKENS, PROMPT_MARGIN, PROMPT_SLACK_TOKENS
from tokenomy.gateway.providers.base import JSON_INT_MAX, translated_usage
from tokenomy.tokencount import counter_for

from .fakes import (FakeAnthropic, FakeBedrock, FakeGemini, anthropic_message, anthropic_stream, converse_response,
                    gemini_response, running)

MSGS = [{"role": "user", "content": "hello there, how are you today"}]
TEXT = "fine thanks, and you?"
PIECES = ["fine thanks", ", and you?"]
MAX_TOKENS = 50
BEDROCK_MODEL = "anthropic.claude-sonnet-4-6-v1:0"

# (id, the value every count field carries); each is invalid: both sides counted by the gateway
INVALID = [("string", "12"), ("float", 12.0), ("boolean", True), ("negative", -5), ("over_2_64", 2**70),
           ("u64_max", 2**64 - 1)]


# ------------------------------------------------------------------ the three providers' wire formats
class Gemini:
    name = "gemini@google"

    def __init__(self, fake):
        self.fake = fake

    def dep(self) -> dict:
        return {"name": self.name, "provider": "gemini", "base_url": self.fake.url, "api_key_env": "TEST_GEMINI_KEY",
                "model": "gemini-2.5-flash", "pricing": {"price_map": "gemini-2.5-flash"}}

    @staticmethod
    def usage(v) -> dict:
        return {"promptTokenCount": v, "candidatesTokenCount": v, "totalTokenCount": 1}

    def answer(self, usage: dict | None, stream: bool) -> None:
        if not stream:
            obj = gemini_response([{"text": TEXT}])
            if usage is None:
                del obj["usageMetadata"]
            else:
                obj["usageMetadata"] = usage
            self.fake.script = [(200, obj)]
            return
        evs = [{"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}],
                "modelVersion": "gemini-2.5-flash", "responseId": "r"} for p in PIECES]
        evs[-1]["candidates"][0]["finishReason"] = "STOP"
        if usage is not None:
            evs[-1]["usageMetadata"] = usage
        self.fake.script = [(200, evs)]


class Bedrock:
    name = "claude@bedrock"

    def __init__(self, fake):
        self.fake = fake

    def dep(self) -> dict:
        return {"name": self.name, "provider": "bedrock", "base_url": self.fake.url, "model": BEDROCK_MODEL,
                "region": "eu-west-1", "pricing": {"price_map": "claude-sonnet-4-6"}}

    @staticmethod
    def usage(v) -> dict:
        return {"inputTokens": v, "outputTokens": v, "totalTokens": 1}

    def answer(self, usage: dict | None, stream: bool) -> None:
        if not stream:
            obj = converse_response([{"text": TEXT}])
            if usage is None:
                del obj["usage"]
            else:
                obj["usage"] = usage
            self.fake.script = [(200, obj)]
            return
        meta: dict = {"metrics": {"latencyMs": 5}}
        if usage is not None:
            meta["usage"] = usage
        self.fake.script = [(200, [("messageStart", {"role": "assistant"}),
                                   *[("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}})
                                     for p in PIECES],
                                   ("contentBlockStop", {"contentBlockIndex": 0}),
                                   ("messageStop", {"stopReason": "end_turn"}), ("metadata", meta)])]


class Anthropic:
    name = "claude@anthropic"

    def __init__(self, fake):
        self.fake = fake

    def dep(self) -> dict:
        return {"name": self.name, "provider": "anthropic", "base_url": self.fake.url,
                "api_key_env": "TEST_ANTHROPIC_KEY", "model": "claude-sonnet-4-6",
                "pricing": {"price_map": "claude-sonnet-4-6"}}

    @staticmethod
    def usage(v) -> dict:
        return {"input_tokens": v, "output_tokens": v}

    def answer(self, usage: dict | None, stream: bool) -> None:
        if not stream:
            obj = anthropic_message([{"type": "text", "text": TEXT}])
            if usage is None:
                del obj["usage"]
            else:
                obj["usage"] = usage
            self.fake.script = [(200, obj)]
            return
        evs = anthropic_stream(PIECES)
        start, delta = evs[0][1]["message"], evs[-2][1]
        del start["usage"], delta["usage"]
        if usage is not None:  # input in message_start, output in message_delta (as Anthropic sends)
            start["usage"] = {k: v for k, v in usage.items() if k != "output_tokens"}
            if "output_tokens" in usage:
                delta["usage"] = {"output_tokens": usage["output_tokens"]}
        self.fake.script = [(200, evs)]


PROVIDERS = {"gemini": (FakeGemini, Gemini), "bedrock": (FakeBedrock, Bedrock), "anthropic": (FakeAnthropic, Anthropic)}


@pytest.fixture(params=list(PROVIDERS))
async def provider(request, monkeypatch):
    monkeypatch.setenv("TEST_GEMINI_KEY", "AIza-test")
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
    for k, v in {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "tok",
                 "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}.items():
        monkeypatch.setenv(k, v)
    fake_cls, wire = PROVIDERS[request.param]
    async with running(fake_cls()) as f:
        yield wire(f)


async def _ask(g, p, stream: bool) -> tuple[int, Decimal, dict | None]:
    """(status, the cost the client is told, the usage the client sees) of one chat request."""
    body = {"model": p.name, "messages": MSGS, "max_tokens": MAX_TOKENS, "stream": stream,
            **({"stream_options": {"include_usage": True}} if stream else {})}
    st, h, raw = await g.post("/v1/chat/completions", body, g.key("t"))
    assert st == 200, raw
    if not stream:
        assert raw["choices"][0]["message"]["content"] == TEXT
        return st, Decimal(h["x-tokenomy-cost-usd"]), raw["usage"]
    assert raw.endswith(b"data: [DONE]\n\n")
    chunks = [orjson.loads(e[6:]) for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == TEXT
    usages = [c for c in chunks if not c["choices"] and c.get("usage")]
    assert len(usages) == 1  # one usage chunk, the billed one
    return st, Decimal(usages[0]["x_tokenomy"]["cost_usd"]), usages[0]["usage"]


def _own(g, p) -> tuple[int, int]:
    tc = counter_for(g.gw.deployments[p.name])
    return tc.count_chat(MSGS), tc.count_text(TEXT)


def _price(g, p, inp: int, out: int) -> Decimal:
    return g.gw.deployments[p.name].price.cost_usd(inp, 0, out, 0, 0).quantize(Decimal("1e-12"))


# ------------------------------------------------------------------ through the gateway
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("value", [v for _, v in INVALID], ids=[n for n, _ in INVALID])
async def test_invalid_counts_are_counted_by_the_gateway_and_flagged(provider, tmp_path, value, stream):
    if stream and value == 2**70:  # the fakes write SSE / event-stream payloads with orjson: the literal as is
        value = orjson.Fragment(str(value).encode())
    provider.answer(provider.usage(value), stream)
    async with gateway({"deployments": [provider.dep()]}, tmp_path / "ledger") as g:
        _, told, usage = await _ask(g, provider, stream)
        own_in, own_out = _own(g, provider)
        (ev,) = g.metering.events("t")
    assert own_in > 0 and own_out > 0
    assert (ev.input_tokens, ev.cached_input_tokens, ev.output_tokens, ev.reasoning_tokens) == (own_in, 0, own_out, 0)
    assert ev.estimated and ev.status == "ok"
    assert ev.cost_usd == _price(g, provider, own_in, own_out) == told > 0
    assert ev.extra["usage_anomaly"] is True
    why = " ".join(ev.extra["usage_anomalies"])
    assert "prompt_tokens invalid" in why and "completion_tokens invalid" in why
    assert ev.extra["usage_raw"]["prompt_tokens"] is not None  # the lie is kept
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (own_in, own_out)  # the client sees what is billed


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_absurd_counts_are_clipped_to_the_bound_and_flagged(provider, tmp_path, stream):
    provider.answer(provider.usage(10**12), stream)
    async with gateway({"deployments": [provider.dep()]}, tmp_path / "ledger") as g:
        _, _, usage = await _ask(g, provider, stream)
        own_in, _ = _own(g, provider)
        (ev,) = g.metering.events("t")
    bound_in, bound_out = int(own_in * PROMPT_MARGIN) + PROMPT_SLACK_TOKENS, MAX_TOKENS + COMPLETION_SLACK_TOKENS
    assert (ev.input_tokens, ev.output_tokens, ev.estimated) == (bound_in, bound_out, False)
    assert ev.extra["usage_anomaly"] is True and ev.extra["usage_raw"]["prompt_tokens"] == 10**12
    assert ev.cost_usd == _price(g, provider, bound_in, bound_out)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (bound_in, bound_out)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("shape", ["absent", "empty"])
async def test_missing_usage_is_counted_by_the_gateway_not_billed_zero(provider, tmp_path, stream, shape):
    provider.answer(None if shape == "absent" else {}, stream)
    async with gateway({"deployments": [provider.dep()]}, tmp_path / "ledger") as g:
        _, told, usage = await _ask(g, provider, stream)
        own_in, own_out = _own(g, provider)
        (ev,) = g.metering.events("t")
    assert (ev.input_tokens, ev.output_tokens) == (own_in, own_out) and own_in > 0 and own_out > 0
    assert ev.estimated and "usage_anomaly" not in ev.extra  # missing is not a lie: as for an OpenAI upstream
    assert ev.extra["token_counter"] == counter_for(g.gw.deployments[provider.name]).name
    assert ev.cost_usd == _price(g, provider, own_in, own_out) == told > 0
    if stream:  # the client asked for usage: it gets the gateway's (billed) figures
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (own_in, own_out)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_one_invalid_side_only_estimates_that_side(provider, tmp_path, stream):
    u = provider.usage(7)
    u[next(k for k in u if "out" in k.lower() or "candidates" in k)] = "3"
    provider.answer(u, stream)
    async with gateway({"deployments": [provider.dep()]}, tmp_path / "ledger") as g:
        await _ask(g, provider, stream)
        _, own_out = _own(g, provider)
        (ev,) = g.metering.events("t")
    assert (ev.input_tokens, ev.output_tokens, ev.estimated) == (7, own_out, True)
    assert ev.extra["usage_anomalies"] == ["completion_tokens invalid (str '3')"]


async def test_gemini_thinking_cut_off_bills_its_thoughts(monkeypatch, tmp_path):
    """MAX_TOKENS while thinking: no candidatesTokenCount (proto3 leaves zeros out), thoughts only."""
    monkeypatch.setenv("TEST_GEMINI_KEY", "AIza-test")
    async with running(FakeGemini()) as f:
        p = Gemini(f)
        p.answer({"promptTokenCount": 9, "thoughtsTokenCount": 40, "totalTokenCount": 49}, False)
        async with gateway({"deployments": [p.dep()]}, tmp_path / "ledger") as g:
            _, _, usage = await _ask(g, p, False)
            (ev,) = g.metering.events("t")
    assert (ev.input_tokens, ev.output_tokens, ev.reasoning_tokens, ev.estimated) == (9, 40, 40, False)
    assert usage["completion_tokens"] == 40 and "usage_anomaly" not in ev.extra


async def test_bedrock_cache_counts_summing_past_64_bits_are_flagged_not_a_500(monkeypatch, tmp_path):
    for k, v in {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret",
                 "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}.items():
        monkeypatch.setenv(k, v)
    async with running(FakeBedrock()) as f:
        p = Bedrock(f)
        p.answer({"inputTokens": 2**63, "cacheReadInputTokens": 2**63, "cacheWriteInputTokens": 2**63,
                  "outputTokens": 4}, False)
        async with gateway({"deployments": [p.dep()]}, tmp_path / "ledger") as g:
            _, _, usage = await _ask(g, p, False)
            own_in, _ = _own(g, p)
            (ev,) = g.metering.events("t")
    assert (ev.input_tokens, ev.cached_input_tokens, ev.cache_write_tokens, ev.output_tokens) == (own_in, 0, 0, 4)
    assert ev.estimated and ev.extra["usage_anomaly"] is True
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (own_in, 4)


# ------------------------------------------------------------------ the shared mapping (pure)
def test_translated_usage_hands_every_count_on_to_the_gateways_bound():
    def bedrock(u):
        return translated_usage(u, ("inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"), ("outputTokens",),
                                cached="cacheReadInputTokens", cache_write="cacheWriteInputTokens")

    assert bedrock({"inputTokens": 10, "cacheReadInputTokens": 1000, "cacheWriteInputTokens": 100, "outputTokens": 7}) == {
        "prompt_tokens": 1110, "completion_tokens": 7, "total_tokens": 1117,
        "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 0}}
    # an invalid part stands for its total (never summed as 0); the details as they came
    u = bedrock({"inputTokens": 10, "cacheReadInputTokens": "5", "outputTokens": -1})
    assert (u["prompt_tokens"], u["completion_tokens"], u["prompt_tokens_details"]["cached_tokens"]) == ("5", -1, "5")
    assert "total_tokens" not in u
    # absent totals are left out (the gateway counts them); no usage at all is None
    assert bedrock({"outputTokens": 3})["completion_tokens"] == 3 and "prompt_tokens" not in bedrock({"outputTokens": 3})
    assert bedrock(None) is None and bedrock({}) is None and bedrock({"totalTokens": 9}) is None
    assert bedrock("junk") == "junk"  # not an object: flagged by the bound
    # valid parts summing past what JSON writes are kept writable (and flagged as invalid there)
    assert bedrock({"inputTokens": 2**53, "cacheReadInputTokens": 2**53, "outputTokens": 1})["prompt_tokens"] == 2**54
    assert bedrock({"inputTokens": 2**63, "outputTokens": 1})["prompt_tokens"] == 2**63  # handed on (> 2**53: invalid)
    assert JSON_INT_MAX < 2**63
