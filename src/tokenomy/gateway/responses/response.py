"""An OpenAI chat answer as a Responses API `response` object. Pure.

    resp = ResponseShape(resp_id, request_body, model).response(completion)   # unary
    shape.usage(openai_usage)  -> {"input_tokens", "input_tokens_details": {"cached_tokens"},
                                   "output_tokens", "output_tokens_details": {"reasoning_tokens"}, "total_tokens"}

Output items: the text as a `message` item (one output_text part), each tool call as a
`function_call` item. finish_reason length / content_filter -> status `incomplete` with
incomplete_details.reason max_output_tokens / content_filter. Usage is the chat usage renamed
(input and output counts include cached and reasoning tokens in both APIs).
"""

from __future__ import annotations

import time

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _int(x: object) -> int:
    return x if type(x) is int and x >= 0 else 0


def responses_usage(u: object) -> dict:
    u = u if isinstance(u, dict) else {}
    pd = u.get("prompt_tokens_details") if isinstance(u.get("prompt_tokens_details"), dict) else {}
    cd = u.get("completion_tokens_details") if isinstance(u.get("completion_tokens_details"), dict) else {}
    inp, out = _int(u.get("prompt_tokens")), _int(u.get("completion_tokens"))
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": _int(pd.get("cached_tokens"))},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": _int(cd.get("reasoning_tokens"))},
            "total_tokens": inp + out}


class ResponseShape:
    """The fields of one response that echo its request (ids, model, parameters)."""

    __slots__ = ("id", "body", "model", "created_at")

    def __init__(self, resp_id: str, body: dict, model: str) -> None:
        self.id, self.body, self.model = resp_id, body, model
        self.created_at = int(time.time())

    def item_id(self, prefix: str, n: int) -> str:
        return f"{prefix}_{self.id.removeprefix('resp_')}{n}"

    def envelope(self, status: str, output: list, usage: dict | None, finish: str | None = None) -> dict:
        b = self.body
        reason = _INCOMPLETE.get(finish or "")
        if reason is not None and status == "completed":
            status = "incomplete"
        fmt = b.get("text") if isinstance(b.get("text"), dict) else {}
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": status,
                "error": None, "incomplete_details": {"reason": reason} if status == "incomplete" else None,
                "instructions": b.get("instructions"), "max_output_tokens": b.get("max_output_tokens"),
                "model": self.model, "output": output, "parallel_tool_calls": b.get("parallel_tool_calls", True),
                "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": False,
                "temperature": b.get("temperature"), "top_p": b.get("top_p"),
                "text": {"format": fmt.get("format") or {"type": "text"}},
                "tool_choice": b.get("tool_choice", "auto"), "tools": b.get("tools") or [], "truncation": "disabled",
                "usage": usage, "user": b.get("user"), "metadata": b.get("metadata") or {}}

    def message_item(self, text: str, status: str = "completed") -> dict:
        return {"id": self.item_id("msg", 0), "type": "message", "status": status, "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}

    def call_item(self, n: int, call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
        return {"id": self.item_id("fc", n), "type": "function_call", "status": status, "call_id": call_id,
                "name": name, "arguments": arguments}

    def response(self, completion: dict) -> dict:
        """A unary chat.completion as a completed (or incomplete) response."""
        choices = completion.get("choices")
        c = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        msg = c.get("message") if isinstance(c.get("message"), dict) else {}
        output: list = []
        text = msg.get("content")
        if isinstance(text, str) and (text or not msg.get("tool_calls")):
            output.append(self.message_item(text))
        for n, tc in enumerate(msg.get("tool_calls") or ()):
            f = tc.get("function") if isinstance(tc, dict) and isinstance(tc.get("function"), dict) else {}
            output.append(self.call_item(n, str(tc.get("id") or f"call_{n}"), str(f.get("name", "")),
                                         str(f.get("arguments", ""))))
        finish = c.get("finish_reason")
        return self.envelope("completed", output, responses_usage(completion.get("usage")),
                             finish if isinstance(finish, str) else None)
