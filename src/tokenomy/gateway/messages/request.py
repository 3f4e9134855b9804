"""An Anthropic Messages request (POST /v1/messages) as an OpenAI chat request. Pure.

    chat, warnings = to_chat(body)   # raises ApiError(400) naming the field, like Anthropic

Mapped: model, max_tokens (required, as Anthropic requires), system (a string or text blocks),
messages (user / assistant turns: text, image base64 / url, tool_use, tool_result blocks),
stop_sequences -> stop, temperature, top_p, tools -> function tools, tool_choice auto / any /
tool / none (disable_parallel_tool_use -> parallel_tool_calls false), metadata.user_id -> user,
output_config.format json_schema -> response_format, stream (with the usage chunk asked for:
the Anthropic stream's message_delta carries the billed usage).
Dropped, named in x-tokenomy-warning: see DROPPED (no chat-completions equivalent; thinking
blocks of earlier assistant turns too) -- on the translated path only: a native relay to an
Anthropic deployment sends them (handler.Inbound). Rejected: unknown fields, other block types (document,
search_result, server tools, ...), roles other than user / assistant.
"""

from __future__ import annotations

import orjson

from tokenomy.gateway import validate as v
from tokenomy.gateway.errors import ApiError

# Anthropic request fields with no chat-completions equivalent (accepted, dropped, warned about).
DROPPED = ("top_k", "thinking", "cache_control", "service_tier", "container", "context_management",
           "mcp_servers", "inference_geo", "speed", "diagnostics", "user_profile_id", "workspace_id")
MAPPED = frozenset({"model", "max_tokens", "messages", "system", "stop_sequences", "stream", "temperature",
                    "top_p", "tools", "tool_choice", "metadata", "output_config"})
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_request_error")


def _str(x: object, param: str) -> str:
    if not isinstance(x, str):
        raise _bad(param, "must be a string")
    return x


def _text_blocks(blocks: object, param: str) -> str:
    """A `system` value or a tool_result's content: a string, or text blocks joined."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _bad(param, "must be a string or an array of text blocks")
    out = []
    for i, b in enumerate(blocks):
        if not isinstance(b, dict) or b.get("type") != "text":
            raise _bad(f"{param}.{i}", "must be a text block {type: text, text}")
        out.append(_str(b.get("text"), f"{param}.{i}.text"))
    return "\n".join(out)


def _image(b: dict, param: str) -> dict:
    src = b.get("source")
    if not isinstance(src, dict):
        raise _bad(f"{param}.source", "must be an object {type: base64, media_type, data} or {type: url, url}")
    if src.get("type") == "base64":
        media = src.get("media_type")
        if media not in _IMAGE_TYPES:
            raise _bad(f"{param}.source.media_type", f"must be one of {', '.join(_IMAGE_TYPES)}")
        url = f"data:{media};base64,{_str(src.get('data'), f'{param}.source.data')}"
    elif src.get("type") == "url":
        url = _str(src.get("url"), f"{param}.source.url")
        if not url.startswith(("http://", "https://")):
            raise _bad(f"{param}.source.url", "must be an http(s) URL")
    else:
        raise _bad(f"{param}.source.type", "must be 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(b: dict, param: str, warnings: set[str]) -> dict:
    tid = _str(b.get("tool_use_id"), f"{param}.tool_use_id")
    c = b.get("content")
    if c is None:
        text = ""
    elif isinstance(c, list):
        texts = []
        for i, p in enumerate(c):
            t = p.get("type") if isinstance(p, dict) else None
            if t == "text":
                texts.append(_str(p.get("text"), f"{param}.content.{i}.text"))
            elif t == "image":
                _image(p, f"{param}.content.{i}")  # validated; chat tool messages carry text only
                warnings.add("tool_result images")
            else:
                raise _bad(f"{param}.content.{i}", "must be a text or image block")
        text = "\n".join(texts)
    else:
        text = _str(c, f"{param}.content")
    if b.get("is_error") is True:
        text = "Error: " + text  # chat has no error flag on a tool message: say it in the text
    return {"role": "tool", "tool_call_id": tid, "content": text}


def _turn(m: dict, i: int, warnings: set[str]) -> list[dict]:
    """One Anthropic message as chat messages (a user turn's tool_results become tool messages,
    placed first: they answer the previous assistant turn's tool calls)."""
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise _bad(f"messages.{i}.role", "must be 'user' or 'assistant'")
    content = m.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _bad(f"messages.{i}.content", "must be a string or an array of content blocks")
    parts: list[dict] = []
    calls: list[dict] = []
    tools: list[dict] = []
    for j, b in enumerate(content):
        param = f"messages.{i}.content.{j}"
        t = b.get("type") if isinstance(b, dict) else None
        if t == "text":
            parts.append({"type": "text", "text": _str(b.get("text"), f"{param}.text")})
        elif t == "image" and role == "user":
            parts.append(_image(b, param))
        elif t == "tool_use" and role == "assistant":
            inp = b.get("input", {})
            if not isinstance(inp, dict):
                raise _bad(f"{param}.input", "must be an object")
            calls.append({"id": _str(b.get("id"), f"{param}.id"), "type": "function",
                          "function": {"name": _str(b.get("name"), f"{param}.name"),
                                       "arguments": orjson.dumps(inp).decode()}})
        elif t == "tool_result" and role == "user":
            tools.append(_tool_result(b, param, warnings))
        elif t in ("thinking", "redacted_thinking") and role == "assistant":
            warnings.add("thinking blocks")
        else:
            raise _bad(f"{param}.type", f"content block type {t!r} is not supported in a {role} turn here "
                                        "(text, image, tool_use, tool_result)")
    out = list(tools)
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        if text or calls:
            msg: dict = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    elif parts or not tools:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    return out


def _tools(tools: object) -> list[dict]:
    if not isinstance(tools, list):
        raise _bad("tools", "must be an array")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type", "custom") != "custom":
            raise _bad(f"tools.{i}", "only custom tools {name, description, input_schema} are supported here")
        schema = t.get("input_schema")
        if not isinstance(schema, dict):
            raise _bad(f"tools.{i}.input_schema", "must be a JSON schema object")
        f: dict = {"name": _str(t.get("name"), f"tools.{i}.name"), "parameters": schema}
        if t.get("description") is not None:
            f["description"] = _str(t["description"], f"tools.{i}.description")
        out.append({"type": "function", "function": f})
    return out


def _tool_choice(tc: object, chat: dict) -> None:
    if not isinstance(tc, dict) or tc.get("type") not in ("auto", "any", "tool", "none"):
        raise _bad("tool_choice", "must be {type: auto | any | tool | none}")
    t = tc["type"]
    if t == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": _str(tc.get("name"), "tool_choice.name")}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[t]
    if tc.get("disable_parallel_tool_use") is True and t != "none":
        chat["parallel_tool_calls"] = False


def _number(body: dict, field: str, lo: float, hi: float, chat: dict) -> None:
    x = body.get(field)
    if x is None:
        return
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not lo <= x <= hi:
        raise _bad(field, f"must be a number in [{lo:g}, {hi:g}]")
    chat[field] = x


def to_chat(body: dict) -> tuple[dict, list[str]]:
    """(the OpenAI chat body, warnings naming what was dropped)."""
    unknown = sorted(k for k in body if k not in MAPPED and k not in DROPPED)
    if unknown:
        raise _bad(unknown[0], "Extra inputs are not permitted")
    model = v.require_str(body, "model")
    mt = body.get("max_tokens")
    if mt is None:
        raise _bad("max_tokens", "Field required (the Messages API requires max_tokens)")
    if isinstance(mt, bool) or not isinstance(mt, int) or not 1 <= mt <= v.MAX_OUTPUT_TOKENS:
        raise _bad("max_tokens", f"must be an integer in [1, {v.MAX_OUTPUT_TOKENS}]")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("messages", "must be a non-empty array of messages")
    warnings: set[str] = set()
    chat_msgs: list[dict] = []
    system = body.get("system")
    if system is not None:
        chat_msgs.append({"role": "system", "content": _text_blocks(system, "system")})
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _bad(f"messages.{i}", "must be an object {role, content}")
        chat_msgs.extend(_turn(m, i, warnings))
    chat: dict = {"model": model, "messages": chat_msgs, "max_tokens": mt}
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "must be a boolean")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences", "must be an array of strings")
        if stops:
            chat["stop"] = list(stops)
    _number(body, "temperature", 0.0, 1.0, chat)
    _number(body, "top_p", 0.0, 1.0, chat)
    if body.get("tools") is not None:
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict) or set(meta) - {"user_id"}:
            raise _bad("metadata", "must be an object {user_id}")
        if meta.get("user_id") is not None:
            chat["user"] = _str(meta["user_id"], "metadata.user_id")
    oc = body.get("output_config")
    if oc is not None:
        if not isinstance(oc, dict):
            raise _bad("output_config", "must be an object")
        fmt = oc.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
            chat["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": fmt["schema"]}}
        elif fmt is not None:
            raise _bad("output_config.format", "must be {type: json_schema, schema}")
        if oc.get("effort") is not None:
            warnings.add("output_config.effort")
    warnings.update(k for k in DROPPED if body.get(k) is not None)
    out = [f"dropped field(s) with no chat-completions equivalent: {', '.join(sorted(warnings))}"] if warnings else []
    return chat, out


def uncounted_text(body: dict) -> str:
    """Prompt text the chat translation leaves out but Anthropic may bill as input: the thinking
    (and redacted_thinking) blocks of assistant turns, sent back in a tool-use loop. Counted into
    the request's prompt so its reservation and usage bound cover a native relay."""
    out: list[str] = []
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) and m.get("role") == "assistant" else None
        for b in content if isinstance(content, list) else ():
            if isinstance(b, dict) and b.get("type") == "thinking" and isinstance(b.get("thinking"), str):
                out.append(b["thinking"])
            elif isinstance(b, dict) and b.get("type") == "redacted_thinking" and isinstance(b.get("data"), str):
                out.append(b["data"])  # encrypted: its length stands in for its tokens
    return "\n".join(out)
