"""Parsing and validating OpenAI request bodies into what the engine needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tokenomy.tokens import count_chat_tokens, count_tokens

from .errors import ApiError

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    model: str
    prompt_tokens: int
    canonical_prompt: bytes  # what the output is seeded from
    max_tokens: int | None
    stream: bool
    include_usage: bool
    seed: int | None


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def _type_error(param: str, expected: str) -> ApiError:
    return ApiError(400, f"'{param}' must be {expected}", param=param, code="invalid_type")


def _opt_int(body: dict[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an integer")
    if value < minimum:
        raise ApiError(400, f"'{name}' must be >= {minimum}, got {value}", param=name, code="invalid_value")
    return value


def _opt_number(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise _type_error(name, "a number")


def _common(body: dict[str, Any]) -> tuple[str, bool, bool, int | None]:
    model = body.get("model")
    if model is None:
        raise ApiError(400, "missing required field 'model'", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _type_error("model", "a non-empty string")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _type_error("stream", "a boolean")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise _type_error("stream_options", "an object")
        inc = options.get("include_usage")
        if inc is not None and not isinstance(inc, bool):
            raise _type_error("stream_options.include_usage", "a boolean")
        include_usage = bool(inc)
    n = _opt_int(body, "n", 1)
    if n is not None and n != 1:
        raise ApiError(400, "only n=1 is supported by this server", param="n", code="unsupported_value")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _opt_number(body, name)
    seed = _opt_int(body, "seed", -(2**63))
    return model, bool(stream), include_usage, seed


def parse_chat(body: dict[str, Any]) -> ParsedRequest:
    model, stream, include_usage, seed = _common(body)
    messages = body.get("messages")
    if messages is None:
        raise ApiError(400, "missing required field 'messages'", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise _type_error("messages", "a non-empty array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _type_error(f"messages[{i}]", "an object")
        role = message.get("role")
        if role is None:
            raise ApiError(400, f"missing required field 'messages[{i}].role'", param=f"messages[{i}].role",
                           code="missing_required_parameter")
        if role not in _ROLES:
            raise ApiError(400, f"'messages[{i}].role' must be one of {sorted(_ROLES)}, got {role!r}",
                           param=f"messages[{i}].role", code="invalid_value")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _type_error(f"messages[{i}].content", "a string or an array of content parts")
    max_tokens = _opt_int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _opt_int(body, "max_tokens", 1)
    else:
        _opt_int(body, "max_tokens", 1)
    return ParsedRequest(model, count_chat_tokens(messages),
                         orjson.dumps(messages, option=orjson.OPT_SORT_KEYS),
                         max_tokens, stream, include_usage, seed)


def parse_completion(body: dict[str, Any]) -> ParsedRequest:
    model, stream, include_usage, seed = _common(body)
    if "prompt" not in body or body["prompt"] is None:
        raise ApiError(400, "missing required field 'prompt'", param="prompt", code="missing_required_parameter")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        prompt_tokens = count_tokens(prompt)
    elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompt_tokens = len(prompt)  # token ids
    elif isinstance(prompt, list):
        raise ApiError(400, "batched prompts are not supported by this server; send one prompt per request",
                       param="prompt", code="unsupported_value")
    else:
        raise _type_error("prompt", "a string or an array of token ids")
    if body.get("echo") is True:
        raise ApiError(400, "'echo' is not supported by this server", param="echo", code="unsupported_value")
    max_tokens = _opt_int(body, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = 16  # OpenAI's legacy completions default
    return ParsedRequest(model, prompt_tokens, orjson.dumps(prompt), max_tokens, stream, include_usage, seed)
