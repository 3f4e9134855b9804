"""Parsing and validating OpenAI request bodies into what the engine needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tokenomy.tokens import count_chat_tokens, count_tokens

from .errors import ApiError

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True, slots=True)
class Shape:
    """What the output must look like (OpenAI's request parameters the emulator honours)."""

    stop: tuple[str, ...] = ()  # the text ends before the first occurrence of any
    tool: tuple[str, dict] | None = None  # (name, parameters schema): answer with this tool call
    tool_forced_by_name: bool = False  # named tool_choice: finish_reason "stop" (OpenAI's behaviour)
    json: dict | None = None  # JSON mode: {} (any object) or the json_schema's schema
    logprobs: bool = False
    top_logprobs: int = 0
    # vLLM's sampling extensions (docs.vllm.ai, SamplingParams, 2026-11), which benchmarks send to
    # get equal output lengths everywhere: at least min_tokens, or all of max_tokens with ignore_eos
    min_tokens: int = 0
    ignore_eos: bool = False


PLAIN = Shape()


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    model: str
    prompt_tokens: int
    canonical_prompt: bytes  # what the output is seeded from
    max_tokens: int | None
    stream: bool
    include_usage: bool
    seed: int | None
    shape: Shape = PLAIN
    n: int = 1  # choices to generate (OpenAI's `n`)


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


# OpenAI's documented ranges (platform.openai.com/docs/api-reference/chat/create, 2026-11).
_RANGES = {"temperature": (0, 2), "top_p": (0, 1), "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2)}


def _range(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        return
    lo, hi = _RANGES[name]
    # OpenAI's wording and codes for out-of-range numbers
    if value < lo:
        raise ApiError(400, f"Invalid '{name}': decimal below minimum value. Expected a value >= {lo}, but got "
                            f"{value} instead.", param=name, code="decimal_below_min_value")
    if value > hi:
        raise ApiError(400, f"Invalid '{name}': decimal above maximum value. Expected a value <= {hi}, but got "
                            f"{value} instead.", param=name, code="decimal_above_max_value")


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
        raise _type_error("stop", "a string or an array of strings")
    if len(stop) > 4:
        raise ApiError(400, f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an "
                            f"array with length {len(stop)} instead.", param="stop", code="array_above_max_length")
    return tuple(x for x in stop if x)


def _tools(body: dict[str, Any]) -> dict[str, dict]:
    tools = body.get("tools")
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise _type_error("tools", "an array")
    out: dict[str, dict] = {}
    for i, t in enumerate(tools):
        f = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise ApiError(400, f"Invalid 'tools[{i}]': expected {{type: 'function', function: {{name, parameters}}}}",
                           param=f"tools[{i}]", code="invalid_value")
        params = f.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise _type_error(f"tools[{i}].function.parameters", "a JSON schema object")
        out[f["name"]] = params
    return out


def _shape(body: dict[str, Any], chat: bool) -> Shape:
    stop = _stop(body)
    tool, by_name, json_schema = None, False, None
    if chat:
        tools = _tools(body)
        tc = body.get("tool_choice")
        if tc is not None:
            if tc in ("none", "auto"):
                pass
            elif tc == "required":
                if not tools:
                    raise ApiError(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                                        "are specified.", param="tool_choice", code="invalid_value")
                name = sorted(tools)[0]
                tool = (name, tools[name])
            elif isinstance(tc, dict) and isinstance(tc.get("function"), dict) and isinstance(tc["function"].get("name"), str):
                name = tc["function"]["name"]
                if name not in tools:
                    raise ApiError(400, f"Invalid value for 'tool_choice': no function named '{name}' was specified "
                                        f"in the 'tools' parameter.", param="tool_choice", code="invalid_value")
                tool, by_name = (name, tools[name]), True
            else:
                raise ApiError(400, "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
                                    "{type: 'function', function: {name}}", param="tool_choice", code="invalid_value")
        rf = body.get("response_format")
        if rf is not None:
            t = rf.get("type") if isinstance(rf, dict) else None
            if t == "json_object":
                json_schema = {}
            elif t == "json_schema":
                js = rf.get("json_schema")
                if not isinstance(js, dict) or not isinstance(js.get("name"), str):
                    raise ApiError(400, "Missing required parameter: 'response_format.json_schema.name'.",
                                   param="response_format.json_schema.name", code="missing_required_parameter")
                sch = js.get("schema", {})
                if not isinstance(sch, dict):
                    raise _type_error("response_format.json_schema.schema", "a JSON schema object")
                json_schema = sch
            elif t != "text":
                raise ApiError(400, "Invalid value for 'response_format.type': expected 'text', 'json_object' or "
                                    "'json_schema'", param="response_format.type", code="invalid_value")
        lp = body.get("logprobs")
        if lp is not None and not isinstance(lp, bool):
            raise _type_error("logprobs", "a boolean")
        top = _opt_int(body, "top_logprobs", 0)
        if top is not None and top > 20:
            raise ApiError(400, f"Invalid 'top_logprobs': integer above maximum value. Expected a value <= 20, but got "
                                f"{top} instead.", param="top_logprobs", code="integer_above_max_value")
        if top is not None and not lp:
            raise ApiError(400, "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' "
                                "is set.", param="top_logprobs", code="invalid_value")
        return Shape(stop, tool, by_name, json_schema, bool(lp), top or 0, *_length_controls(body))
    lp = _opt_int(body, "logprobs", 0)  # legacy completions: an integer, at most 5
    if lp is not None and lp > 5:
        raise ApiError(400, f"Invalid 'logprobs': integer above maximum value. Expected a value <= 5, but got {lp} "
                            f"instead.", param="logprobs", code="integer_above_max_value")
    return Shape(stop, None, False, None, lp is not None, lp or 0, *_length_controls(body))


def _length_controls(body: dict[str, Any]) -> tuple[int, bool]:
    ignore_eos = body.get("ignore_eos")
    if ignore_eos is not None and not isinstance(ignore_eos, bool):
        raise _type_error("ignore_eos", "a boolean")
    return _opt_int(body, "min_tokens", 0) or 0, bool(ignore_eos)


def _check_min_tokens(shape: Shape, max_tokens: int | None) -> None:
    if max_tokens is not None and shape.min_tokens > max_tokens:  # vLLM's own check
        raise ApiError(400, f"min_tokens must be less than or equal to max_tokens={max_tokens}, got "
                            f"{shape.min_tokens}", param="min_tokens", code="invalid_value")


def _common(body: dict[str, Any]) -> tuple[str, bool, bool, int | None, int]:
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
    n = _choices(body)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _opt_number(body, name)
        _range(body, name)
    seed = _opt_int(body, "seed", -(2**63))
    return model, bool(stream), include_usage, seed, n


MAX_N = 128  # OpenAI's range for `n` (platform.openai.com/docs/api-reference/chat/create, 2026-11)


def _choices(body: dict[str, Any]) -> int:
    """`n`: how many choices to generate, 1..128, with OpenAI's wording and codes."""
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int):
        raise _type_error("n", "an integer")
    if n < 1:
        raise ApiError(400, f"Invalid 'n': integer below minimum value. Expected a value >= 1, but got {n} instead.",
                       param="n", code="integer_below_min_value")
    if n > MAX_N:
        raise ApiError(400, f"Invalid 'n': integer above maximum value. Expected a value <= {MAX_N}, but got {n} "
                            f"instead.", param="n", code="integer_above_max_value")
    return n


def parse_chat(body: dict[str, Any]) -> ParsedRequest:
    model, stream, include_usage, seed, n = _common(body)
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
    shape = _shape(body, chat=True)
    _check_min_tokens(shape, max_tokens)
    return ParsedRequest(model, count_chat_tokens(messages),
                         orjson.dumps(messages, option=orjson.OPT_SORT_KEYS),
                         max_tokens, stream, include_usage, seed, shape, n)


def parse_completion(body: dict[str, Any]) -> ParsedRequest:
    model, stream, include_usage, seed, n = _common(body)
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
    shape = _shape(body, chat=False)
    _check_min_tokens(shape, max_tokens)
    return ParsedRequest(model, prompt_tokens, orjson.dumps(prompt), max_tokens, stream, include_usage, seed, shape,
                         n)
