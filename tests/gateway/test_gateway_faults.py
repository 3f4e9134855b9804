"""Fallbacks, circuit breakers, streaming failover before the first byte, upstream garbage."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import orjson
import pytest

from gw_helpers import ADMIN_KEY, FAST_TIMEOUTS, Stub, gateway, list_dep, stubs

MSGS = [{"role": "user", "content": "hello there"}]


def _pair(bad_url: str, good_url: str, **extra) -> dict:
    # "bad" is cheaper, so the cost policy always tries it first.
    return {"deployments": [list_dep("bad", bad_url, 0.1, 0.1), list_dep("good", good_url, 1.0, 1.0)],
            "model_groups": {"m": {"deployments": ["bad", "good"]}}, "timeouts": FAST_TIMEOUTS, **extra}


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("mode,kind", [("500", "http_5xx"), ("429", "http_429"), ("hang", "timeout"),
                                       ("refused", "connection"), ("garbage", "garbage")])
@pytest.mark.parametrize("stream", [False, True])
async def test_fallback_to_next_deployment(data_dir, mode, kind, stream):
    async with stubs(Stub(mode=mode if mode != "refused" else "ok"), Stub(out_tokens=4)) as (bad, good):
        bad_url = f"http://127.0.0.1:{_closed_port()}/v1" if mode == "refused" else bad.base_url
        async with gateway(_pair(bad_url, good.base_url), data_dir) as g:
            key = g.key()
            st, h, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS, "stream": stream}, key)
            assert st == 200, body
            assert h["x-tokenomy-deployment"] == "good"
            assert good.calls == 1
            ev = g.metering.events()[0]
            assert ev.status == "ok" and ev.deployment == "good" and ev.output_tokens == 4
            assert [a["deployment"] for a in ev.extra["attempts"]] == ["bad"]
            assert ev.extra["attempts"][0]["error"] == kind
            _, _, metrics = await g.get("/metrics", ADMIN_KEY)
            assert f'tokenomy_upstream_errors_total{{deployment="bad",kind="{kind}"}} 1.0' in metrics


async def test_breaker_opens_then_half_open_probe_closes_it(data_dir):
    async with stubs(Stub(mode="500"), Stub()) as (bad, good):
        cfg = _pair(bad.base_url, good.base_url, breaker={"failure_threshold": 2, "cooldown_s": 0.3})
        async with gateway(cfg, data_dir) as g:
            key = g.key()
            for _ in range(4):
                st, h, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
                assert st == 200 and h["x-tokenomy-deployment"] == "good"
            assert bad.calls == 2  # open after 2 consecutive failures: not tried any more
            _, _, health = await g.get("/health", ADMIN_KEY)
            assert health["deployments"]["bad"]["breaker"] == "open"
            _, _, metrics = await g.get("/metrics", ADMIN_KEY)
            assert 'tokenomy_breaker_state{deployment="bad",state="open"} 2.0' in metrics
            bad.mode = "ok"  # the deployment recovers
            await asyncio.sleep(0.35)
            st, h, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
            assert h["x-tokenomy-deployment"] == "bad" and bad.calls == 3  # the half-open probe
            _, _, health = await g.get("/health", ADMIN_KEY)
            assert health["deployments"]["bad"]["breaker"] == "closed"


async def test_retry_budget_bounds_attempts(data_dir):
    async with stubs(Stub(mode="500"), Stub(mode="500"), Stub(mode="500")) as (a, b, c):
        cfg = {"deployments": [list_dep(n, s.base_url, i + 1.0, 1.0) for i, (n, s) in enumerate(zip("abc", (a, b, c)))],
               "model_groups": {"m": {"deployments": ["a", "b", "c"]}}, "retry": {"max_attempts": 2}}
        async with gateway(cfg, data_dir) as g:
            st, h, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, g.key())
            assert st == 502 and "HTTP 500" in body["error"]["message"]
            assert (a.calls, b.calls, c.calls) == (1, 1, 0)
            ev = g.metering.events()[0]
            assert ev.status == "upstream_error" and ev.http_status == 502 and ev.cost_usd == 0


async def test_stream_does_not_fail_over_after_first_byte(data_dir):
    async with stubs(Stub(mode="broken-stream", out_tokens=10), Stub()) as (bad, good):
        async with gateway(_pair(bad.base_url, good.base_url), data_dir) as g:
            key = g.key()
            async with aiohttp.ClientSession() as s:
                async with s.post(g.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                  json={"model": "m", "messages": MSGS, "stream": True}) as r:
                    assert r.status == 200 and r.headers["x-tokenomy-deployment"] == "bad"
                    raw = await r.read()
            assert good.calls == 0  # bytes had reached the client: no silent switch
            events = [e for e in raw.split(b"\n\n") if e and not e.startswith(b":")]
            # a well-formed SSE ending: the error event, then the terminator (never a 2nd HTTP response)
            assert events[-1] == b"data: [DONE]" and b"HTTP/1.1" not in raw
            err = orjson.loads(events[-2][6:])
            assert "upstream stream broken" in err["error"]["message"]
            content = [orjson.loads(e[6:]) for e in events[:-2]]
            assert len(content) == 3
            ev = g.metering.events()[0]
            # metered: the 3 tokens that were delivered, estimated (no usage arrived)
            assert ev.status == "upstream_error" and ev.output_tokens == 3 and ev.estimated
            assert ev.cost_usd > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_garbage_single_deployment_is_502_and_metered(data_dir, stream):
    async with stubs(Stub(mode="garbage")) as (s,):
        cfg = {"deployments": [list_dep("only", s.base_url, 1.0, 1.0)], "timeouts": FAST_TIMEOUTS}
        async with gateway(cfg, data_dir) as g:
            st, h, body = await g.post("/v1/chat/completions", {"model": "only", "messages": MSGS, "stream": stream},
                                       g.key())
            assert st == 502
            assert "invalid JSON" in body["error"]["message"] and body["error"]["code"] == "upstream_garbage"
            ev = g.metering.events()[0]
            assert ev.id == h["x-tokenomy-request-id"]
            assert ev.status == "upstream_error" and ev.http_status == 502 and ev.output_tokens == 0


async def test_all_breakers_open_is_503(data_dir):
    async with stubs(Stub(mode="500")) as (s,):
        cfg = {"deployments": [list_dep("only", s.base_url, 1.0, 1.0)],
               "breaker": {"failure_threshold": 1, "cooldown_s": 60}}
        async with gateway(cfg, data_dir) as g:
            key = g.key()
            assert (await g.post("/v1/chat/completions", {"model": "only", "messages": MSGS}, key))[0] == 502
            st, _, body = await g.post("/v1/chat/completions", {"model": "only", "messages": MSGS}, key)
            assert st == 503 and "circuit breakers open" in body["error"]["message"]
            assert s.calls == 1


async def test_all_upstreams_rate_limited_is_429_with_retry_after(data_dir):
    async with stubs(Stub(mode="429"), Stub(mode="429")) as (a, b):
        async with gateway(_pair(a.base_url, b.base_url), data_dir) as g:
            for stream in (False, True):
                st, h, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS, "stream": stream},
                                           g.key())
                assert st == 429 and body["error"]["code"] == "upstream_rate_limited"
                assert h["Retry-After"] == "1" and "rate limited upstream" in body["error"]["message"]
            # per request: a, the fallback b, then a again after its backoff (max_attempts 3)
            assert (a.calls, b.calls) == (4, 2)
