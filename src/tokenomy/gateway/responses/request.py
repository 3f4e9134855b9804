"""An OpenAI Responses API request (POST /v1/responses) as an OpenAI chat request. Pure.

    chat, warnings = to_chat(body)   # raises ApiError(400) naming the field, OpenAI-style

Mapped: model, input (a string, or items: messages of role user / assistant / system / developer
with input_text / output_text / input_image parts, function_call and function_call_output items),
instructions -> a leading system message, tools (function tools) -> chat tools, tool_choice,
max_output_tokens -> max_tokens, temperature, top_p, parallel_tool_calls, text.format (json_object /
json_schema) -> response_format, user, metadata, stream (with the usage chunk asked for: the
stream's response.completed carries the billed usage).
Dropped, named in x-tokenomy-warning: DROPPED (no chat-completions equivalent), reasoning items
of earlier turns, `store: true` (the gateway stores no responses). Rejected (400): unknown fields,
previous_response_id / conversation / prompt (need stored state), non-function tools, file inputs.
"""

from __future__ import annotations

from tokenomy.gateway import validate as v
from tokenomy.gateway.errors import ApiError

DROPPED = ("reasoning", "truncation", "service_tier", "include", "prompt_cache_key", "safety_identifier",
           "background", "top_logprobs", "max_tool_calls", "stream_options", "prompt_cache_retention")
MAPPED = frozenset({"model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature",
                    "top_p", "parallel_tool_calls", "text", "user", "metadata", "stream", "store"})
STATEFUL = ("previous_response_id", "conversation", "prompt")
_ROLES = ("user", "assistant", "system", "developer")


def _bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, f"Invalid '{param}': {message}", param=param, code=code)


def _str(x: object, param: str) -> str:
    if not isinstance(x, str):
        raise _bad(param, "must be a string", "invalid_type")
    return x


def _part(p: object, param: str) -> dict:
    """One content part of an input message, as a chat content part."""
    if not isinstance(p, dict):
        raise _bad(param, "must be an object {type: input_text | output_text | input_image, ...}", "invalid_type")
    t = p.get("type")
    if t in ("input_text", "output_text", "text"):
        return {"type": "text", "text": _str(p.get("text"), f"{param}.text")}
    if t == "refusal":
        return {"type": "text", "text": _str(p.get("refusal"), f"{param}.refusal")}
    if t == "input_image":
        url = p.get("image_url")
        if not isinstance(url, str) or not url:
            raise _bad(f"{param}.image_url", "must be a URL or a data URL (file_id inputs are not supported)")
        img = {"url": url}
        if isinstance(p.get("detail"), str):
            img["detail"] = p["detail"]
        return {"type": "image_url", "image_url": img}
    raise _bad(f"{param}.type", f"content part type {str(t)[:40]!r} is not supported "
                                "(input_text, output_text, input_image)")


def _content(c: object, param: str, role: str) -> str | list:
    if isinstance(c, str):
        return c
    if not isinstance(c, list):
        raise _bad(param, "must be a string or an array of content parts", "invalid_type")
    parts = [_part(p, f"{param}[{i}]") for i, p in enumerate(c)]
    if role != "user" and all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)  # chat's assistant / system content: text
    return parts


def _messages(x: object, warnings: list[str]) -> list[dict]:
    if isinstance(x, str):
        return [{"role": "user", "content": x}]
    if not isinstance(x, list):
        raise _bad("input", "must be a string or an array of input items", "invalid_type")
    if not x:
        raise _bad("input", "must not be an empty array")
    out: list[dict] = []
    for i, item in enumerate(x):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(param, "must be an object (a message or a function_call / function_call_output item)",
                       "invalid_type")
        t = item.get("type", "message")
        if t == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise _bad(f"{param}.role", f"must be one of {', '.join(_ROLES)}")
            out.append({"role": role, "content": _content(item.get("content"), f"{param}.content", role)})
        elif t == "function_call":
            call = {"id": _str(item.get("call_id"), f"{param}.call_id"), "type": "function",
                    "function": {"name": _str(item.get("name"), f"{param}.name"),
                                 "arguments": _str(item.get("arguments"), f"{param}.arguments")}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif t == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _content(output, f"{param}.output", "tool")
            if not isinstance(text, str):
                raise _bad(f"{param}.output", "must be a string or text parts")
            out.append({"role": "tool", "tool_call_id": _str(item.get("call_id"), f"{param}.call_id"),
                        "content": text})
        elif t == "reasoning":
            if "reasoning items" not in warnings:
                warnings.append("reasoning items")
        else:
            raise _bad(f"{param}.type", f"item type {str(t)[:40]!r} is not supported "
                                        "(message, function_call, function_call_output)")
    if not out:
        raise _bad("input", "has no message")
    return out


def _tools(tools: object) -> list[dict]:
    if not isinstance(tools, list):
        raise _bad("tools", "must be an array", "invalid_type")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function":
            kind = t.get("type") if isinstance(t, dict) else None
            raise _bad(f"tools[{i}]", f"tool type {str(kind)[:40]!r} is not supported (served by chat "
                                      "completions: function tools only)")
        f = {"name": _str(t.get("name"), f"tools[{i}].name")}
        if t.get("description") is not None:
            f["description"] = _str(t["description"], f"tools[{i}].description")
        if t.get("parameters") is not None:
            if not isinstance(t["parameters"], dict):
                raise _bad(f"tools[{i}].parameters", "must be a JSON schema object", "invalid_type")
            f["parameters"] = t["parameters"]
        if isinstance(t.get("strict"), bool):
            f["strict"] = t["strict"]
        out.append({"type": "function", "function": f})
    return out


def _tool_choice(tc: object) -> object:
    if tc in ("auto", "none", "required"):
        return tc
    if isinstance(tc, dict) and tc.get("type") == "function" and isinstance(tc.get("name"), str):
        return {"type": "function", "function": {"name": tc["name"]}}
    raise _bad("tool_choice", "must be auto, none, required or {type: function, name}")


def _response_format(text: object) -> dict | None:
    if not isinstance(text, dict):
        raise _bad("text", "must be an object {format: {...}}", "invalid_type")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad("text.format", "must be an object", "invalid_type")
    t = fmt.get("type")
    if t == "text":
        return None
    if t == "json_object":
        return {"type": "json_object"}
    if t == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _bad("text.format.schema", "must be a JSON schema object", "invalid_type")
        js = {"name": _str(fmt.get("name"), "text.format.name"), "schema": schema}
        if isinstance(fmt.get("strict"), bool):
            js["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": js}
    raise _bad("text.format.type", "must be text, json_object or json_schema")


def to_chat(body: dict) -> tuple[dict, list[str]]:
    """(the chat request, the request fields dropped) of a Responses API request body."""
    for name in body:
        if name in STATEFUL and body[name] is not None:
            raise _bad(name, "is not supported: the gateway stores no responses or conversations "
                             "(send the whole input)", "unsupported_parameter")
        if name not in MAPPED and name not in DROPPED and name not in STATEFUL:
            raise ApiError(400, f"Unknown parameter: '{str(name)[:64]}'.", param=str(name)[:64],
                           code="unknown_parameter")
    warnings = [name for name in DROPPED if body.get(name) is not None]
    if v.opt_bool(body, "store"):
        warnings.append("store")
    if body.get("input") is None:
        raise ApiError(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    messages = _messages(body["input"], warnings)
    instructions = body.get("instructions")
    if instructions is not None:
        messages.insert(0, {"role": "system", "content": _str(instructions, "instructions")})
    chat: dict = {"model": body.get("model"), "messages": messages}
    mot = v.opt_pos_int(body, "max_output_tokens", v.MAX_OUTPUT_TOKENS)
    if mot is not None:
        chat["max_tokens"] = mot
    for name in ("temperature", "top_p"):
        x = body.get(name)
        if x is not None:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise _bad(name, "must be a number", "invalid_type")
            chat[name] = x
    if body.get("tools") is not None:
        tools = _tools(body["tools"])
        if tools:
            chat["tools"] = tools
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("parallel_tool_calls") is not None:
        chat["parallel_tool_calls"] = v.opt_bool(body, "parallel_tool_calls")
    if body.get("text") is not None:
        rf = _response_format(body["text"])
        if rf is not None:
            chat["response_format"] = rf
    for name in ("user", "metadata"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if v.opt_bool(body, "stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat, warnings
