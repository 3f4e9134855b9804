"""The chat lifecycle's OpenAI SSE stream, re-framed as the Responses API's typed events.

Relay and settle write OpenAI chat events (`data: {chunk}`, the usage chunk, `: x-tokenomy`
comment, `data: [DONE]`, or `data: {"error"}` when a stream broke); `ResponsesEncoder.feed`
turns them into the Responses stream as they pass (each event `event: <type>` + `data:` with a
`sequence_number`):

    response.created, response.in_progress                  first chunk
    response.output_item.added (message), response.content_part.added, response.output_text.delta ...
    response.output_item.added (function_call), response.function_call_arguments.delta ...
    ... .done events, then response.completed (or response.incomplete) with the billed usage   at [DONE]
    error                                                   a broken stream; nothing follows it

SSE comments (`: x-tokenomy {...}`, the billed cost) pass through: SSE clients ignore them.
"""

from __future__ import annotations

import orjson

from tokenomy.gateway.responses.response import ResponseShape, responses_usage
from tokenomy.gateway.sse_reframe import SseReframer


class ResponsesEncoder(SseReframer):
    """OpenAI chat SSE bytes in, Responses SSE bytes out (stateful, one per response)."""

    def __init__(self, shape: ResponseShape) -> None:
        super().__init__()
        self.shape = shape
        self.seq = 0
        self.started = False
        self.text: list[str] | None = None  # the message item's text (None: no message item yet)
        self.calls: dict[int, dict] = {}  # chat tool_calls index -> {output_index, id, call_id, name, args}
        self.n_items = 0
        self.text_index = -1
        self.finish: str | None = None

    def _ev(self, out: list[bytes], data: dict) -> None:
        data["sequence_number"] = self.seq
        self.seq += 1
        out.append(b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")

    def on_done(self, out: list[bytes]) -> None:
        self._start(out)
        self._finish(out)

    def on_error(self, e: dict, out: list[bytes]) -> None:
        self._ev(out, {"type": "error", "code": e.get("code"), "message": str(e.get("message", "stream error")),
                       "param": e.get("param")})

    def _start(self, out: list[bytes]) -> None:
        if self.started:
            return
        self.started = True
        r = self.shape.envelope("in_progress", [], None)
        self._ev(out, {"type": "response.created", "response": r})
        self._ev(out, {"type": "response.in_progress", "response": r})

    def _choice(self, c: dict, out: list[bytes]) -> None:
        delta = c.get("delta") if isinstance(c.get("delta"), dict) else {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.text is None:
                self.text, self.text_index = [], self.n_items
                self.n_items += 1
                item = self.shape.message_item("", "in_progress")
                item["content"] = []
                self._ev(out, {"type": "response.output_item.added", "output_index": self.text_index, "item": item})
                self._ev(out, {"type": "response.content_part.added", "item_id": item["id"],
                               "output_index": self.text_index, "content_index": 0,
                               "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
            self.text.append(text)
            self._ev(out, {"type": "response.output_text.delta", "item_id": self.shape.item_id("msg", 0),
                           "output_index": self.text_index, "content_index": 0, "delta": text, "logprobs": []})
        for tc in delta.get("tool_calls") or ():
            if not isinstance(tc, dict):
                continue
            k = tc.get("index", 0)
            f = tc.get("function") if isinstance(tc.get("function"), dict) else {}
            call = self.calls.get(k)
            if call is None:
                n = len(self.calls)
                call = self.calls[k] = {"output_index": self.n_items, "n": n, "call_id": str(tc.get("id") or f"call_{n}"),
                                        "name": str(f.get("name") or ""), "args": []}
                self.n_items += 1
                self._ev(out, {"type": "response.output_item.added", "output_index": call["output_index"],
                               "item": self.shape.call_item(n, call["call_id"], call["name"], "", "in_progress")})
            args = f.get("arguments")
            if isinstance(args, str) and args:
                call["args"].append(args)
                self._ev(out, {"type": "response.function_call_arguments.delta",
                               "item_id": self.shape.item_id("fc", call["n"]), "output_index": call["output_index"],
                               "delta": args})
        if c.get("finish_reason"):
            self.finish = c["finish_reason"]

    def _finish(self, out: list[bytes]) -> None:
        items: list[tuple[int, dict]] = []
        if self.text is not None:
            text = "".join(self.text)
            item = self.shape.message_item(text)
            part = item["content"][0]
            self._ev(out, {"type": "response.output_text.done", "item_id": item["id"], "output_index": self.text_index,
                           "content_index": 0, "text": text, "logprobs": []})
            self._ev(out, {"type": "response.content_part.done", "item_id": item["id"], "output_index": self.text_index,
                           "content_index": 0, "part": part})
            self._ev(out, {"type": "response.output_item.done", "output_index": self.text_index, "item": item})
            items.append((self.text_index, item))
        for call in self.calls.values():
            args = "".join(call["args"])
            item = self.shape.call_item(call["n"], call["call_id"], call["name"], args)
            self._ev(out, {"type": "response.function_call_arguments.done", "item_id": item["id"],
                           "output_index": call["output_index"], "name": call["name"], "arguments": args})
            self._ev(out, {"type": "response.output_item.done", "output_index": call["output_index"], "item": item})
            items.append((call["output_index"], item))
        output = [item for _, item in sorted(items, key=lambda t: t[0])]
        r = self.shape.envelope("completed", output, responses_usage(self.usage), self.finish)
        self._ev(out, {"type": "response.completed" if r["status"] == "completed" else "response.incomplete",
                       "response": r})
        self.ended = True
