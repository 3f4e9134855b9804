"""The aiohttp handler of POST /v1/responses and the per-request inbound translation it carries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from tokenomy.gateway.messages.sse import MessagesSse as EncodedSse  # an SSE response re-framed by an encoder
from tokenomy.gateway.responses.request import to_chat
from tokenomy.gateway.responses.response import ResponseShape
from tokenomy.gateway.responses.sse import ResponsesEncoder

if TYPE_CHECKING:
    from tokenomy.gateway.lifecycle.state import RequestCtx


class ResponsesInbound:
    """The Responses side of one request (the lifecycle's `inbound` protocol, as gateway/messages):
    admission translates its body (`to_chat`), settle asks it for the stream response
    (`sse_response`), the handler translates a unary answer back (`answer`)."""

    __slots__ = ("body", "warnings")

    def __init__(self) -> None:
        self.body: dict = {}
        self.warnings: list[str] = []

    def to_chat(self, body: dict) -> dict:
        self.body = body
        chat, dropped = to_chat(body)
        if dropped:
            self.warnings = [f"dropped (no chat-completions equivalent): {', '.join(dropped)}"]
        return chat

    def _shape(self, rid: str) -> ResponseShape:
        model = self.body.get("model")
        return ResponseShape("resp_" + rid.removeprefix("req_"), self.body, model if isinstance(model, str) else "")

    def sse_response(self, ctx: RequestCtx, headers: dict[str, str]) -> web.StreamResponse:
        return EncodedSse(ResponsesEncoder(self._shape(ctx.rid)), status=200, headers=headers)

    def answer(self, resp: web.StreamResponse) -> web.StreamResponse:
        """A unary answer of the chat lifecycle as a `response` object; errors (OpenAI-shaped in
        both APIs) and streams (already framed) as they are."""
        if resp.prepared or not isinstance(resp, web.Response) or not isinstance(resp.body, bytes) \
                or resp.status >= 400:
            return resp
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-length", "content-type")}
        try:
            completion = orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            completion = None
        if not isinstance(completion, dict):
            err = {"error": {"message": "upstream answer is not JSON", "type": "upstream_error", "param": None,
                             "code": "upstream_garbage"}}
            return web.Response(status=502, body=orjson.dumps(err), content_type="application/json", headers=headers)
        body = self._shape(headers.get("x-tokenomy-request-id", "req_")).response(completion)
        return web.Response(status=200, body=orjson.dumps(body), content_type="application/json", headers=headers)


async def responses(request: web.Request) -> web.StreamResponse:
    from tokenomy.gateway.app import GATEWAY_KEY  # lazy: app.py imports this module

    inbound = ResponsesInbound()
    resp = await request.app[GATEWAY_KEY].handle(request, "chat", inbound=inbound)
    return inbound.answer(resp)
