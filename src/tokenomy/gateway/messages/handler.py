"""The aiohttp handler of POST /v1/messages and the per-request `Inbound` the lifecycle carries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from tokenomy.gateway.messages.request import to_chat
from tokenomy.gateway.messages.response import to_error, to_message
from tokenomy.gateway.messages.sse import MessagesEncoder, MessagesSse

if TYPE_CHECKING:
    from tokenomy.gateway.lifecycle.state import RequestCtx


class Inbound:
    """The Anthropic side of one request: admission translates its body (`to_chat`), settle asks
    it for the stream response (`sse_response`), the handler translates the answer back."""

    __slots__ = ("model", "stops", "warnings")

    def __init__(self) -> None:
        self.model = ""
        self.stops: list[str] = []
        self.warnings: list[str] = []

    def to_chat(self, body: dict) -> dict:
        chat, self.warnings = to_chat(body)
        self.model = chat["model"]
        self.stops = chat.get("stop", [])
        return chat

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
                body = to_message(orjson.loads(resp.body), self.model, self.stops, rid)
            except (orjson.JSONDecodeError, AttributeError):
                status, body, _ = to_error(502, b'{"error": {"message": "upstream answer is not JSON"}}')
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


async def messages(request: web.Request) -> web.StreamResponse:
    from tokenomy.gateway.app import GATEWAY_KEY  # lazy: app.py imports this module

    inbound = Inbound()
    resp = await request.app[GATEWAY_KEY].handle(request, "chat", inbound=inbound)
    return inbound.answer(resp)
