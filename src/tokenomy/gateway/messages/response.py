"""An OpenAI chat answer (or error) as the Anthropic Messages API's. Pure.

    to_message(completion, model, stops)  -> {"type": "message", "content": [...], "stop_reason", "usage"}
    anthropic_usage(openai_usage)         -> {"input_tokens", "output_tokens", "cache_read_input_tokens",
                                              "cache_creation_input_tokens"}
    to_error(status, openai_error_body)   -> (status, {"type": "error", "error": {"type", "message"}})

Usage: OpenAI's prompt_tokens include cached (and cache-write) tokens, Anthropic's input_tokens
do not: input = prompt - cached - cache_write. stop_reason: length -> max_tokens, tool_calls ->
tool_use, content_filter -> refusal, stop -> stop_sequence when the upstream names the stop
sequence it hit (vLLM's `stop_reason`), else end_turn.
"""

from __future__ import annotations

import orjson

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
         "content_filter": "refusal"}
# Anthropic's error types by status (docs.claude.com/en/api/errors, checked 2026-12): 402 is
# billing_error (the anthropic SDK's PaymentRequiredError: not retried).
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
          403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
          503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}
# Refusals that no retry will change before a reset: a spent budget, a blocking plan cap.
_BILLING_CODES = frozenset({"budget_exhausted", "plan_cap_reached"})


def _int(x: object) -> int:
    return x if type(x) is int and x >= 0 else 0


def anthropic_usage(u: object) -> dict:
    u = u if isinstance(u, dict) else {}
    details = u.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached, write = _int(details.get("cached_tokens")), _int(details.get("cache_write_tokens"))
    return {"input_tokens": max(0, _int(u.get("prompt_tokens")) - cached - write),
            "output_tokens": _int(u.get("completion_tokens")),
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": write}


def stop_reason(finish: object, choice: dict, stops: list[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of a choice's finish_reason."""
    hit = choice.get("stop_reason")
    if finish == "stop" and isinstance(hit, str) and hit in stops:
        return "stop_sequence", hit
    return _STOP.get(finish if isinstance(finish, str) else "stop", "end_turn"), None


def tool_stop(reason: str, has_tool_use: bool) -> str:
    """Anthropic ends a turn that calls tools with tool_use (also a forced tool: chat says stop)."""
    if has_tool_use and reason == "end_turn":
        return "tool_use"
    return "end_turn" if reason == "tool_use" and not has_tool_use else reason


def tool_input(arguments: object) -> dict:
    """A tool call's arguments (a JSON string) as the tool_use block's input object."""
    if isinstance(arguments, dict):
        return arguments
    try:
        x = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        return {"arguments": arguments}  # not JSON: kept, not lost
    return x if isinstance(x, dict) else {"value": x}


def to_message(obj: dict, model: str, stops: list[str], rid: str) -> dict:
    choices = obj.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[dict] = []
    if isinstance(msg.get("content"), str) and msg["content"]:
        content.append({"type": "text", "text": msg["content"]})
    for tc in msg.get("tool_calls") or ():
        f = tc.get("function") if isinstance(tc, dict) else None
        if isinstance(f, dict):
            content.append({"type": "tool_use", "id": tc.get("id") or f"toolu_{len(content)}",
                            "name": f.get("name", ""), "input": tool_input(f.get("arguments"))})
    reason, seq = stop_reason(choice.get("finish_reason"), choice, stops)
    reason = tool_stop(reason, any(b["type"] == "tool_use" for b in content))
    return {"id": "msg_" + rid.removeprefix("req_"), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": reason, "stop_sequence": seq, "usage": anthropic_usage(obj.get("usage"))}


def error_type(status: int) -> str:
    return _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def to_error(status: int, raw: bytes) -> tuple[int, dict, bool]:
    """(status, Anthropic error body, final: no retry can help) of an OpenAI-shaped error body."""
    try:
        err = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        err = None
    if isinstance(err, dict):
        message, code = str(err.get("message") or f"HTTP {status}"), err.get("code")
    elif isinstance(err, str):
        message, code = err, None
    else:
        message, code = f"HTTP {status}", None
    final = code in _BILLING_CODES
    if final:
        status = 402
    return status, {"type": "error", "error": {"type": error_type(status), "message": message}}, final


def error_event(status: int, message: str) -> bytes:
    """An Anthropic stream `event: error` (the HTTP status is already on the wire)."""
    return b"event: error\ndata: " + orjson.dumps({"type": "error", "error": {"type": error_type(status),
                                                                              "message": message}}) + b"\n\n"


USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def billed_usage(native_usage: object, billed_openai_usage: object) -> dict | None:
    """A native answer's `usage` with the billed figures where they differ from what the client
    would read (None: it already says what was billed). The gateway's figures win over an
    upstream's that it did not take as reported (bounded, or counted itself)."""
    u = native_usage if isinstance(native_usage, dict) else {}
    billed = anthropic_usage(billed_openai_usage)
    if all((u.get(k) if type(u.get(k)) is int else 0 if u.get(k) is None else -1) == billed[k] for k in USAGE_FIELDS):
        return None
    return {**u, **billed}


def native_message(msg: dict, billed_openai_usage: object, model: str) -> dict:
    """An Anthropic deployment's message, relayed as it came but for `model` (the alias the client
    asked for, as on the translated path) and a usage that must say what was billed."""
    out = {**msg, "model": model}
    fixed = billed_usage(msg.get("usage"), billed_openai_usage)
    if fixed is not None:
        out["usage"] = fixed
    return out
