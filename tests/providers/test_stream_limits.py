"""Size limits on translated provider streams (issue 14 §5): a provider's error body in answer
to a stream request is read with the gateway's response cap (it used to be read whole), and one
stream event without an end is refused at MAX_EVENT_BYTES instead of being buffered on. Both end
as the gateway's own errors: a 502 naming the limit before the first byte, an error event then
[DONE] after it; the gateway's memory stays bounded either way."""

from __future__ import annotations

import resource

import orjson
import pytest
from aiohttp import web

from tests.gateway.conftest import gateway
from tokenomy.gateway.upstream import MAX_EVENT_BYTES

from .fakes import running

MB = 1 << 20


class HugeProvider:
    """Speaks Anthropic's /v1/messages only as far as these cases need."""

    def __init__(self) -> None:
        self.mode = "error-body"
        self.app = web.Application()
        self.app.router.add_post("/v1/messages", self.messages)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        if self.mode == "error-body":  # a 500 whose body never ends (chunked, no content-length)
            resp = web.StreamResponse(status=500, headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            await resp.write(b'{"type":"error","error":{"type":"api_error","message":"')
            for _ in range(80):
                await resp.write(b"x" * MB)
            return resp
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                       "model": "claude", "content": [], "stop_reason": None,
                                                       "usage": {"input_tokens": 5, "output_tokens": 1}}}
        await resp.write(b"event: message_start\ndata: " + orjson.dumps(start) + b"\n\n")
        await resp.write(b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                         b'"content_block":{"type":"text","text":""}}\n\n')
        await resp.write(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                         b'"delta":{"type":"text_delta","text":"Hi"}}\n\n')
        await resp.write(b"event: content_block_delta\ndata: ")  # then an event that never ends
        for _ in range(40):
            await resp.write(b"y" * MB)
        return resp


@pytest.fixture
async def huge(monkeypatch):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
    async with running(HugeProvider()) as p:
        yield p


def _cfg(url: str) -> dict:
    claude = {"name": "claude", "provider": "anthropic", "base_url": url, "api_key_env": "TEST_ANTHROPIC_KEY",
              "model": "claude-sonnet-4-6", "pricing": {"list": {"input": 3.0, "output": 15.0}}}
    return {"deployments": [claude], "model_groups": {"m": {"deployments": ["claude"]}},
            "server": {"max_upstream_response_bytes": 4 * MB},
            "timeouts": {"connect_s": 2.0, "first_byte_s": 20.0, "total_s": 60.0}}


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "stream": True}


async def test_a_streams_endless_error_body_is_capped(huge, tmp_path):
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with gateway(_cfg(huge.url), tmp_path / "ledger") as g:
        st, _, body = await g.post("/v1/chat/completions", BODY, g.key())
        assert st == 502, body
        assert body["error"]["code"] == "upstream_error" and "larger than" in body["error"]["message"]
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grown_mb < 60  # 80 MiB sent; read no further than the 4 MiB cap (+ allocator noise)


async def test_an_endless_stream_event_ends_the_stream_well_formed(huge, tmp_path):
    huge.mode = "endless-event"
    async with gateway(_cfg(huge.url), tmp_path / "ledger") as g:
        st, h, raw = await g.post("/v1/chat/completions", BODY, g.key())
        assert st == 200
        events = [e for e in raw.split(b"\n\n") if e.startswith(b"data: ")]
        assert events[-1] == b"data: [DONE]"
        err = orjson.loads(events[-2][6:])
        assert "error" in err and f"larger than {MAX_EVENT_BYTES} bytes" in err["error"]["message"]
        text = "".join((orjson.loads(e[6:]).get("choices") or [{}])[0].get("delta", {}).get("content") or ""
                       for e in events[:-2])
        assert text == "Hi"  # what came before the oversized event was relayed
        ev = max(g.metering.events(), key=lambda e: e.ts)
        assert ev.status == "upstream_error" and ev.input_tokens > 0  # metered once, as broken
