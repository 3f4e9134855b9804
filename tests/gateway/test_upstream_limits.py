"""Upstream answers are untrusted: a body over server.max_upstream_response_bytes, a gzip bomb
(inflated incrementally, never whole) and an oversized stream event are refused as a clean 502
naming the limit, on the lean client (plain http) and on aiohttp's client (https and the rest),
with memory bounded by the limit, not by the bomb."""

from __future__ import annotations

import tracemalloc
import zlib

import orjson
import pytest
from aiohttp import web

from gw_helpers import FAST_TIMEOUTS, gateway, list_dep, serve

MSGS = [{"role": "user", "content": "hello"}]
LIMIT = 1 << 20  # 1 MiB
BOMB_DECODED = 64 << 20  # 64 MiB of zeros: ~64 KiB gzipped


def _gzip_bomb() -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1 << 20)
    return b"".join([z.compress(zeros) for _ in range(BOMB_DECODED >> 20)] + [z.flush()])


BOMB = _gzip_bomb()


def _upstream(kind: str) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        if kind == "gzip-bomb":
            return web.Response(body=BOMB, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        if kind == "huge":
            return web.Response(body=b"[" + b"0," * LIMIT + b"0]", content_type="application/json")
        if kind == "huge-chunked":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(4):
                await resp.write(b" " * (LIMIT // 2))
            await resp.write_eof()
            return resp
        if kind == "huge-event":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: " + b"x" * (2 << 20) + b"\n\n")
            await resp.write_eof()
            return resp
        raise AssertionError(kind)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def _cfg(base_url: str) -> dict:
    return {"deployments": [list_dep("d1", base_url, 3.0, 15.0)], "model_groups": {"m": {"deployments": ["d1"]}},
            "server": {"max_upstream_response_bytes": LIMIT}, "timeouts": FAST_TIMEOUTS,
            "retry": {"max_attempts": 1}}


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
@pytest.mark.parametrize("kind", ["gzip-bomb", "huge", "huge-chunked"])
async def test_an_oversized_or_bomb_answer_is_a_clean_502(kind, client, data_dir):
    async with serve(_upstream(kind)) as up, gateway(_cfg(up + "/v1"), data_dir) as g:
        if client == "aiohttp":
            async def declines(*_a, **_kw):  # as for an https:// upstream: aiohttp's ClientSession reads it
                return None

            g.gw.lean.post = declines
        key = g.key("t1")
        tracemalloc.start()
        try:
            st, _, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert st == 502, body
        assert f"larger than {LIMIT} bytes" in body["error"]["message"]
        # the bomb decodes to 64 MiB; what the gateway held stayed near the 1 MiB limit
        assert peak < 16 * LIMIT
        ev = g.metering.events("t1")
        assert [e.status for e in ev] == ["upstream_error"]


async def test_an_oversized_stream_event_is_a_clean_502(data_dir):
    async with serve(_upstream("huge-event")) as up, gateway(_cfg(up + "/v1"), data_dir) as g:
        key = g.key("t1")
        st, _, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS, "stream": True}, key)
        assert st == 502, body
        assert "larger than" in orjson.dumps(body).decode()
