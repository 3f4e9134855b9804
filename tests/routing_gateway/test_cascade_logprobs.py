"""cascade-logprobs in the gateway: the weak call asks the emulator (an OpenAI-wire upstream) for
token logprobs, scores them, records them in extra.route, and strips them from the client's
answer unless it asked; an upstream that refuses logprobs is retried without; escalate_share
keeps the escalated share near its target over a stream of requests. Counts, never timings."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from aiohttp import web

from gw_helpers import gateway, list_dep, serve
from rg_helpers import chat, read_sse
from tokenomy.config import parse_config
from tokenomy.errors import ConfigError
from tokenomy.routing.cascade import load_verifier, logprob_stats


def _emu(name: str, usd_in: float) -> dict:
    return {"name": name, "model": "m", "emulate": {"time_scale": 0.001},
            "pricing": {"list": {"input": usd_in, "output": usd_in * 4}}}


def _cfg(**cascade) -> dict:
    return {"deployments": [_emu("weak@emu", 0.1), _emu("strong@emu", 1.0)],
            "model_groups": {"weak": {"deployments": ["weak@emu"]}, "strong": {"deployments": ["strong@emu"]}},
            "routing_groups": {"auto": {"candidates": ["weak", "strong"], "policy": "cascade",
                                        "cascade": {"verifier": "cascade-logprobs", **cascade}}}}


async def _direct(g, path: str, body: dict) -> dict:
    """Ask the weak emulator itself (what the gateway should have received)."""
    base = next(d for d in g.gw.deployments.values() if d.name == "weak@emu").base_url
    async with aiohttp.ClientSession() as s:
        async with s.post(base + path, json={**body, "model": "m"}) as r:
            assert r.status == 200
            return await r.json()


async def test_weak_answer_scored_with_emulator_logprobs_and_stripped(data_dir):
    async with gateway(_cfg(threshold=0.0), data_dir) as g:   # threshold 0: the weak answer is served
        prompt = "Explain why the sky is blue in two sentences."
        st, h, body = await g.post("/v1/chat/completions", chat(prompt, max_tokens=30), g.key())
        assert st == 200, body
        assert h["x-tokenomy-cascade-served-by"] == "weak"
        assert body["choices"][0]["logprobs"] is None                   # the client did not ask
        # the emulator's own answer to the same request with the ask the gateway adds
        direct = await _direct(g, "/chat/completions", {**chat(prompt, max_tokens=30), "logprobs": True,
                                                         "top_logprobs": 5})
        assert direct["choices"][0]["message"]["content"] == body["choices"][0]["message"]["content"]
        stats = logprob_stats(direct["choices"][0]["logprobs"])
        assert stats.n_tokens == body["usage"]["completion_tokens"] > 0 and stats.mean_entropy_nats > 0
        ev = {e.id: e for e in g.metering.events("t1")}[h["x-tokenomy-request-id"]]
        assert ev.extra["route"]["logprobs"] == stats.to_json()
        assert ev.extra["route"]["verifier"] == "cascade-logprobs"
        want = load_verifier("cascade-logprobs").score_response(prompt, body["choices"][0]["message"]["content"], stats)
        assert ev.extra["route"]["score"] == pytest.approx(want)
        assert float(h["x-tokenomy-cascade-score"]) == pytest.approx(want, abs=1e-4)
        assert h["x-tokenomy-cascade-logprobs"].startswith(f"n={stats.n_tokens}; mean=")
        # the logprobs moved the score away from the text-only one
        text_only = load_verifier("cascade-default").score(prompt, body["choices"][0]["message"]["content"])
        assert abs(want - text_only) > 1e-3

        # the client asked itself: its own settings are sent and it gets them back
        st, h, body = await g.post("/v1/chat/completions", chat(prompt, max_tokens=30, logprobs=True, top_logprobs=2),
                                   g.key())
        lp = body["choices"][0]["logprobs"]["content"]
        assert st == 200 and len(lp) == body["usage"]["completion_tokens"] and all(len(t["top_logprobs"]) == 2 for t in lp)
        ev = {e.id: e for e in g.metering.events("t1")}[h["x-tokenomy-request-id"]]
        assert ev.extra["route"]["logprobs"] == logprob_stats(body["choices"][0]["logprobs"]).to_json()

        # legacy completions: `logprobs: 5`
        st, h, body = await g.post("/v1/completions", {"model": "auto", "prompt": "Once upon a time", "max_tokens": 12},
                                   g.key())
        assert st == 200 and body["choices"][0]["logprobs"] is None
        ev = {e.id: e for e in g.metering.events("t1")}[h["x-tokenomy-request-id"]]
        assert ev.extra["route"]["logprobs"]["n"] == body["usage"]["completion_tokens"] == 12


async def test_streamed_cascade_answer_carries_logprobs_only_when_asked(data_dir):
    async with gateway(_cfg(threshold=0.0), data_dir) as g:
        st, h, text = await read_sse(g, chat("Name three rivers.", stream=True), g.key())
        assert st == 200 and text.endswith("data: [DONE]\n\n") and '"logprobs"' not in text
        ev = {e.id: e for e in g.metering.events("t1")}[h["x-tokenomy-request-id"]]
        assert ev.extra["route"]["logprobs"]["n"] == ev.output_tokens > 0
        st, h, text = await read_sse(g, chat("Name three rivers.", stream=True, logprobs=True), g.key())
        first = orjson.loads(text.split("data: ", 2)[1].split("\n\n")[0])
        assert len(first["choices"][0]["logprobs"]["content"]) == ev.output_tokens


def _refusing_upstream(seen: list[dict]):
    """An OpenAI-compatible upstream without logprob support (400 when asked, like some servers)."""
    async def handler(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        seen.append(body)
        if "logprobs" in body:
            return web.json_response({"error": {"message": "logprobs is not supported by this server",
                                                "type": "invalid_request_error"}}, status=400)
        return web.json_response({"id": "x", "object": "chat.completion", "created": 1, "model": body["model"],
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return serve(app)


async def test_upstream_refusing_logprobs_is_retried_without_and_not_asked_again(data_dir):
    seen: list[dict] = []
    async with _refusing_upstream(seen) as url:
        cfg = _cfg(threshold=0.0)
        cfg["deployments"][0] = list_dep("weak@a", url + "/v1", 1.0, 2.0)
        cfg["model_groups"]["weak"] = {"deployments": ["weak@a"]}
        async with gateway(cfg, data_dir) as g:
            prompt = "What is the capital of France?"
            st, h, body = await g.post("/v1/chat/completions", chat(prompt), g.key())
            assert st == 200 and body["choices"][0]["message"]["content"] == "Paris."
            assert [("logprobs" in b, b.get("top_logprobs")) for b in seen] == [(True, 5), (False, None)]
            ev = {e.id: e for e in g.metering.events("t1")}[h["x-tokenomy-request-id"]]
            assert ev.extra["route"]["logprobs"] is None and ev.extra["route"]["logprobs_refused"] == "weak@a"
            assert ev.extra["route"]["score"] == pytest.approx(load_verifier("cascade-default").score(prompt, "Paris."))
            assert "x-tokenomy-cascade-logprobs" not in h
            assert [e.id for e in g.metering.events("t1")] == [h["x-tokenomy-request-id"]]  # the 400 is not billed
            st, h, _ = await g.post("/v1/chat/completions", chat(prompt), g.key())
            assert st == 200 and len(seen) == 3 and "logprobs" not in seen[2]   # remembered: not asked again
            ev = {e.id: e for e in g.metering.events("t1")}[h["x-tokenomy-request-id"]]
            assert "logprobs_refused" not in ev.extra["route"]


def test_only_openai_wire_deployments_are_asked():
    from tokenomy.gateway.lifecycle.state import OpenAIExtra

    class D:
        def __init__(self, name, adapter):
            self.name, self.adapter = name, adapter

    class Adapter:
        def __init__(self, passthrough):
            self.passthrough = passthrough

    ask = OpenAIExtra({"logprobs": True, "top_logprobs": 5}, {"refused"})
    body = {"messages": []}
    ask.apply(body, D("openai", None))
    assert body == {"messages": [], "logprobs": True, "top_logprobs": 5}
    ask.apply(body, D("anthropic", Adapter(False)))       # a translated provider: the fields are taken off
    assert body == {"messages": []}
    ask.apply(body, D("azure", Adapter(True)))
    assert body["logprobs"] is True
    ask.apply(body, D("refused", None))
    assert "logprobs" not in body


def test_escalate_share_config():
    cfg = _cfg(escalate_share=0.3)
    assert parse_config(cfg, "<t>").routing_groups["auto"].cascade.escalate_share == 0.3
    with pytest.raises(ConfigError, match="threshold or escalate_share"):
        parse_config(_cfg(escalate_share=0.3, threshold=0.5), "<t>")
    with pytest.raises(ConfigError):
        parse_config(_cfg(escalate_share=1.5), "<t>")
    assert parse_config(_cfg(), "<t>").routing_groups["auto"].cascade_spec.threshold == 0.5


TARGET = 0.3
N = 400
WARMUP = 80


async def test_escalate_share_converges_on_a_stream_of_requests(data_dir):
    cfg = _cfg(escalate_share=TARGET)
    cfg["routing_groups"]["auto"]["share_half_life"] = 200
    async with gateway(cfg, data_dir) as g:
        route = g.gw.routes["auto"]
        assert route.kind == "escalate_share" and route.threshold == 0.5   # empty histogram: the midpoint
        key = g.key()
        escalated, thresholds = [], set()
        async with aiohttp.ClientSession() as s:
            for i in range(N):
                body = chat(f"Request {i}: summarise item {i * 7919 % 1000} of the catalogue.",
                            max_tokens=2 + (i * 37) % 90)  # varied lengths: spread-out scores
                async with s.post(g.url + "/v1/chat/completions", data=orjson.dumps(body),
                                  headers={"Authorization": f"Bearer {key}"}) as r:
                    assert r.status == 200
                    escalated.append(r.headers["x-tokenomy-cascade-escalated"] == "true")
                    thresholds.add(r.headers["x-tokenomy-cascade-threshold"])
        late = escalated[WARMUP:]
        share = sum(late) / len(late)
        assert abs(share - TARGET) <= 0.05, share  # measured: 0.322 over the 320 late requests
        assert len(thresholds) > 3                       # the cut moved with the traffic
        assert route.share.observed == N
        events = [e for e in g.metering.events("t1", limit=10 * N) if "route" in e.extra]
        assert len(events) == N and all(e.extra["route"]["escalate_share"] == TARGET for e in events)
        assert all(e.extra["route"]["logprobs"]["n"] > 0 for e in events)
        # a decision used the cut in force when it was made: escalated iff score < its threshold
        assert all(e.extra["route"]["escalated"] == (e.extra["route"]["score"] < e.extra["route"]["threshold"])
                   for e in events)
        st, _, models = await g.get("/v1/models", key)
        auto = next(m for m in models["data"] if m["id"] == "auto")
        assert st == 200 and auto["threshold_kind"] == "escalate_share" and auto["threshold"] == route.threshold


def test_escalate_share_is_shared_through_redis_like_strong_share():
    """With Redis counters the cascade's histogram gets a ShareSync (same key scheme as strong_share);
    every observed answer counts towards the next sync (no loop here: nothing is started)."""
    from tokenomy.gateway.routing import RouteRuntime

    cfg = _cfg(escalate_share=TARGET)
    cfg["routing_groups"]["auto"]["share_sync_every"] = 4
    rg = parse_config(cfg, "<t>").routing_groups["auto"]

    class G:
        def __init__(self, alias):
            self.alias = alias

    rr = RouteRuntime("auto", rg, {"weak": G("weak"), "strong": G("strong")}, ("redis://127.0.0.1:1/0", "pfx:"))
    assert rr.share_sync is not None and rr.share_sync.key == "pfx:share:auto" and rr.share_sync.every == 4
    for s in [0.9] * 10 + [0.1] * 6:   # 16 answers: one refresh of the cut
        rr.observe_escalation(s)
    assert rr.share_sync._since == 16 and rr.share.observed == 16
    # 6 of 16 answers are poor (37.5 % > 30 %): the cut sits between the two scores
    assert 0.1 < rr.threshold <= 0.9
