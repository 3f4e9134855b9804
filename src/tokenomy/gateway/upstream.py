"""Reading an upstream's answer: OpenAI `usage`, and SSE events off an aiohttp stream."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import StreamReader
from aiohttp.http_exceptions import LineTooLong


class UpstreamGarbage(Exception):
    """The upstream answered 200 but with something that is not the OpenAI protocol."""


DEFAULT_MAX_RESPONSE_BYTES = 32 << 20  # config server.max_upstream_response_bytes
MAX_EVENT_BYTES = 1 << 20  # one SSE event of a stream (a chunk of a completion is a few hundred bytes)


class UpstreamTooLarge(aiohttp.ClientPayloadError):
    """An upstream answer (or one stream event) over its size limit, counted after decoding.
    A ClientPayloadError: the gateway fails the attempt like a broken connection (next
    deployment, else a 502 naming the limit)."""

    def __init__(self, limit: int, what: str = "answer"):
        super().__init__(f"upstream {what} larger than {limit} bytes (after decoding): refused")
        self.limit = limit


async def read_capped(resp: Any, limit: int) -> bytes:
    """The whole body of an aiohttp response, at most `limit` bytes after decoding. aiohttp inflates
    gzip/deflate incrementally as the body is read, so a bomb stops at the limit, not in memory.
    Anything else with a `read()` (a provider adapter's TranslatedStream) reads itself."""
    if not isinstance(resp, aiohttp.ClientResponse):
        capped = getattr(resp, "read_capped", None)  # a provider adapter's TranslatedStream
        return await (capped(limit) if capped is not None else resp.read())
    cl = resp.content_length
    if cl is not None and cl > limit:
        resp.close()
        raise UpstreamTooLarge(limit)
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > limit:
            resp.close()
            raise UpstreamTooLarge(limit)
    return bytes(buf)


def usage_counts(usage: object) -> tuple[int, int, int, int] | None:
    """(input incl. cached, cached input, output incl. reasoning, reasoning) from an OpenAI usage
    object, or None when absent/malformed."""
    if not isinstance(usage, dict):
        return None
    inp = usage.get("prompt_tokens")
    out = usage.get("completion_tokens")
    if not isinstance(inp, int) or not isinstance(out, int):
        return None
    cached = reasoning = 0
    pd = usage.get("prompt_tokens_details")
    if isinstance(pd, dict) and isinstance(pd.get("cached_tokens"), int):
        cached = pd["cached_tokens"]
    cd = usage.get("completion_tokens_details")
    if isinstance(cd, dict) and isinstance(cd.get("reasoning_tokens"), int):
        reasoning = cd["reasoning_tokens"]
    return inp, cached, out, reasoning


_ENERGY_KEYS = ("x_energy_joules", "energy_joules", "energy_j")
_ENERGY_KEY_SET = frozenset(_ENERGY_KEYS)


def reported_energy_joules(obj: dict) -> float | None:
    """Energy an upstream reports for this request (the emulator does), if any."""
    for holder in (obj.get("usage"), obj):
        # one C-level set test first: most upstreams report no energy at all
        if isinstance(holder, dict) and not _ENERGY_KEY_SET.isdisjoint(holder):
            for k in _ENERGY_KEYS:
                v = holder.get(k)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    return float(v)
    x = obj.get("x_emulator")
    if isinstance(x, dict):
        v = x.get("energy_joules")
        if isinstance(v, (int, float)):
            return float(v)
    return None


async def read_event(content: StreamReader) -> bytes | None:
    """One SSE event (its lines joined, blank-line terminator stripped); None at EOF.

    Returns b"" for EOF in the middle of an event only if nothing was read. An event (or a line)
    over MAX_EVENT_BYTES raises UpstreamTooLarge."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await content.readline()
        except (LineTooLong, ValueError):  # a line over the reader's high-water mark
            raise UpstreamTooLarge(MAX_EVENT_BYTES, "stream line") from None
        size += len(line)
        if size > MAX_EVENT_BYTES:
            raise UpstreamTooLarge(MAX_EVENT_BYTES, "stream event")
        if not line:  # EOF
            return b"".join(lines) if lines else None
        if line in (b"\n", b"\r\n"):
            if lines:
                return b"".join(lines)
            continue
        lines.append(line)


def event_data(event: bytes) -> bytes | None:
    """The `data:` payload of an SSE event (multi-line data joined), None for comment-only events."""
    if event.startswith(b"data:") and event.count(b"\n") <= 1:  # the common one-line case
        return event[5:].strip()
    parts = [ln[5:].strip() for ln in event.splitlines() if ln.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


# ------------------------------------------------------------------ lean HTTP/1.1 client
# The unary (non-stream) upstream call is the costliest step of a request in aiohttp's client
# (URL parsing, multidicts, payload registry, timers, a stream reader per response). For plain
# http:// upstreams, a keep-alive pool of asyncio protocols writing one prebuilt request head
# and reading one Content-Length/chunked body does the same job for a fraction of the CPU.
# https:// (and anything unusual) stays on aiohttp.


class UpstreamResponse:
    __slots__ = ("status", "_headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self._headers, self.body = status, headers, body

    @property
    def headers(self) -> "UpstreamResponse":
        return self  # .headers.get(name) like aiohttp's case-insensitive multidict

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._headers.get(name.lower(), default)


class _BadResponse(Exception):
    pass


class _Conn(asyncio.Protocol):
    __slots__ = ("transport", "buf", "waiter", "closed", "got_data", "_head", "_need", "_chunked", "_until_eof",
                 "limit")

    def __init__(self, limit: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.limit = limit  # bytes of a body, before and after decoding
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.got_data = False
        self._head: tuple[int, dict[str, str]] | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            if self._head is not None and self._until_eof:
                try:
                    self._finish(bytes(self.buf), reuse=False)
                except UpstreamTooLarge as big:
                    w.set_exception(big)
                except _BadResponse as bad:
                    w.set_exception(aiohttp.ClientPayloadError(f"malformed upstream response: {bad}"))
            else:
                w.set_exception(aiohttp.ServerDisconnectedError() if exc is None
                                else aiohttp.ClientOSError(*(exc.args or (0, str(exc)))))

    def start(self, data: bytes, waiter: asyncio.Future) -> None:
        self.waiter, self.got_data, self._head = waiter, False, None
        self.buf.clear()
        self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        w = self.waiter
        if w is None or w.done():
            self.closed = True  # unsolicited bytes: the connection is out of sync
            self.transport.close()  # type: ignore[union-attr]
            return
        self.buf += data
        try:
            if len(self.buf) > self.limit + 65536:  # a body (plus framing) over the limit: stop reading
                raise UpstreamTooLarge(self.limit)
            self._parse()
        except UpstreamTooLarge as exc:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]
            if not w.done():
                w.set_exception(exc)
        except _BadResponse as exc:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]
            if not w.done():
                w.set_exception(aiohttp.ClientPayloadError(f"malformed upstream response: {exc}"))

    def _parse(self) -> None:
        buf = self.buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    raise _BadResponse("header section too large")
                return
            status_line, _, rest = bytes(buf[:end]).decode("latin-1").partition("\r\n")
            del buf[:end + 4]
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise _BadResponse(f"bad status line {status_line[:80]!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            for line in rest.split("\r\n") if rest else ():
                name, sep, value = line.partition(":")
                if not sep:
                    raise _BadResponse(f"bad header line {line[:80]!r}")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:  # interim (100 Continue): the real head follows
                self._parse()
                return
            self._head = (status, headers)
            te = headers.get("transfer-encoding", "").lower()
            self._chunked = "chunked" in te
            cl = headers.get("content-length")
            self._until_eof = False
            if self._chunked:
                self._need = -1
            elif cl is not None:
                if not cl.isdigit():
                    raise _BadResponse(f"bad Content-Length {cl[:40]!r}")
                self._need = int(cl)
                if self._need > self.limit:
                    raise UpstreamTooLarge(self.limit)
            elif status in (204, 304):
                self._need = 0
            else:
                self._need, self._until_eof = -1, True  # body ends when the server closes
        if self._until_eof:
            return
        if self._chunked:
            body = _dechunk(buf)
            if body is not None:
                self._finish(body, reuse=True)
        elif len(buf) >= self._need:
            self._finish(bytes(buf[:self._need]), reuse=len(buf) == self._need)

    def _finish(self, body: bytes, reuse: bool) -> None:
        status, headers = self._head  # type: ignore[misc]
        enc = headers.get("content-encoding")
        if enc and enc != "identity":
            body = _inflate(body, enc, self.limit)
        if not reuse or headers.get("connection", "").lower() == "close":
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        w, self.waiter = self.waiter, None
        self.buf.clear()
        if w is not None and not w.done():
            w.set_result(UpstreamResponse(status, headers, body))


def _inflate(body: bytes, enc: str, limit: int) -> bytes:
    """Decode a gzip/deflate body, stopping at `limit` decoded bytes (a bomb never inflates whole)."""
    d = zlib.decompressobj(47 if enc.lower() in ("gzip", "x-gzip") else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _BadResponse(f"cannot decode {enc} body: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise UpstreamTooLarge(limit)
    return out


def _dechunk(buf: bytearray) -> bytes | None:
    """The body of a complete chunked message in buf, or None while incomplete."""
    out, pos = [], 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadResponse(f"bad chunk size {size_text[:20]!r}") from None
        start = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)  # trailers (usually none) end with a blank line
            if end < 0:
                return None
            if len(buf) != end + 4:
                raise _BadResponse("bytes after the last chunk")
            return b"".join(out)
        if len(buf) < start + size + 2:
            return None
        out.append(bytes(buf[start:start + size]))
        pos = start + size + 2


class _Target:
    __slots__ = ("host", "port", "head", "headers")

    def __init__(self, host: str, port: int, head: bytes, headers: dict[str, str]):
        self.host, self.port, self.head, self.headers = host, port, head, headers


class LeanClient:
    """POST a body to a plain-http upstream and read the whole answer (keep-alive pool).

    `post` returns None for URLs it does not handle (https, ...): use aiohttp for those.
    Errors are aiohttp's (ClientError subclasses) or asyncio.TimeoutError, like aiohttp's."""

    def __init__(self, max_idle_per_host: int = 256, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES):
        self.max_response_bytes = max_response_bytes
        self._targets: dict[str, _Target | None] = {}
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._max_idle = max_idle_per_host

    def _target(self, url: str, headers: dict[str, str]) -> _Target | None:
        t = self._targets.get(url, False)
        if t is not False and (t is None or t.headers == headers):
            return t  # type: ignore[return-value]
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname or u.username or u.password:
            self._targets[url] = None
            return None
        port = u.port or 80
        host_hdr = u.hostname if port == 80 else f"{u.hostname}:{port}"
        if ":" in u.hostname:  # IPv6 literal
            host_hdr = f"[{u.hostname}]" + ("" if port == 80 else f":{port}")
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        lines = [f"POST {path} HTTP/1.1", f"Host: {host_hdr}"]
        for k, v in headers.items():
            if k.lower() not in ("host", "content-length", "connection", "transfer-encoding"):
                lines.append(f"{k}: {v}")
        head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        t = _Target(u.hostname, port, head, dict(headers))
        self._targets[url] = t
        return t

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, total_s: float | None,
                   connect_s: float | None) -> UpstreamResponse | None:
        t = self._target(url, headers)
        if t is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = None if total_s is None else loop.time() + total_s
        data = b"".join((t.head, str(len(body)).encode(), b"\r\n\r\n", body))
        key = (t.host, t.port)
        idle = self._idle.get(key)
        for attempt in (0, 1):
            conn = None
            while idle:
                c = idle.pop()
                if not c.closed:
                    conn = c
                    break
            reused = conn is not None
            if conn is None:
                conn = await self._connect(loop, t, connect_s, deadline)
            waiter = loop.create_future()
            conn.start(data, waiter)
            timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
            try:
                resp = await waiter
            except aiohttp.ServerDisconnectedError:
                # A pooled connection the server had already closed: retry once on a new one.
                if reused and not conn.got_data and attempt == 0:
                    idle = None
                    continue
                raise
            except BaseException:
                conn.closed = True
                if conn.transport is not None:
                    conn.transport.close()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            if not conn.closed:
                pool = self._idle.setdefault(key, [])
                if len(pool) < self._max_idle:
                    pool.append(conn)
                else:
                    conn.transport.close()  # type: ignore[union-attr]
            return resp
        raise AssertionError("unreachable")

    async def _connect(self, loop, t: _Target, connect_s: float | None, deadline: float | None) -> _Conn:
        limit = connect_s
        if deadline is not None:
            left = max(0.0, deadline - loop.time())
            limit = left if limit is None else min(limit, left)
        try:
            if limit is None:
                _, conn = await loop.create_connection(self._protocol, t.host, t.port)
            else:
                async with asyncio.timeout(limit):
                    _, conn = await loop.create_connection(self._protocol, t.host, t.port)
        except OSError as exc:
            raise aiohttp.ClientConnectorError(_ConnKey(t.host, t.port), exc) from None
        return conn

    def _protocol(self) -> _Conn:
        return _Conn(self.max_response_bytes)

    def close(self) -> None:
        for pool in self._idle.values():
            for c in pool:
                if c.transport is not None:
                    c.transport.close()
        self._idle.clear()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class _ConnKey:
    """The minimal connection key aiohttp.ClientConnectorError formats its message from."""

    def __init__(self, host: str, port: int):
        self.host, self.port, self.ssl = host, port, False
