"""LeanClient (gateway/upstream.py): the keep-alive HTTP/1.1 client of unary upstream calls,
against a real TCP server answering with scripted raw bytes."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import pytest

from tokenomy.gateway.upstream import LeanClient

HDRS = {"Content-Type": "application/json", "Authorization": "Bearer sk-up"}


class RawServer:
    """Answers each request with the next scripted reply (bytes, or a callable(writer) coroutine);
    records the raw requests and how many connections were opened."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(length))
                reply = self.replies.pop(0)
                if callable(reply):
                    await reply(writer)
                    if writer.is_closing():
                        return
                else:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


async def test_content_length_keep_alive_and_request_bytes():
    async with RawServer([ok(b'{"a":1}', b"X-Emulator-Energy-J: 1.5\r\n"), ok(b'{"b":2}')]) as s:
        c = LeanClient()
        r1 = await c.post(s.url, b'{"q":1}', HDRS, total_s=5, connect_s=1)
        r2 = await c.post(s.url, b'{"q":22}', HDRS, total_s=5, connect_s=1)
        assert (r1.status, r1.body, r2.body) == (200, b'{"a":1}', b'{"b":2}')
        assert r1.headers.get("x-emulator-energy-j") == "1.5" and r1.get("CONTENT-TYPE") == "application/json"
        assert s.connections == 1  # the second request reused the connection
        head, _, body = s.requests[1].partition(b"\r\n\r\n")
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and body == b'{"q":22}'
        assert b"\r\nContent-Length: 8" in head and b"\r\nAuthorization: Bearer sk-up" in head
        assert b"\r\nHost: 127.0.0.1:" in head
        c.close()


async def test_chunked_gzip_and_status_passthrough():
    payload = gzip.compress(b'{"choices":[]}')
    chunked = (b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n"
               b"Retry-After: 7\r\n\r\n" + b"%x\r\n%s\r\n" % (5, payload[:5]) +
               b"%x;ext=1\r\n%s\r\n" % (len(payload) - 5, payload[5:]) + b"0\r\n\r\n")

    async def split(writer):  # one reply in three TCP writes
        for i in (0, 7, 30):
            writer.write(chunked[i:{0: 7, 7: 30, 30: None}[i]])
            await writer.drain()
            await asyncio.sleep(0.01)

    async with RawServer([split, ok(b"{}")]) as s:
        c = LeanClient()
        r = await c.post(s.url, b"{}", HDRS, total_s=5, connect_s=1)
        assert (r.status, r.body, r.get("Retry-After")) == (429, b'{"choices":[]}', "7")
        assert (await c.post(s.url, b"{}", HDRS, total_s=5, connect_s=1)).body == b"{}"
        assert s.connections == 1


async def test_connection_close_and_body_until_eof():
    async def until_eof(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"x\":")
        await writer.drain()
        writer.write(b"3}")
        writer.close()

    async with RawServer([until_eof]) as s1, RawServer([ok(b"{}", b"Connection: close\r\n"), ok(b"[]")]) as s2:
        c = LeanClient()
        assert (await c.post(s1.url, b"{}", HDRS, total_s=5, connect_s=1)).body == b'{"x":3}'
        assert (await c.post(s2.url, b"{}", HDRS, total_s=5, connect_s=1)).body == b"{}"
        assert (await c.post(s2.url, b"{}", HDRS, total_s=5, connect_s=1)).body == b"[]"
        assert s2.connections == 2  # "Connection: close" was honoured


async def test_stale_pooled_connection_is_retried_once_on_a_new_one():
    async def close_silently(writer):
        writer.close()

    async with RawServer([ok(b"1"), close_silently, ok(b"2")]) as s:
        c = LeanClient()
        assert (await c.post(s.url, b"{}", HDRS, total_s=5, connect_s=1)).body == b"1"
        assert (await c.post(s.url, b"{}", HDRS, total_s=5, connect_s=1)).body == b"2"
        assert s.connections == 2


async def test_errors_are_aiohttp_or_timeout():
    async def hang(writer):
        await asyncio.sleep(5)

    async with RawServer([hang, b"garbage\r\n\r\n", ok(b"fine")]) as s:
        c = LeanClient()
        with pytest.raises(asyncio.TimeoutError):
            await c.post(s.url, b"{}", HDRS, total_s=0.2, connect_s=1)
        with pytest.raises(aiohttp.ClientError, match="malformed upstream response"):
            await c.post(s.url, b"{}", HDRS, total_s=5, connect_s=1)
        assert (await c.post(s.url, b"{}", HDRS, total_s=5, connect_s=1)).body == b"fine"
    free = RawServer([])
    async with free:
        dead_url = free.url
    with pytest.raises(aiohttp.ClientError):
        await LeanClient().post(dead_url, b"{}", HDRS, total_s=5, connect_s=1)


async def test_https_is_left_to_aiohttp():
    assert await LeanClient().post("https://api.example.com/v1/chat/completions", b"{}", HDRS,
                                   total_s=1, connect_s=1) is None
