"""aiohttp's side of a connection, guarded: a head timeout, one keep-alive timeout, clean 400s.

aiohttp's RequestHandler closes a connection idle between requests after `keepalive_timeout`,
but a request head that is still arriving (slowloris: one header byte every few seconds) is
not bounded by anything shorter. `GuardedHandler` adds a head deadline: from the first byte
of a request (or from the hand-over by the lean front, which passes its own deadline on), the
whole head must be parsed within `head_timeout_s`, else the client gets a 408 and the
connection is closed. Its parse errors (a malformed head: bare CR, a control byte in a
value) are answered with an OpenAI-style 400 that names the problem but never quotes the
raw line, and are logged in one line without it: aiohttp's own handler logs the line, and a
key with a trailing CR or control byte ended up in the log in full.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tokenomy.gateway.errors import error_body

log = logging.getLogger("tokenomy.gateway")


def _reason(exc: BaseException | None) -> str:
    """What is wrong with a head, without the offending bytes (they may hold a key)."""
    msg = getattr(exc, "message", None) or ""
    first = str(msg).strip().splitlines()[0].strip() if str(msg).strip() else ""
    if not first or "b'" in first or 'b"' in first or len(first) > 80:
        first = type(exc).__name__ if exc is not None else "bad request"
    return first.rstrip(":")


def timeout_response() -> bytes:
    body = error_body(408, "request head not received in time", code="request_timeout")
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class GuardedHandler(RequestHandler):
    __slots__ = ("_head_s", "_head_timer", "_head_count", "head_deadline")

    def __init__(self, manager: Any, *, head_timeout_s: float, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._head_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0
        self.head_deadline: float | None = None  # loop time; set by the lean front at hand-over

    # -------------------------------------------------------------- head deadline
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.head_deadline is not None:
            self._arm(self.head_deadline)

    def data_received(self, data: bytes) -> None:
        idle = self._head_timer is None and not self._messages and self._current_request is None
        super().data_received(data)
        if self._request_count != self._head_count:  # a whole head was parsed
            self._head_count = self._request_count
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
        elif idle and not self._force_close and self._head_s > 0:
            self._arm(self._loop.time() + self._head_s)  # the first bytes of a new head

    def _arm(self, when: float) -> None:
        self._head_count = self._request_count
        self._head_timer = self._loop.call_at(when, self._head_expired)

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._request_count != self._head_count or self._force_close:
            return
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(timeout_response())
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def is_idle(self) -> bool:
        """Between requests with nothing received: safe to close to make room."""
        w = self._waiter
        return (w is not None and not w.done() and not self._messages and self._head_timer is None
                and self._current_request is None)

    # -------------------------------------------------------------- errors without the raw bytes
    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status != 400:
            return super().handle_error(request, status, exc, message)
        reason = _reason(exc)
        log.info("malformed request head from %s: %s", getattr(request, "remote", None), reason)
        resp = web.Response(status=400, content_type="application/json",
                            body=error_body(400, f"malformed HTTP request: {reason}", code="bad_request"))
        resp.force_close()
        return resp


def handler_factory(server: web.Server, *, head_timeout_s: float, idle_timeout_s: float):
    """A protocol factory like `server()` (web.Server.__call__) building GuardedHandlers."""
    kwargs = dict(getattr(server, "_kwargs", {}))
    kwargs["keepalive_timeout"] = idle_timeout_s
    # aiohttp "lingers" up to 10 s after a response to drain a body the handler did not read (a
    # refusal before the body, a 408 for a trickled one): a slow client would hold the
    # connection that long. Close at once instead; the response has been written by then.
    kwargs["lingering_time"] = 0
    loop = server._loop  # noqa: SLF001 - the server's own loop, as web.Server.__call__ passes it

    def make() -> GuardedHandler:
        return GuardedHandler(server, loop=loop, head_timeout_s=head_timeout_s, **kwargs)

    return make
