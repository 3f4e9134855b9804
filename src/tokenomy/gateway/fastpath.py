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
Set TOKENOMY_GATEWAY_FASTPATH=0 to serve everything through aiohttp (every connection is then
handed over at once; the limits below still apply).

Connection limits (config `server:`), the same whichever side serves a connection:
  * head_timeout_s (10): a request's head must arrive within this of its first byte (on this
    front: its head and body), else 408 + close; aiohttp's side is a GuardedHandler
    (gateway/connguard.py) that gets the remaining deadline at hand-over.
  * idle_timeout_s (75): a keep-alive connection with no request in flight is closed after this.
  * max_connections (min(10000, half the open-file limit)): at the cap a new connection first
    makes room by closing the longest-idle keep-alive connection; when none is idle it gets
    `503` + `Retry-After: 1` + close. Requests in flight are never cut.
  * a head with bare-LF line endings (or a NUL/control byte in its request line) is answered
    400 + close at once, on both sides.
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
_BARE_LF = re.compile(rb"(?<!\r)\n")  # a line ending without its CR (RFC 9112 2.2: reject)
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


def _canned(status: int, reason: str, message: str, code: str, extra: str = "") -> bytes:
    """A complete error response that closes the connection (written before any request is read)."""
    body = error_body(status, message, code=code)
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra}Connection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


_BARE_LF_400 = _canned(400, "Bad Request", "malformed HTTP request: line endings must be CRLF (bare LF)",
                       "bad_request")
_TIMEOUT_408 = _canned(408, "Request Timeout", "request head not received in time", "request_timeout")
_FULL_503 = _canned(503, "Service Unavailable", "too many open connections: retry shortly", "overloaded",
                    "Retry-After: 1\r\n")


class FastConnection(asyncio.Protocol):
    __slots__ = ("front", "transport", "buf", "busy", "closed", "close_after", "idle_since", "paused",
                 "task", "_drain", "head_since")

    def __init__(self, front: "FastFront"):
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a request is being answered
        self.closed = False
        self.close_after = False
        self.idle_since = time.monotonic()
        self.head_since = 0.0  # monotonic time of the first byte of the request being read (0: none)
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
        front = self.front
        if front.open_connections() >= front.max_connections and not front.make_room():
            front.refused += 1
            self.closed = True
            transport.write(_FULL_503)
            transport.close()
            return
        front.conns.add(self)
        if not front.answer:
            self._handover()  # TOKENOMY_GATEWAY_FASTPATH=0: aiohttp serves every request

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
        if self.closed:
            return
        if not self.buf and not self.busy:
            self.head_since = time.monotonic()  # a new request starts: its head deadline runs
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
            if _BARE_LF.search(buf, 0, _MAX_HEAD) is not None:
                self._reject(_BARE_LF_400)  # it would never see its CRLF CRLF: answer now
            elif len(buf) > _MAX_HEAD:
                self._handover()
            elif b"\r\n" in buf and not buf.startswith(b"POST /v1/"):
                self._handover()  # clearly not a hot route: no need to wait for the whole head
            return
        head = bytes(buf[:end])
        parsed = parse_head(head)
        if parsed is None:
            if b"\n" in head and _BARE_LF.search(head) is not None:
                self._reject(_BARE_LF_400)
            else:
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
        self.head_since = 0.0
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
            self.head_since = self.idle_since  # a pipelined request: its deadline runs from now
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
        if self.front.head_timeout_s > 0 and hasattr(proto, "head_deadline"):
            # the head deadline keeps running: aiohttp gets what is left of it
            started = self.head_since or time.monotonic()
            left = max(0.0, started + self.front.head_timeout_s - time.monotonic())
            proto.head_deadline = asyncio.get_running_loop().time() + left
        t.set_protocol(proto)
        proto.connection_made(t)
        if self.paused:
            self.paused = False
            t.resume_reading()
        if data:
            proto.data_received(data)

    def _reject(self, response: bytes) -> None:
        """Answer a head this front cannot accept with a canned error, then close."""
        self.buf.clear()
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(response)
        self._close()

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
                 *, max_body: int, keepalive_s: float = 75.0, head_timeout_s: float = 10.0,
                 max_connections: int | None = None, answer: bool = True,
                 aiohttp_connections: Callable[[], list] | None = None,
                 aiohttp_count: Callable[[], int] | None = None):
        self.handler = handler
        self.aiohttp_server = aiohttp_server
        self.max_body = max_body
        self.keepalive_s = keepalive_s
        self.head_timeout_s = head_timeout_s
        self.max_connections = max_connections or default_max_connections()
        self.answer = answer  # False: hand every connection to aiohttp at once
        self.aiohttp_connections = aiohttp_connections or (lambda: [])
        self.aiohttp_count = aiohttp_count or (lambda: len(self.aiohttp_connections()))
        self.conns: set[FastConnection] = set()
        self.tasks: set[asyncio.Task] = set()  # requests being answered (also of closed connections)
        self.answered = 0  # requests answered here
        self.handovers = 0  # connections handed to aiohttp
        self.refused = 0  # connections refused at the cap (503)
        self.evicted = 0  # idle keep-alive connections closed to make room
        self.timed_out = 0  # connections closed because a head did not arrive in time
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

    def open_connections(self) -> int:
        return len(self.conns) + self.aiohttp_count()

    def make_room(self) -> bool:
        """Close the longest-idle keep-alive connection (this front's first, then aiohttp's)."""
        idle = [c for c in self.conns if not c.busy and not c.buf]
        if idle:
            min(idle, key=lambda c: c.idle_since)._close()
            self.evicted += 1
            return True
        for h in self.aiohttp_connections():
            is_idle = getattr(h, "is_idle", None)
            if is_idle is not None and is_idle():
                h.force_close()
                self.evicted += 1
                return True
        return False

    async def _reap(self) -> None:
        """Close keep-alive connections idle for longer than keepalive_s and connections whose
        request head (and body) has not arrived within head_timeout_s (checked a few times a period)."""
        limits = [x for x in (self.keepalive_s, self.head_timeout_s) if x > 0]
        period = max(0.05, min(limits) / 5) if limits else 1.0
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            idle_cut = now - self.keepalive_s if self.keepalive_s > 0 else -1.0
            head_cut = now - self.head_timeout_s if self.head_timeout_s > 0 else -1.0
            for c in [c for c in self.conns if not c.busy]:
                if c.buf:
                    if c.head_since and c.head_since < head_cut:
                        self.timed_out += 1
                        c._reject(_TIMEOUT_408)
                elif c.idle_since < idle_cut:
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


def default_max_connections() -> int:
    """min(10000, half the open-file limit): the other half stays for upstream sockets, the
    ledger and the logs (at the limit every accept and connect fails: no request is served)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        return 10_000
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, (soft - 64) // 2))


def fast_front(app: web.Application, runner: web.AppRunner, *, answer: bool | None = None) -> FastFront:
    """The front of a gateway app whose runner is set up (its aiohttp server exists). Every
    connection is accepted here; with answer=False (default: TOKENOMY_GATEWAY_FASTPATH=0) each
    is handed to aiohttp at once, so the connection limits hold on both paths."""
    from tokenomy.gateway import redact
    from tokenomy.gateway.app import GATEWAY_KEY
    from tokenomy.gateway.connguard import handler_factory

    redact.install()
    gw = app[GATEWAY_KEY]
    server = runner.server
    assert server is not None, "runner.setup() first"
    sc = gw.config.server
    make = handler_factory(server, head_timeout_s=sc.head_timeout_s, idle_timeout_s=sc.idle_timeout_s)
    return FastFront(gw.handle, make, max_body=sc.max_body_bytes, keepalive_s=sc.idle_timeout_s,
                     head_timeout_s=sc.head_timeout_s, max_connections=sc.max_connections,
                     answer=fastpath_enabled() if answer is None else answer,
                     aiohttp_connections=lambda: server.connections,
                     aiohttp_count=lambda: len(getattr(server, "_connections", ())))
