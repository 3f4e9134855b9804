"""A lean HTTP/1.1 front for the hot routes, in front of the aiohttp app (`tokenomy up`).

aiohttp's server side (request/response objects, multidicts, the router, the writer) costs
more CPU per request than the gateway's own work on a fast upstream. This front is the
listening protocol instead: it answers the common case itself and hands everything else,
untouched, to aiohttp on the same connection:

  * answered here: `POST /v1/chat/completions` and `POST /v1/completions` over HTTP/1.1 with a
    Content-Length body (no Transfer-Encoding, Expect or Upgrade), plain ASCII headers without
    repeats or folding, not a stream (`"stream": true` needs aiohttp's streaming response).
    The request goes through the very same `Gateway.handle` (auth, budgets, rate limits, plan
    caps, routing, metering: the event is committed before the handler returns its response),
    and the response is serialised here (status, headers incl. Date and Server, body).
  * anything else (another path or method, a stream, a chunked or oversized body, odd headers,
    HTTP/1.0, a malformed head): from that request on, the connection is handed to an aiohttp
    RequestHandler (`transport.set_protocol`) with every unconsumed byte, so aiohttp parses
    and answers it exactly as without this front (its limits and errors apply).

Requests of one connection are answered in order (pipelined ones wait their turn). A client
that goes away mid-request does not cancel it (like aiohttp): the event still commits.
Set TOKENOMY_GATEWAY_FASTPATH=0 to serve everything through aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from email.utils import formatdate
from typing import Any, Callable

import aiohttp
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from tokenomy.gateway.errors import error_body

log = logging.getLogger("tokenomy.gateway")

ENV_FASTPATH = "TOKENOMY_GATEWAY_FASTPATH"
_ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # control bytes (HTAB, CR, LF aside)
_MAX_HEAD = 16384  # a larger head goes to aiohttp (which applies its own limits)
_MAX_HEADERS = 100
_PAUSE_AT = 1 << 20  # buffered (pipelined) bytes at which reading pauses until the turn comes
_SERVER_LINE = f"Server: {SERVER_SOFTWARE}\r\n"
# set by this front; a handler's own value is dropped
_OWN = frozenset(("content-length", "transfer-encoding", "connection", "date", "server"))


def fastpath_enabled() -> bool:
    return os.environ.get(ENV_FASTPATH, "1").strip().lower() not in ("0", "false", "no", "off")


class _Headers(dict):
    """Request headers, names lower-cased; `get` is case-insensitive like aiohttp's."""

    __slots__ = ()

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)


class FastRequest:
    """What `Gateway.handle` reads of a non-stream request: headers, Content-Length, the body."""

    __slots__ = ("method", "path", "headers", "content_length", "_body")

    def __init__(self, method: str, path: str, headers: _Headers, body: bytes):
        self.method, self.path, self.headers, self._body = method, path, headers, body
        self.content_length = len(body)

    async def read(self) -> bytes:
        return self._body


class _Date:
    """The Date header, formatted once per second."""

    __slots__ = ("sec", "line")

    def __init__(self) -> None:
        self.sec = -1
        self.line = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self.sec:
            self.sec, self.line = now, f"Date: {formatdate(now, usegmt=True)}\r\n"
        return self.line


def parse_head(head: bytes) -> tuple[str, str, _Headers] | None:
    """(kind, path, headers) of a request head this front answers, else None (aiohttp's)."""
    if not head.isascii() or _CTL.search(head) is not None:
        return None
    lines = head.decode("ascii").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "POST" or parts[2] != "HTTP/1.1":
        return None
    kind = _ROUTES.get(parts[1])
    if kind is None or len(lines) > _MAX_HEADERS + 1:
        return None
    headers = _Headers()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or _TOKEN.fullmatch(name) is None or "\n" in value or "\r" in value:
            return None  # no folding, no bare CR/LF, a token name (no space before the colon)
        key = name.lower()
        if key in headers:
            return None  # a repeated header: let aiohttp decide
        headers[key] = value.strip(" \t")
    if "transfer-encoding" in headers or "expect" in headers or "upgrade" in headers:
        return None
    cl = headers.get("content-length")
    if cl is None or not cl.isdigit() or len(cl) > 12:
        return None
    return kind, parts[1], headers


def serialize(resp: web.StreamResponse, date_line: str, close: bool) -> bytes:
    """The wire form of a complete web.Response (raises TypeError for anything else)."""
    if type(resp) is not web.Response:
        raise TypeError(f"cannot serialise a {type(resp).__name__} on the fast path")
    body = resp.body
    if body is None:
        body = b""
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError(f"cannot serialise a {type(body).__name__} body on the fast path")
    out = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n"]
    for k, v in resp.headers.items():
        if k.lower() in _OWN:
            continue
        if "\n" in v or "\r" in v or "\n" in k or "\r" in k:
            raise ValueError(f"newline in response header {k!r}")
        out.append(f"{k}: {v}\r\n")
    out.append(f"Content-Length: {len(body)}\r\n")
    out.append(date_line)
    out.append(_SERVER_LINE)
    if close:
        out.append("Connection: close\r\n")
    out.append("\r\n")
    return "".join(out).encode("utf-8") + body


class FastConnection(asyncio.Protocol):
    __slots__ = ("front", "transport", "buf", "busy", "closed", "close_after", "idle_since", "paused",
                 "task", "_drain")

    def __init__(self, front: "FastFront"):
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a request is being answered
        self.closed = False
        self.close_after = False
        self.idle_since = time.monotonic()
        self.paused = False
        self.task: asyncio.Task | None = None
        self._drain: asyncio.Future | None = None

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.front.conns.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.front.conns.discard(self)
        self.buf.clear()
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)
        # an in-flight request runs to the end (its event commits); its answer is dropped

    def eof_received(self) -> bool:
        return False  # the client is done sending: close once nothing is pending

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.busy:
            if len(self.buf) > _PAUSE_AT and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            return
        self._next()

    # ------------------------------------------------------------------ requests
    def _next(self) -> None:
        """Start the next complete request in the buffer, or hand the connection to aiohttp."""
        buf = self.buf
        if self.busy or not buf or self.closed:
            return
        end = buf.find(b"\r\n\r\n", 0, _MAX_HEAD + 4)
        if end < 0:
            if len(buf) > _MAX_HEAD:
                self._handover()
            elif b"\r\n" in buf and not buf.startswith(b"POST /v1/"):
                self._handover()  # clearly not a hot route: no need to wait for the whole head
            return
        parsed = parse_head(bytes(buf[:end]))
        if parsed is None:
            self._handover()
            return
        kind, path, headers = parsed
        length = int(headers["content-length"])
        if length > self.front.max_body:
            self._handover()  # aiohttp's route answers the 413
            return
        start = end + 4
        if len(buf) < start + length:
            return  # the body is still arriving
        body = bytes(buf[start:start + length])
        if b'"stream"' in body and _wants_stream(body):
            self._handover()  # streamed through aiohttp's StreamResponse
            return
        del buf[:start + length]
        conn = headers.get("connection")
        if conn is not None and "close" in conn.lower():
            self.close_after = True
        self.busy = True
        self.task = task = asyncio.get_running_loop().create_task(
            self._answer(FastRequest("POST", path, headers, body), kind))
        self.front.tasks.add(task)
        task.add_done_callback(self.front.tasks.discard)

    async def _answer(self, req: FastRequest, kind: str) -> None:
        front = self.front
        front.answered += 1
        close = self.close_after
        try:
            try:
                resp = await front.handler(req, kind)
                data = serialize(resp, front.date.get(), close)
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                self._close()
                return
            except Exception as exc:  # noqa: BLE001 - answered as a 500, the connection closed
                log.exception("fast path: request failed")
                close = True
                data = serialize(web.Response(status=500, content_type="application/json",
                                              body=error_body(500, f"internal error: {type(exc).__name__}: {exc}",
                                                              code="internal_error")),
                                 front.date.get(), True)
            t = self.transport
            if self.closed or t is None or t.is_closing():
                return
            t.write(data)
            if close:
                self._close()
                return
            if self._drain is not None and not self._drain.done():
                await self._drain  # the client is not reading its answers: read no request meanwhile
        finally:
            self.busy = False
            self.task = None
            self.idle_since = time.monotonic()
        if self.closed:
            return
        if self.paused:
            self.paused = False
            t.resume_reading()
        if self.buf:
            self._next()

    def _handover(self) -> None:
        """From now on this connection is aiohttp's, starting with the unconsumed bytes."""
        t = self.transport
        if t is None or self.closed:
            return
        self.closed = True
        self.front.conns.discard(self)
        self.front.handovers += 1
        data, self.buf = bytes(self.buf), bytearray()
        proto = self.front.aiohttp_server()
        t.set_protocol(proto)
        proto.connection_made(t)
        if self.paused:
            self.paused = False
            t.resume_reading()
        if data:
            proto.data_received(data)

    def _close(self) -> None:
        self.closed = True
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()


def _wants_stream(body: bytes) -> bool:
    import orjson

    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False  # the handler answers the 400
    return isinstance(obj, dict) and obj.get("stream") is True


class FastFront:
    """The listening side: fast connections, idle keep-alive expiry, graceful drain."""

    def __init__(self, handler: Callable[[FastRequest, str], Any], aiohttp_server: Callable[[], asyncio.Protocol],
                 *, max_body: int, keepalive_s: float = 75.0):
        self.handler = handler
        self.aiohttp_server = aiohttp_server
        self.max_body = max_body
        self.keepalive_s = keepalive_s
        self.conns: set[FastConnection] = set()
        self.tasks: set[asyncio.Task] = set()  # requests being answered (also of closed connections)
        self.answered = 0  # requests answered here
        self.handovers = 0  # connections handed to aiohttp
        self.date = _Date()
        self.server: asyncio.AbstractServer | None = None
        self._reaper: asyncio.Task | None = None

    def protocol(self) -> FastConnection:
        return FastConnection(self)

    async def start(self, host: str, port: int, *, backlog: int = 2048, reuse_address: bool = True) -> int:
        """Listen; returns the bound port."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self.protocol, host, port, backlog=backlog, reuse_address=reuse_address)
        self._reaper = loop.create_task(self._reap())
        return self.server.sockets[0].getsockname()[1]

    async def _reap(self) -> None:
        """Close connections idle for longer than the keep-alive timeout (checked a few times a period)."""
        period = max(0.05, self.keepalive_s / 5)
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - self.keepalive_s
            for c in [c for c in self.conns if not c.busy and c.idle_since < cutoff]:
                c._close()

    async def shutdown(self, timeout_s: float) -> None:
        """Stop listening, let in-flight requests finish (up to timeout_s), close the connections."""
        if self.server is not None:
            self.server.close()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        deadline = time.monotonic() + timeout_s
        for c in [c for c in self.conns if not c.busy]:
            c._close()
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in list(self.tasks):
            task.cancel()
        for c in list(self.conns):
            c._close()
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None


def fast_front(app: web.Application, runner: web.AppRunner) -> FastFront:
    """The front of a gateway app whose runner is set up (its aiohttp server exists)."""
    from tokenomy.gateway.app import GATEWAY_KEY

    gw = app[GATEWAY_KEY]
    server = runner.server
    assert server is not None, "runner.setup() first"
    return FastFront(gw.handle, server, max_body=gw.config.server.max_body_bytes)
