"""An upstream's usage is untrusted input (issue 14 §1): a real misbehaving upstream on 127.0.0.1
reports absurd, negative, boolean, fractional and over-64-bit token counts; the gateway bills
bounded figures, records the raw ones and an anomaly flag, counts anomalies per deployment in
/metrics, and a $1 hard budget stays <= $1. A stream whose usage is a lie still ends well-formed."""

from __future__ import annotations

import logging
from decimal import Decimal

import orjson
import pytest
from aiohttp import web

from gw_helpers import ADMIN_KEY, FAST_TIMEOUTS, gateway, list_dep, serve

from tokenomy.gateway.lifecycle.usage import COMPLETION_SLACK_TOKENS, PROMPT_MARGIN, PROMPT_SLACK_TOKENS, bound_usage
from tokenomy.tokens import count_chat_tokens, count_tokens

MSGS = [{"role": "user", "content": "hello there, how are you"}]
TEXT = "fine thanks and you"
MAX_TOKENS = 50
OWN_IN = count_chat_tokens(MSGS)
OWN_OUT = count_tokens(TEXT)
PROMPT_BOUND = int(OWN_IN * PROMPT_MARGIN) + PROMPT_SLACK_TOKENS
OUT_BOUND = MAX_TOKENS + COMPLETION_SLACK_TOKENS

# (name, the usage JSON the upstream sends, billed (input, cached, output, reasoning), estimated)
CASES = [
    ("trillion", b'{"prompt_tokens": 1000000000000, "completion_tokens": 1000000000000}',
     (PROMPT_BOUND, 0, OUT_BOUND, 0), False),
    ("negative", b'{"prompt_tokens": -5, "completion_tokens": -100}', (OWN_IN, 0, OWN_OUT, 0), True),
    ("boolean", b'{"prompt_tokens": true, "completion_tokens": true}', (OWN_IN, 0, OWN_OUT, 0), True),
    ("float", b'{"prompt_tokens": 7.5, "completion_tokens": 3.0}', (OWN_IN, 0, OWN_OUT, 0), True),
    ("over_2_64", b'{"prompt_tokens": 184467440737095516160000, "completion_tokens": 99999999999999999999999}',
     (OWN_IN, 0, OWN_OUT, 0), True),
    ("details", b'{"prompt_tokens": 5, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 9},'
                b' "completion_tokens_details": {"reasoning_tokens": 1000}}', (5, 5, 4, 4), False),
]


class LyingUpstream:
    """OpenAI-compatible; every answer carries `usage_json` verbatim (unary and stream)."""

    def __init__(self, usage_json: bytes):
        self.usage_json = usage_json
        self.calls = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = orjson.loads(await request.read())
        head = b'{"id":"x","object":"chat.completion","created":1,"model":"m",'
        if not body.get("stream"):
            raw = (head + b'"choices":[{"index":0,"message":{"role":"assistant","content":' + orjson.dumps(TEXT)
                   + b'},"finish_reason":"stop"}],"usage":' + self.usage_json + b"}")
            return web.Response(body=raw, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": TEXT}}]}
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
                         b'"usage":' + self.usage_json + b"}\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


def _cfg(base: str, usd_per_mtok: float = 1.0) -> dict:
    return {"deployments": [list_dep("liar", base + "/v1", usd_per_mtok, usd_per_mtok)], "timeouts": FAST_TIMEOUTS}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name,usage_json,billed,estimated", CASES, ids=[c[0] for c in CASES])
async def test_lying_usage_is_bounded_recorded_and_flagged(data_dir, caplog, name, usage_json, billed, estimated,
                                                           stream):
    up = LyingUpstream(usage_json)
    async with serve(up.app()) as base:
        async with gateway(_cfg(base, usd_per_mtok=10_000.0), data_dir) as g:
            key = g.key(budget_usd=1)
            body = {"model": "liar", "messages": MSGS, "max_tokens": MAX_TOKENS, "stream": stream,
                    **({"stream_options": {"include_usage": True}} if stream else {})}
            with caplog.at_level(logging.WARNING, logger="tokenomy.gateway"):
                for _ in range(3):
                    st, h, raw = await g.post("/v1/chat/completions", body, key)
                    if st != 200:
                        break
                    if stream:  # well-formed: the billed usage chunk, then [DONE]
                        assert raw.endswith(b"data: [DONE]\n\n") and b"HTTP/1.1" not in raw
                        events = [e for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
                        usage = orjson.loads(events[-1][6:])["usage"]
                    else:  # the answer passes through; its usage says what is billed, not the lie
                        assert raw["choices"][0]["message"]["content"] == TEXT
                        usage = raw["usage"]
                    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (billed[0], billed[2])
            evs = g.metering.events()
            assert evs, "every answer is metered"
            ev = evs[0]
            assert (ev.input_tokens, ev.cached_input_tokens, ev.output_tokens, ev.reasoning_tokens) == billed
            assert ev.estimated is estimated and ev.status == "ok"
            assert ev.extra["usage_anomaly"] is True and ev.extra["usage_anomalies"]
            raw_fig = ev.extra["usage_raw"]
            assert set(raw_fig) == {"prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"}
            if name == "trillion":
                assert raw_fig["prompt_tokens"] == 10**12 and raw_fig["completion_tokens"] == 10**12
            if name == "boolean":
                assert raw_fig["prompt_tokens"] is True
            # the $1 hard budget holds, whatever the upstream says
            spent = sum((e.price_usd for e in evs), Decimal(0))
            assert spent <= Decimal(1)
            _, _, metrics = await g.get("/metrics", ADMIN_KEY)
            assert f'tokenomy_usage_anomalies_total{{deployment="liar"}} {float(len(evs))}' in metrics
            assert any("liar" in r.getMessage() and "untrusted usage" in r.getMessage() for r in caplog.records)


async def test_a_trillion_tokens_cannot_spend_more_than_the_budget(data_dir):
    """The issue's measurement: 10^12 tokens reported for max_tokens 50 against a $1 budget
    ended at $4,000,000 spent. Now each request bills at most its bound and the budget stops
    admitting before $1."""
    up = LyingUpstream(b'{"prompt_tokens": 1000000000000, "completion_tokens": 1000000000000}')
    async with serve(up.app()) as base:
        async with gateway(_cfg(base, usd_per_mtok=2_000.0), data_dir) as g:
            key = g.key(budget_usd=1)
            statuses = []
            for _ in range(20):
                st, _, body = await g.post("/v1/chat/completions",
                                           {"model": "liar", "messages": MSGS, "max_tokens": MAX_TOKENS}, key)
                statuses.append(st)
            assert 200 in statuses and statuses[-1] == 429
            spent = sum((e.price_usd for e in g.metering.events()), Decimal(0))
            assert Decimal("0.5") < spent <= Decimal(1)


async def test_settlement_is_capped_by_the_reservation(data_dir):
    """A prompt count within the bound (2x ours + slack) but above what was reserved (1.1x + 16):
    the request settles what it reserved, never more, so 3 such requests cannot pass $1."""
    lie = PROMPT_BOUND  # the largest prompt count taken as reported
    up = LyingUpstream(b'{"prompt_tokens": %d, "completion_tokens": 1}' % lie)
    # input $10,000/Mtok = $0.01 a token; the output is free; max_tokens 1
    async with serve(up.app()) as base:
        cfg = {"deployments": [list_dep("liar", base + "/v1", 10_000.0, 0.0)], "timeouts": FAST_TIMEOUTS}
        async with gateway(cfg, data_dir) as g:
            key = g.key(budget_usd=1)
            n_ok = 0
            for _ in range(6):
                st, h, _ = await g.post("/v1/chat/completions", {"model": "liar", "messages": MSGS, "max_tokens": 1},
                                        key)
                n_ok += st == 200
            evs = g.metering.events()
            reserved = Decimal(repr((int(OWN_IN * 1.1) + 16) * 0.01)).quantize(Decimal("1e-12"))
            assert n_ok == len(evs) == int(Decimal(1) / reserved)
            for ev in evs:
                assert ev.input_tokens == lie and ev.price_usd == reserved  # billed as far as reserved
                assert Decimal(ev.extra["uncapped_price_usd"]) == Decimal(lie) * Decimal("0.01")
            assert sum((e.price_usd for e in evs), Decimal(0)) <= Decimal(1)


def test_bound_usage_rules():
    own = lambda: 7  # noqa: E731
    ok = bound_usage({"prompt_tokens": 10, "completion_tokens": 5}, own_input_tokens=10, max_output_tokens=50,
                     own_output_tokens=own)
    assert ok.counts == (10, 0, 5, 0) and not ok.anomalies and ok.raw is None and not ok.estimated
    # n x max_tokens + slack is the completion bound, exactly
    edge = bound_usage({"prompt_tokens": 10, "completion_tokens": 2 * 50 + COMPLETION_SLACK_TOKENS},
                       own_input_tokens=10, max_output_tokens=2 * 50, own_output_tokens=own)
    assert not edge.anomalies
    over = bound_usage({"prompt_tokens": 10, "completion_tokens": 2 * 50 + COMPLETION_SLACK_TOKENS + 1},
                       own_input_tokens=10, max_output_tokens=2 * 50, own_output_tokens=own)
    assert over.counts[2] == 2 * 50 + COMPLETION_SLACK_TOKENS and over.anomalies
    # absent usage: the gateway counts itself, no anomaly (llama.cpp streams, stream_usage off)
    none = bound_usage(None, own_input_tokens=10, max_output_tokens=50, own_output_tokens=own)
    assert none.counts == (10, 0, 7, 0) and none.estimated and not none.anomalies
    junk = bound_usage("lots", own_input_tokens=10, max_output_tokens=50, own_output_tokens=own)
    assert junk.counts == (10, 0, 7, 0) and junk.anomalies
    # one bad field: only it is replaced
    mixed = bound_usage({"prompt_tokens": 10, "completion_tokens": 2**53 + 1}, own_input_tokens=10,
                        max_output_tokens=50, own_output_tokens=own)
    assert mixed.counts == (10, 0, 7, 0) and mixed.estimated and mixed.raw["completion_tokens"] == 2**53 + 1
    huge = bound_usage({"prompt_tokens": 2**70, "completion_tokens": 1}, own_input_tokens=10, max_output_tokens=50,
                       own_output_tokens=own)
    assert huge.counts[0] == 10 and isinstance(huge.raw["prompt_tokens"], str)  # stored as text, not an overflow
    orjson.dumps(huge.raw)  # JSON-safe for the ledger


async def test_stream_whose_commit_fails_after_the_first_byte_ends_as_well_formed_sse(data_dir):
    up = LyingUpstream(b'{"prompt_tokens": 5, "completion_tokens": 4}')
    async with serve(up.app()) as base:
        async with gateway(_cfg(base), data_dir) as g:
            key = g.key()

            async def broken_commit(ev, reservation=None):
                raise RuntimeError("ledger on fire")

            g.metering.commit = broken_commit
            st, h, raw = await g.post("/v1/chat/completions", {"model": "liar", "messages": MSGS, "stream": True}, key)
            assert st == 200 and b"HTTP/1.1" not in raw  # never a second response inside the body
            events = [e for e in raw.split(b"\n\n") if e]
            assert events[-1] == b"data: [DONE]"
            err = orjson.loads(events[-2][6:])["error"]
            assert err["code"] == "internal_error" and "ledger on fire" in err["message"]
            assert b"x-tokenomy" not in raw  # no cost claimed for an unrecorded request
