"""The lean HTTP/1.1 front (gateway/fastpath.py): what it answers itself, what it hands to aiohttp,
and that the gateway's guarantees hold on it (event committed before the answer, drain on shutdown)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web

from gw_helpers import Stub, gateway, list_dep, stubs
from tokenomy.gateway.fastpath import parse_head, serialize

MSGS = [{"role": "user", "content": "Say hello to the world in a friendly way"}]


@pytest.fixture(autouse=True)
def _fastpath_on(monkeypatch):
    monkeypatch.delenv("TOKENOMY_GATEWAY_FASTPATH", raising=False)


def _cfg(stub: Stub) -> dict:
    return {"deployments": [list_dep("d1", stub.base_url, 3.0, 15.0)], "model_groups": {"m": {"deployments": ["d1"]}}}


def _req(key: str | None, body: dict | bytes, path: str = "/v1/chat/completions", extra: str = "") -> bytes:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: gw\r\n{auth}Content-Type: application/json\r\n{extra}"
            f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response off a raw connection (Content-Length or chunked body)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        assert headers.get("transfer-encoding") == "chunked", headers
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    return status, headers, body


async def _open(url: str):
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def test_hot_route_is_answered_by_the_front_after_the_commit(data_dir):
    async with stubs(Stub(out_tokens=7)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        st, h, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
        assert st == 200, body
        assert body["usage"]["completion_tokens"] == 7
        assert h["Content-Type"] == "application/json"
        assert h["x-tokenomy-deployment"] == "d1"
        assert "Date" in h and h["Server"].startswith("Python/")
        assert g.front.answered == 1 and g.front.handovers == 0
        events = g.metering.events("t1")  # committed before the answer was written
        assert [e.id for e in events] == [h["x-tokenomy-request-id"]]
        assert str(events[0].cost_usd.normalize()) == h["x-tokenomy-cost-usd"]


async def test_completions_and_errors_stay_on_the_front(data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        st, _, body = await g.post("/v1/completions", {"model": "m", "prompt": "hi there"}, key)
        assert st == 200 and body["choices"][0]["text"]
        st, h, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, None)
        assert st == 401 and body["error"]["code"] == "missing_api_key"
        assert h["Content-Type"] == "application/json"
        st, _, body = await g.post("/v1/chat/completions", b"{nope", key)
        assert st == 400 and body["error"]["code"] == "invalid_json"
        st, h, body = await g.post("/v1/chat/completions", {"model": "zzz", "messages": MSGS}, key)
        assert st == 404 and body["error"]["code"] == "model_not_found"
        assert h["x-tokenomy-request-id"].startswith("req_")
        assert g.front.answered == 4 and g.front.handovers == 0
        assert len(g.metering.events("t1")) == 1


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(data_dir):
    async with stubs(Stub(out_tokens=3)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        reader, writer = await _open(g.url)
        try:
            writer.write(_req(key, {"model": "m", "messages": MSGS, "max_tokens": 1})
                         + _req(key, {"model": "m", "messages": MSGS, "max_tokens": 2}))
            first = await _response(reader)
            second = await _response(reader)
            writer.write(_req(key, {"model": "m", "messages": MSGS, "max_tokens": 3}))
            third = await _response(reader)
        finally:
            writer.close()
        assert [r[0] for r in (first, second, third)] == [200, 200, 200]
        assert [orjson.loads(r[2])["usage"]["completion_tokens"] for r in (first, second, third)] == [1, 2, 3]
        assert "connection" not in first[1]  # HTTP/1.1 keep-alive
        assert g.front.answered == 3 and g.front.handovers == 0
        assert len({r[1]["x-tokenomy-request-id"] for r in (first, second, third)}) == 3


async def test_other_requests_hand_the_connection_to_aiohttp(data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        reader, writer = await _open(g.url)
        try:
            writer.write(_req(key, {"model": "m", "messages": MSGS}))
            assert (await _response(reader))[0] == 200
            writer.write(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
            st, _, body = await _response(reader)
            assert st == 200 and orjson.loads(body)["status"] == "ok"
            writer.write(_req(key, {"model": "m", "messages": MSGS}))  # now aiohttp's connection
            st, h, _ = await _response(reader)
            assert st == 200 and h["x-tokenomy-deployment"] == "d1"
        finally:
            writer.close()
        assert g.front.answered == 1 and g.front.handovers == 1
        assert len(g.metering.events("t1")) == 2


async def test_streams_go_through_aiohttp(data_dir):
    async with stubs(Stub(out_tokens=4)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        reader, writer = await _open(g.url)
        try:
            writer.write(_req(key, {"model": "m", "messages": MSGS, "stream": True}))
            st, h, body = await _response(reader)
        finally:
            writer.close()
        assert st == 200 and h["content-type"].startswith("text/event-stream")
        assert body.rstrip().endswith(b"data: [DONE]")
        assert g.front.answered == 0 and g.front.handovers == 1
        # "stream": false (or a message that mentions "stream") stays on the front
        st, _, _ = await g.post("/v1/chat/completions", {"model": "m", "stream": False,
                                                          "messages": [{"role": "user", "content": '"stream"'}]}, key)
        assert st == 200 and g.front.answered == 1


@pytest.mark.parametrize("raw, status", [
    # a body over the limit: aiohttp's route answers the JSON 413
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer KEY\r\n"
     b"Content-Length: 99999999\r\n\r\n", 413),
    # a header line without a colon: aiohttp's parser answers 400
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost gw\r\nContent-Length: 2\r\n\r\n{}", 400),
    # another method on a hot path: the catch-all 404
    (b"GET /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n\r\n", 404),
])
async def test_unusual_requests_are_aiohttps(data_dir, raw, status):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        reader, writer = await _open(g.url)
        try:
            writer.write(raw.replace(b"KEY", key.encode()))
            st, _, _ = await asyncio.wait_for(_response(reader), 10)
        finally:
            writer.close()
        assert st == status
        assert g.front.answered == 0 and g.front.handovers == 1


async def test_chunked_request_body_is_served_by_aiohttp(data_dir):
    async with stubs(Stub(out_tokens=2)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        body = orjson.dumps({"model": "m", "messages": MSGS})
        reader, writer = await _open(g.url)
        try:
            writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
                         f"Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
            st, _, resp = await _response(reader)
        finally:
            writer.close()
        assert st == 200 and orjson.loads(resp)["usage"]["completion_tokens"] == 2
        assert g.front.answered == 0 and g.front.handovers == 1


async def test_connection_close_is_honoured(data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        reader, writer = await _open(g.url)
        try:
            writer.write(_req(key, {"model": "m", "messages": MSGS}, extra="Connection: close\r\n"))
            st, h, _ = await _response(reader)
            assert st == 200 and h["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway
        finally:
            writer.close()


async def test_client_gone_mid_request_still_commits_and_shutdown_drains(data_dir):
    async with stubs(Stub(delay_s=0.3)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        _, writer = await _open(g.url)
        writer.write(_req(key, {"model": "m", "messages": MSGS}))
        await writer.drain()
        while s.calls == 0:  # the request reached the upstream
            await asyncio.sleep(0.01)
        writer.close()  # the client leaves; the request is not cancelled
        reader2, writer2 = await _open(g.url)
        writer2.write(_req(key, {"model": "m", "messages": MSGS}))
        await writer2.drain()
        while s.calls < 2:
            await asyncio.sleep(0.01)
        await g.front.shutdown(5.0)  # stops listening, waits for both in-flight requests
        assert not g.front.tasks
        assert len(g.metering.events("t1")) == 2
        st, _, _ = await _response(reader2)  # the connected client got its answer before the close
        assert st == 200
        writer2.close()


def test_parse_head_accepts_only_the_plain_case():
    ok = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer k\r\nContent-Length: 12"
    kind, path, headers = parse_head(ok)
    assert (kind, path, headers.get("authorization"), headers.get("Content-Length")) == \
        ("chat", "/v1/chat/completions", "Bearer k", "12")
    assert parse_head(ok.replace(b"/v1/chat/completions", b"/v1/completions"))[0] == "completions"
    for bad in (
        ok.replace(b"HTTP/1.1", b"HTTP/1.0"),
        ok.replace(b"POST", b"PUT"),
        ok.replace(b"/v1/chat/completions", b"/v1/chat/completions?x=1"),
        ok.replace(b"Content-Length: 12", b"Transfer-Encoding: chunked"),
        ok + b"\r\nTransfer-Encoding: chunked",
        ok + b"\r\nContent-Length: 12",  # repeated header
        ok + b"\r\nExpect: 100-continue",
        ok + b"\r\nUpgrade: websocket",
        ok + b"\r\n folded continuation",
        ok + b"\r\nBad Name: x",
        ok + b"\r\nX-A: \x01",
        ok + b"\r\nX-A: caf\xc3\xa9",
        ok.replace(b"Content-Length: 12", b"Content-Length: -1"),
        ok.replace(b"Content-Length: 12", b"Content-Length: 1e3"),
        ok.replace(b"Content-Length: 12", b"Host2: x"),  # no Content-Length at all
    ):
        assert parse_head(bad) is None, bad


def test_serialize_writes_status_headers_and_body():
    resp = web.Response(status=201, body=b'{"a":1}', content_type="application/json", headers={"x-k": "v"})
    out = serialize(resp, "Date: D\r\n", close=True)
    head, body = out.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 201 Created"
    assert {"x-k: v", "Content-Type: application/json", "Content-Length: 7", "Date: D", "Connection: close"} <= set(lines)
    assert body == b'{"a":1}'
    with pytest.raises(ValueError):
        serialize(web.Response(body=b"", headers={"x-k": "a\r\nSet-Cookie: x"}), "", close=False)
    with pytest.raises(TypeError):
        serialize(web.StreamResponse(), "", close=False)


class _FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False
        self.reading = True

    def get_extra_info(self, name, default=None):
        return default

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def test_one_request_at_a_time_and_no_new_one_while_the_client_is_not_reading():
    from tokenomy.gateway.fastpath import FastFront

    started: list[int] = []
    release = asyncio.Event()

    async def handler(req, kind):
        n = orjson.loads(await req.read())["n"]
        started.append(n)
        if n == 1:
            await release.wait()
        return web.Response(body=orjson.dumps({"n": n}), content_type="application/json")

    front = FastFront(handler, lambda: None, max_body=1 << 20)
    conn = front.protocol()
    t = _FakeTransport()
    conn.connection_made(t)
    conn.data_received(_req("k", {"n": 1}) + _req("k", {"n": 2}) + _req("k", {"n": 3}))
    await asyncio.sleep(0.01)
    assert started == [1]  # the pipelined ones wait their turn
    conn.pause_writing()  # the client stopped reading
    release.set()
    await asyncio.sleep(0.01)
    assert started == [1] and len(t.out) == 1  # answered, but no next request until the client drains
    conn.data_received(_req("k", {"n": 4}))  # more arrives meanwhile: still nothing starts
    await asyncio.sleep(0.01)
    assert started == [1]
    conn.resume_writing()
    for _ in range(100):
        if len(t.out) == 4:
            break
        await asyncio.sleep(0.01)
    assert started == [1, 2, 3, 4]
    assert [orjson.loads(o.split(b"\r\n\r\n", 1)[1])["n"] for o in t.out] == [1, 2, 3, 4]
    assert front.answered == 4 and not front.tasks
