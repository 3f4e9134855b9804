"""The aiohttp handler of POST /v1/messages and the per-request `Inbound` the lifecycle carries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from tokenomy.gateway.messages.request import to_chat, uncounted_text
from tokenomy.gateway.lifecycle.state import header_safe
from tokenomy.gateway.messages.response import native_message, to_error, to_message
from tokenomy.gateway.messages.sse import MessagesEncoder, MessagesSse

if TYPE_CHECKING:
    from tokenomy.gateway.lifecycle.state import RequestCtx


class Inbound:
    """The Anthropic side of one request: admission translates its body (`to_chat`), dispatch
    tells it each attempt's deployment (`attempt`), settle asks it for the stream response
    (`sse_response`), the handler translates the answer back (`answer`).

    Native relay: an attempt on a deployment whose adapter speaks Messages itself
    (`build_native`: provider anthropic) sends the client's body as it is (model swapped), and
    the answer comes back as Anthropic sent it (`x_native`, carried through the chat lifecycle,
    which still meters it from the translated usage). Fallbacks elsewhere use the translation."""

    __slots__ = ("model", "stops", "warnings", "dropped", "body", "client_headers", "native", "chat_messages", "_base",
                 "uncounted_text")

    def __init__(self, client_headers: dict[str, str] | None = None) -> None:
        self.model = ""
        self.stops: list[str] = []
        self.warnings: list[str] = []  # what admission adds to x-tokenomy-warning (none: see `attempt`)
        self.dropped = ""  # the translation's dropped-field warning (not true of a native relay)
        self.body: dict = {}  # the client's Messages body
        # the client's anthropic-version / anthropic-beta (a native relay forwards them)
        self.client_headers = client_headers or {}
        self.native = False  # the current attempt is relayed natively
        self.chat_messages: object = None
        self._base: str | None = None
        self.uncounted_text = ""  # prompt text the translation leaves out (admission counts it)

    def to_chat(self, body: dict) -> dict:
        chat, warnings = to_chat(body)  # validates the body: a native relay sends only what translates
        self.body, self.dropped = body, "; ".join(warnings)
        self.model = chat["model"]
        self.stops = chat.get("stop", [])
        self.chat_messages = chat["messages"]
        self.uncounted_text = uncounted_text(body)
        return chat

    def attempt(self, ctx: RequestCtx, d) -> None:
        # A call with a body of its own (a cascade's judge) is not the client's request.
        self.native = (getattr(d.adapter, "build_native", None) is not None
                       and ctx.body.get("messages") is self.chat_messages)
        if not self.dropped:
            return
        if self._base is None:  # the header as admission left it
            self._base = ctx.headers.get("x-tokenomy-warning", "")
        w = self._base if self.native else "; ".join(x for x in (self._base, self.dropped) if x)
        if w:
            ctx.headers["x-tokenomy-warning"] = header_safe(w)
        else:
            ctx.headers.pop("x-tokenomy-warning", None)

    def sse_response(self, ctx: RequestCtx, headers: dict[str, str]) -> web.StreamResponse:
        enc = MessagesEncoder("msg_" + ctx.rid.removeprefix("req_"), self.model, ctx.input_tokens, self.stops)
        return MessagesSse(enc, status=200, headers=headers)

    def answer(self, resp: web.StreamResponse) -> web.StreamResponse:
        """A unary answer (or any refusal / error) of the chat lifecycle, in Anthropic's shape."""
        if resp.prepared or not isinstance(resp, web.Response) or not isinstance(resp.body, bytes):
            return resp  # a stream: already framed by MessagesSse
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-length", "content-type")}
        rid = headers.get("x-tokenomy-request-id", "req_")
        if resp.status >= 400:
            status, body, final = to_error(resp.status, resp.body)
            if final:
                headers["x-should-retry"] = "false"
            body["request_id"] = rid
        else:
            status = 200
            try:
                obj = orjson.loads(resp.body)
                native = obj.get("x_native")
                body = native_message(native, obj.get("usage"), self.model) if isinstance(native, dict) \
                    else to_message(obj, self.model, self.stops, rid)
            except (orjson.JSONDecodeError, AttributeError):
                status, body, _ = to_error(502, b'{"error": {"message": "upstream answer is not JSON"}}')
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


async def messages(request: web.Request) -> web.StreamResponse:
    from tokenomy.gateway.app import GATEWAY_KEY  # lazy: app.py imports this module

    inbound = Inbound({k: request.headers[k] for k in ("anthropic-version", "anthropic-beta") if k in request.headers})
    resp = await request.app[GATEWAY_KEY].handle(request, "chat", inbound=inbound)
    return inbound.answer(resp)
