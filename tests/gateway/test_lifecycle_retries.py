"""Dispatch retries (issue 14 §8): one classifier for unary and stream attempts, fallbacks first,
then the same deployment again after an exponential, jittered backoff (connect errors, 429 with
its Retry-After, 5xx before the first byte) within max_attempts and the retry budget.

Real upstreams on 127.0.0.1; the backoff's sleep and random are injected (nothing waits, the
delays are asserted as numbers)."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest
from aiohttp import web

from gw_helpers import FAST_TIMEOUTS, Stub, gateway, list_dep, serve, stubs

from tokenomy.gateway.health import RetryBudget
from tokenomy.gateway.lifecycle.dispatch import Attempts
from tokenomy.gateway.lifecycle.retry import RetryPolicy, classify_exception, classify_status
from tokenomy.gateway.lifecycle.state import Failure

MSGS = [{"role": "user", "content": "hello there"}]


class _Dep:
    """Just what Attempts reads of a deployment: its name and breaker."""

    def __init__(self, name: str):
        from tokenomy.gateway.health import Breaker

        self.name = name
        self.breaker = Breaker(100, 60.0)


def _policy(delays: list[float], **kw) -> RetryPolicy:
    async def sleep(s: float) -> None:
        delays.append(s)

    return RetryPolicy(sleep=sleep, random=lambda: 1.0, **kw)


async def test_schedule_fallbacks_first_then_same_deployment_with_exponential_backoff():
    a, b = _Dep("a"), _Dep("b")
    delays: list[float] = []
    plan = Attempts([a, b], _policy(delays, max_attempts=5, backoff_base_s=0.1, backoff_max_s=0.3),
                    RetryBudget(0.0, 10))
    got = []
    for f in (Failure("http_5xx", "x", True), Failure("connection", "x", True), Failure("http_5xx", "x", True),
              Failure("http_5xx", "x", True), Failure("http_5xx", "x", True)):
        d = await plan.next()
        got.append(d.name)
        plan.failed(d, f)
    assert got == ["a", "b", "a", "b", "a"]
    # a: 1st failure -> 0.1, b: 1st -> 0.1, a: 2nd -> 0.2, b: 2nd (cut by max_attempts 5: never slept)
    assert delays == [0.1, 0.1, 0.2]
    assert await plan.next() is None  # max_attempts reached


async def test_schedule_retry_after_timeout_garbage_and_budget():
    a = _Dep("a")
    delays: list[float] = []
    plan = Attempts([a], _policy(delays, max_attempts=4, retry_after_max_s=2.0), RetryBudget(0.0, 10))
    d = await plan.next()
    plan.failed(d, classify_status(429, b"slow down", "1.5"))
    assert (await plan.next()) is a and delays == [1.5]  # the upstream's Retry-After, honoured
    plan.failed(a, classify_status(429, b"slow down", "30"))
    assert await plan.next() is None  # 30 s > retry_after_max_s: the client gets the 429 instead
    for f in (Failure("timeout", "x", False), Failure("garbage", "x", False)):
        p = Attempts([a], _policy([]), RetryBudget(0.0, 10))
        p.failed(await p.next(), f)
        assert await p.next() is None  # never the same deployment again
    empty = RetryBudget(0.0, 0)  # no budget: the first attempt only
    p = Attempts([a, _Dep("b")], _policy([]), empty)
    p.failed(await p.next(), Failure("http_5xx", "x", True))
    assert await p.next() is None


def test_jitter_is_within_half_to_full_backoff():
    lo = RetryPolicy(random=lambda: 0.0, backoff_base_s=0.2).delay_s(Failure("http_5xx", "", True), 2)
    hi = RetryPolicy(random=lambda: 1.0, backoff_base_s=0.2).delay_s(Failure("http_5xx", "", True), 2)
    assert (lo, hi) == (pytest.approx(0.2), pytest.approx(0.4))


def test_classifier_kinds():
    assert classify_status(503, b"", None).kind == "http_5xx"
    assert classify_status(400, b"", None) is None and classify_status(200, b"", None) is None
    assert classify_status(429, b"", "Wed, 21 Oct 2015 07:28:00 GMT").retry_after_s is None
    assert classify_exception(ConnectionRefusedError(), "t").retry_same
    assert not classify_exception(TimeoutError(), "t").retry_same
    assert classify_exception(ValueError(), "t") is None


class FlakyUpstream:
    """An OpenAI-compatible upstream failing a fixed 30 % of the requests sent to it: the first
    delivery of request n (the number in its message) fails when n % 10 in {0, 3, 6}, with a
    500, a 429 or a dropped connection in turn; a second delivery of the same request succeeds
    (a transient fault). 30 % of requests (not of calls): at the default retry budget (10 retries
    of burst + 0.2 per request = 22 over 60 requests) 18 retries fit; 30 % of *calls* would need
    26 and would exhaust it, which is the budget doing its job against an outage."""

    def __init__(self) -> None:
        self.calls = 0
        self.failed = 0
        self.seen: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = orjson.loads(await request.read())
        tag = body["messages"][-1]["content"]
        n = int(tag.rsplit(" ", 1)[1])
        if n % 10 in (0, 3, 6) and tag not in self.seen:
            self.seen.add(tag)
            self.failed += 1
            kind = self.failed % 3
            if kind == 0:
                return web.json_response({"error": {"message": "overloaded"}}, status=500)
            if kind == 1:
                return web.json_response({"error": {"message": "slow down"}}, status=429,
                                         headers={"Retry-After": "0"})
            request.transport.close()  # connection dropped before any answer
            return web.Response()
        usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
        if not body.get("stream"):
            return web.json_response({"id": "x", "object": "chat.completion", "created": 1, "model": body["model"],
                                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"},
                                                   "finish_reason": "stop"}], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in (" hi", " there"):
            await resp.write(b"data: " + orjson.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1,
                                                       "model": body["model"],
                                                       "choices": [{"index": 0, "delta": {"content": piece}}]}) + b"\n\n")
        await resp.write(b"data: " + orjson.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1,
                                                   "model": body["model"], "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.mark.parametrize("stream", [False, True])
async def test_one_deployment_failing_30_percent_passes_at_most_1_of_60_errors(data_dir, stream):
    up = FlakyUpstream()
    async with serve(up.app()) as base:
        cfg = {"deployments": [list_dep("only", base + "/v1", 1.0, 1.0)], "timeouts": FAST_TIMEOUTS}
        async with gateway(cfg, data_dir) as g:  # the default retry policy
            delays: list[float] = []

            async def no_wait(s: float) -> None:
                delays.append(s)

            g.gw.retry_policy.sleep = no_wait
            key = g.key()
            errors = 0
            for n in range(60):
                msgs = [{"role": "user", "content": f"request {n}"}]
                st, _, body = await g.post("/v1/chat/completions",
                                           {"model": "only", "messages": msgs, "stream": stream}, key)
                if st != 200 or (stream and not body.endswith(b"data: [DONE]\n\n")):
                    errors += 1
            assert up.failed == 18 and up.calls == 78  # 30 % of the 60 requests failed once, retried once
            assert errors <= 1, errors  # the goal (issue 14 §8); with this pattern: none at all
            assert errors == 0
            # 500s (6) and dropped connections (6; the lean unary client re-sends a request whose pooled
            # connection died unanswered by itself) back off; a 429 with Retry-After: 0 is retried at once
            assert 6 <= len(delays) <= 12 and all(0.025 <= s <= 0.05 for s in delays)
            evs = g.metering.events()
            assert len(evs) == 60 and all(e.status == "ok" for e in evs)
            assert 12 <= sum(len(e.extra.get("attempts", ())) for e in evs) <= 18  # as for the delays


async def test_connect_errors_retry_the_same_deployment_then_give_up(data_dir):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = {"deployments": [list_dep("gone", f"http://127.0.0.1:{port}/v1", 1.0, 1.0)], "timeouts": FAST_TIMEOUTS,
           "retry": {"max_attempts": 3, "backoff_base_s": 0.5, "backoff_max_s": 0.8}}
    async with gateway(cfg, data_dir) as g:
        delays: list[float] = []

        async def no_wait(x: float) -> None:
            delays.append(x)

        g.gw.retry_policy.sleep = no_wait
        g.gw.retry_policy.random = lambda: 1.0
        st, _, body = await g.post("/v1/chat/completions", {"model": "gone", "messages": MSGS}, g.key())
        assert st == 502 and body["error"]["code"] == "upstream_error"
        assert delays == [0.5, 0.8]  # 0.5 x 2^0, then 0.5 x 2^1 capped at 0.8
        ev = g.metering.events()[0]
        assert [a["error"] for a in ev.extra["attempts"]] == ["connection"] * 3


async def test_timeouts_are_not_retried_on_the_same_deployment(data_dir):
    async with stubs(Stub(mode="hang")) as (s,):
        cfg = {"deployments": [list_dep("slow", s.base_url, 1.0, 1.0)],
               "timeouts": {"connect_s": 1.0, "first_byte_s": 0.3, "total_s": 0.3}}
        async with gateway(cfg, data_dir) as g:
            st, _, body = await g.post("/v1/chat/completions", {"model": "slow", "messages": MSGS}, g.key())
            assert st == 504 and s.calls == 1


async def test_stream_5xx_before_first_byte_is_retried(data_dir):
    async with stubs(Stub(mode="500")) as (s,):
        cfg = {"deployments": [list_dep("only", s.base_url, 1.0, 1.0)], "timeouts": FAST_TIMEOUTS}
        async with gateway(cfg, data_dir) as g:
            async def no_wait(x: float) -> None:
                s.mode = "ok"  # recovers while the gateway backs off

            g.gw.retry_policy.sleep = no_wait
            st, h, raw = await g.post("/v1/chat/completions", {"model": "only", "messages": MSGS, "stream": True},
                                      g.key())
            assert st == 200 and raw.endswith(b"data: [DONE]\n\n") and s.calls == 2
            await asyncio.sleep(0)
            ev = g.metering.events()[0]
            assert ev.status == "ok" and [a["error"] for a in ev.extra["attempts"]] == ["http_5xx"]
