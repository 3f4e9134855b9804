"""The chat lifecycle's OpenAI SSE stream, re-framed as Anthropic's Messages stream.

Relay and settle write OpenAI events (`data: {chunk}`, the usage chunk, `: x-tokenomy` comment,
`data: [DONE]`, or `data: {"error"}` when a stream broke) to the response; `MessagesSse.write`
turns them into Anthropic's event types as they pass:

    message_start (+ ping)  first chunk; usage.input_tokens = the gateway's own prompt count
    content_block_start / content_block_delta (text_delta | input_json_delta) / content_block_stop
    message_delta           stop_reason, stop_sequence and the billed usage (exact: the usage chunk)
    message_stop            at [DONE]
    error                   `event: error` {"type": "error", "error": {...}}; nothing follows it

SSE comments (`: x-tokenomy {...}`, the billed cost) pass through: SSE clients ignore them.

Native relay (an Anthropic deployment; gateway/providers/anthropic.py): the chunks carry the
upstream's own events (`x_native`), re-emitted in order as they came (message_start's `model`
set to the alias asked for), whatever the chunk itself says. message_delta and message_stop
ride on the usage chunk, so they reach the client only after the request's event is committed,
at [DONE]; message_delta's usage then says what was billed when that differs from what the
upstream reported (a bounded or missing count).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from tokenomy.gateway.messages.response import anthropic_usage, billed_usage, error_type, stop_reason, tool_stop
from tokenomy.gateway.sse_reframe import SseReframer


def _event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessagesEncoder(SseReframer):
    """OpenAI SSE bytes in, Anthropic SSE bytes out (stateful, one per response)."""

    def __init__(self, msg_id: str, model: str, input_tokens: int, stops: list[str]) -> None:
        super().__init__()
        self.msg_id, self.model, self.input_tokens, self.stops = msg_id, model, input_tokens, stops
        self.started = False
        self.block = -1  # index of the open content block (-1: none)
        self.block_kind: str | None = None  # "text" | "tool"
        self.tools: dict[int, int] = {}  # OpenAI tool_calls index -> content block index
        self.n_blocks = 0
        self.finish: tuple[str, str | None] | None = None
        self.native = False  # the upstream's own events are relayed (x_native)
        self.start_usage: dict = {}  # native: message_start's usage
        self.held: list | None = None  # native: message_delta / message_stop, sent at [DONE]

    def on_chunk(self, obj: dict, out: list[bytes]) -> None:
        nat = obj.get("x_native")
        if nat is None and not self.native:
            super().on_chunk(obj, out)
            return
        self.native = True
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        if not isinstance(nat, list):
            return
        if not obj.get("choices") and "usage" in obj:  # the usage chunk: the stream's last events
            self.held = nat
            return
        for name, ev in nat:
            if name == "message_start" and isinstance(ev, dict) and isinstance(ev.get("message"), dict):
                m = ev["message"]
                self.start_usage = m["usage"] if isinstance(m.get("usage"), dict) else {}
                ev = {**ev, "message": {**m, "model": self.model}}
            out.append(_event(str(name), ev))

    def _native_end(self, out: list[bytes]) -> None:
        if not self.held:  # no end events came with the usage (not from our decoder): close it ourselves
            self.held = [["message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                                "stop_sequence": None},
                                            "usage": {"output_tokens": 0}}],
                         ["message_stop", {"type": "message_stop"}]]
        for name, ev in self.held:
            if name == "message_delta" and isinstance(ev, dict):
                du = ev.get("usage") if isinstance(ev.get("usage"), dict) else {}
                seen = {**self.start_usage, **{k: v for k, v in du.items() if v is not None}}  # what the SDK reads
                fixed = billed_usage(seen, self.usage)
                if fixed is not None:
                    ev = {**ev, "usage": {**du, **{k: fixed[k] for k in ("input_tokens", "output_tokens",
                                                                         "cache_read_input_tokens",
                                                                         "cache_creation_input_tokens")}}}
            out.append(_event(str(name), ev))

    def on_done(self, out: list[bytes]) -> None:
        if self.native:
            self._native_end(out)
            return
        self._start(out)
        self._close_block(out)
        reason, seq = self.finish or ("end_turn", None)
        usage = anthropic_usage(self.usage) if self.usage is not None else {"output_tokens": 0}
        out.append(_event("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": reason, "stop_sequence": seq},
                                            "usage": usage}))
        out.append(_event("message_stop", {"type": "message_stop"}))

    def on_error(self, e: dict, out: list[bytes]) -> None:
        etype = "rate_limit_error" if e.get("type") == "rate_limit_error" else error_type(500)
        out.append(_event("error", {"type": "error", "error": {"type": etype,
                                                               "message": str(e.get("message", "stream error"))}}))

    def _choice(self, c: dict, out: list[bytes]) -> None:
        delta = c.get("delta") if isinstance(c.get("delta"), dict) else {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.block_kind != "text":
                self._open(out, {"type": "text", "text": ""}, "text")
            out.append(_event("content_block_delta", {"type": "content_block_delta", "index": self.block,
                                                      "delta": {"type": "text_delta", "text": text}}))
        for tc in delta.get("tool_calls") or ():
            if not isinstance(tc, dict):
                continue
            k = tc.get("index", 0)
            f = tc.get("function") if isinstance(tc.get("function"), dict) else {}
            if k not in self.tools:
                self._open(out, {"type": "tool_use", "id": tc.get("id") or f"toolu_{self.n_blocks}",
                                 "name": f.get("name", ""), "input": {}}, "tool")
                self.tools[k] = self.block
            args = f.get("arguments")
            if isinstance(args, str) and args:
                if self.tools[k] != self.block:  # chat interleaves calls; Anthropic blocks do not
                    continue
                out.append(_event("content_block_delta", {"type": "content_block_delta", "index": self.block,
                                                          "delta": {"type": "input_json_delta", "partial_json": args}}))
        if c.get("finish_reason"):
            reason, seq = stop_reason(c["finish_reason"], c, self.stops)
            self.finish = (tool_stop(reason, bool(self.tools)), seq)

    # ------------------------------------------------------------------ framing
    def _start(self, out: list[bytes]) -> None:
        if self.started:
            return
        self.started = True
        out.append(_event("message_start", {"type": "message_start", "message": {
            "id": self.msg_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}}))
        out.append(_event("ping", {"type": "ping"}))

    def _open(self, out: list[bytes], block: dict, kind: str) -> None:
        self._close_block(out)
        self.block, self.block_kind = self.n_blocks, kind
        self.n_blocks += 1
        out.append(_event("content_block_start", {"type": "content_block_start", "index": self.block,
                                                  "content_block": block}))

    def _close_block(self, out: list[bytes]) -> None:
        if self.block >= 0 and self.block_kind is not None:
            out.append(_event("content_block_stop", {"type": "content_block_stop", "index": self.block}))
        self.block_kind = None


class MessagesSse(web.StreamResponse):
    """An SSE response whose writes are re-framed by a MessagesEncoder."""

    def __init__(self, encoder: MessagesEncoder, **kw) -> None:
        super().__init__(**kw)
        self.encoder = encoder

    async def write(self, data) -> None:  # type: ignore[override]
        out = self.encoder.feed(bytes(data))
        if out:
            await super().write(out)
