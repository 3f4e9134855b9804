"""Connection limits on both fronts (the lean front and aiohttp behind it), with raw sockets:
slow heads get 408 + close after head_timeout_s, idle keep-alive connections are closed, the
connection cap makes room or refuses with 503, malformed heads get a prompt 400, and no key
reaches a log line or an error body, whatever the malformed Authorization header."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from gw_helpers import Stub, gateway, list_dep, stubs

MSGS = [{"role": "user", "content": "hello"}]
WAIT_S = 10.0  # a bound on every wait (never a timing assertion)


@pytest.fixture(params=["fast", "aiohttp"])
def front(request, monkeypatch):
    """Every test runs on the lean front and with TOKENOMY_GATEWAY_FASTPATH=0 (aiohttp serves all)."""
    if request.param == "fast":
        monkeypatch.delenv("TOKENOMY_GATEWAY_FASTPATH", raising=False)
    else:
        monkeypatch.setenv("TOKENOMY_GATEWAY_FASTPATH", "0")
    return request.param


def _cfg(stub: Stub, **server) -> dict:
    return {"deployments": [list_dep("d1", stub.base_url, 3.0, 15.0)], "model_groups": {"m": {"deployments": ["d1"]}},
            "server": server}


async def _open(url: str):
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _until_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (bounded: a hang fails the test)."""
    return await asyncio.wait_for(reader.read(), WAIT_S)


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def _chat(key: str) -> bytes:
    body = orjson.dumps({"model": "m", "messages": MSGS})
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


SLOW_HEADS = [b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n",  # waits for its head on the lean front
              b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\n",  # handed to aiohttp before its end
              b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
              b"Content-Length: 50\r\n\r\n{\"mo"]  # a slow body, from a client with a valid key


@pytest.mark.parametrize("head", SLOW_HEADS, ids=["hot-head", "other-head", "hot-body"])
async def test_a_slow_head_is_answered_408_and_closed(front, head, data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s, head_timeout_s=0.3, idle_timeout_s=60), data_dir) as g:
        key = g.key("t1")
        reader, writer = await _open(g.url)
        writer.write(head.replace(b"{key}", key.encode()))
        await writer.drain()
        raw = await _until_eof(reader)  # slowloris: never sends the rest
        writer.close()
        assert _status(raw) == 408 and b"request_timeout" in raw
        # a request sent in time on a new connection is served as before
        reader, writer = await _open(g.url)
        writer.write(_chat(key))
        head_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), WAIT_S)
        writer.close()
        assert _status(head_line) == 200


async def test_a_trickled_head_does_not_extend_its_deadline(front, data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s, head_timeout_s=0.5, idle_timeout_s=60), data_dir) as g:
        reader, writer = await _open(g.url)
        writer.write(b"GET /v1/models HTTP/1.1\r\n")
        sent = 0
        closed = False
        for i in range(200):  # one header line every 50 ms: far past the 0.5 s deadline in total
            try:
                writer.write(f"X-Slow-{i}: 1\r\n".encode())
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            sent += 1
            await asyncio.sleep(0.05)
            if reader.at_eof() or reader._buffer:  # noqa: SLF001 - the 408 has arrived
                closed = True
                break
        raw = await _until_eof(reader)
        writer.close()
        assert closed and sent < 200
        assert _status(raw) == 408


async def test_an_idle_keep_alive_connection_is_closed(front, data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s, head_timeout_s=5, idle_timeout_s=0.3), data_dir) as g:
        key = g.key("t1")
        reader, writer = await _open(g.url)
        writer.write(_chat(key))
        raw = await _until_eof(reader)  # answered, then closed once idle
        writer.close()
        assert _status(raw) == 200 and raw.count(b"HTTP/1.1 ") == 1


async def test_at_the_cap_an_idle_connection_makes_room(front, data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s, max_connections=3, idle_timeout_s=60), data_dir) as g:
        key = g.key("t1")
        idle = []
        for _ in range(3):  # served once, then idle keep-alive
            reader, writer = await _open(g.url)
            writer.write(_chat(key))
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
            idle.append((reader, writer))
        reader, writer = await _open(g.url)  # the 4th: the longest-idle one is closed for it
        writer.write(_chat(key))
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), WAIT_S)
        assert _status(line) == 200
        first = idle[0][0]  # the longest idle: closed (the rest of its body, then EOF)
        rest = await asyncio.wait_for(first.read(), WAIT_S)
        assert first.at_eof() and b"HTTP/1.1" not in rest
        for r, w in idle[1:]:  # the others still serve requests
            w.write(_chat(key))
            await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), WAIT_S)  # the rest of the first body
        for _, w in idle + [(reader, writer)]:
            w.close()


async def test_at_the_cap_with_nothing_idle_a_new_connection_gets_503(front, data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s, max_connections=3, head_timeout_s=60), data_dir) as g:
        busy = []
        for _ in range(3):  # each in the middle of a head: not idle, never closed to make room
            reader, writer = await _open(g.url)
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n")
            await writer.drain()
            busy.append((reader, writer))
        await asyncio.sleep(0.1)  # let the server see the partial heads (correctness does not depend on it)
        reader, writer = await _open(g.url)
        raw = await _until_eof(reader)
        writer.close()
        assert _status(raw) == 503 and b"Retry-After: 1" in raw and b"overloaded" in raw
        for r, w in busy:  # the three are still open: finishing the head gets an answer
            w.write(b"\r\n")
            line = await asyncio.wait_for(r.readuntil(b"\r\n"), WAIT_S)
            assert _status(line) == 401  # no key: but served
            w.close()


BARE_LF = [b"POST /v1/chat/completions HTTP/1.1\nHost: gw\nContent-Length: 2\n\n{}",
           b"GET /v1/models HTTP/1.1\nHost: gw\n\n",
           b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\nContent-Length: 2\r\n\r\n{}"]


@pytest.mark.parametrize("raw", BARE_LF, ids=["hot", "other", "mixed"])
async def test_a_bare_lf_head_gets_a_prompt_400(front, raw, data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s, head_timeout_s=60, idle_timeout_s=60), data_dir) as g:
        reader, writer = await _open(g.url)
        writer.write(raw)
        out = await _until_eof(reader)  # not after 60 s: the timeouts are far away
        writer.close()
        assert _status(out) == 400 and b"bad_request" in out


# every way a key file or a client can spoil the Authorization line
AUTH_TAILS = ["\x01", "\r", "\x00", "\x7f", "\x1b[0m", "\rX-Injected: 1", "\x0b", "\x0c"]


@pytest.mark.parametrize("tail", AUTH_TAILS, ids=[repr(t) for t in AUTH_TAILS])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models"])
async def test_no_key_in_logs_or_answers_for_a_malformed_authorization(front, tail, path, data_dir, caplog):
    caplog.set_level(logging.DEBUG)
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        secret = key.split("-", 2)[2]
        method = "POST" if path.startswith("/v1/chat") else "GET"
        raw = (f"{method} {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}{tail}\r\n"
               f"Content-Length: 2\r\n\r\n{{}}").encode()
        reader, writer = await _open(g.url)
        writer.write(raw)
        out = await _until_eof(reader)
        writer.close()
    assert _status(out) in (400, 401)
    assert secret.encode() not in out
    assert secret not in caplog.text
    for rec in caplog.records:
        assert secret not in rec.getMessage() and secret not in (rec.exc_text or "")
