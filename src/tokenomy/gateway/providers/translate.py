"""Pieces of OpenAI chat requests every non-OpenAI adapter reads the same way."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import orjson

from tokenomy.gateway.providers.base import ProviderError, openai_error

# Fields no non-OpenAI provider has an equivalent for: dropped, named in x-tokenomy-warning.
DROPPED_EVERYWHERE = ("frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs",
                      "seed", "service_tier", "store", "metadata", "prediction", "modalities", "audio",
                      "reasoning_effort", "web_search_options", "verbosity", "prompt_cache_key",
                      "safety_identifier", "functions", "function_call")
# Fields every adapter understands (or that only steer the gateway).
KNOWN = frozenset({"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
                   "temperature", "top_p", "stop", "tools", "tool_choice", "parallel_tool_calls",
                   "response_format", "user", "n"})

_DATA_URL = re.compile(r"^data:([\w/+.-]+);base64,(.*)$", re.S)


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.error: ProviderError = openai_error(400, message, code="unsupported_parameter", param=param)


def common_warnings(body: dict, extra_dropped: tuple[str, ...] = ()) -> list[str]:
    dropped = [k for k in body if k in DROPPED_EVERYWHERE or k in extra_dropped]
    unknown = [k for k in body if k not in KNOWN and k not in DROPPED_EVERYWHERE and k not in extra_dropped]
    return [f"dropped unsupported field(s) for this provider: {', '.join(sorted(dropped + unknown))}"] \
        if dropped or unknown else []


def max_tokens(body: dict, default: int) -> int:
    v = body.get("max_completion_tokens", body.get("max_tokens"))
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else default


def stop_list(body: dict) -> list[str]:
    s = body.get("stop")
    if s is None:
        return []
    if isinstance(s, str):
        return [s]
    if isinstance(s, list) and all(isinstance(x, str) for x in s):
        return list(s)
    raise BadRequest("'stop' must be a string or an array of strings", "stop")


def check_n(body: dict) -> None:
    n = body.get("n")
    if n not in (None, 1):
        raise BadRequest("this deployment's provider returns one choice per request: 'n' must be 1", "n")


def text_of(content) -> str:
    """The text of an OpenAI message content (string, or the text parts of an array)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise BadRequest("message 'content' must be a string or an array of content parts", "messages")


def image_source(part: dict) -> tuple[str, str, str]:
    """("base64", media_type, data) or ("url", "", url) of an image_url content part."""
    iu = part.get("image_url")
    url = iu.get("url") if isinstance(iu, dict) else iu
    if not isinstance(url, str) or not url:
        raise BadRequest("image_url parts need image_url.url (an http(s) URL or a data: URL)", "messages")
    m = _DATA_URL.match(url)
    if m:
        try:
            base64.b64decode(m.group(2), validate=True)
        except ValueError:
            raise BadRequest("image data: URL is not valid base64", "messages") from None
        return "base64", m.group(1), m.group(2)
    if not url.startswith(("http://", "https://")):
        raise BadRequest("image_url.url must be an http(s) URL or a data: URL", "messages")
    return "url", "", url


def tool_args(arguments) -> dict:
    """An assistant tool call's `arguments` (a JSON string) as an object."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        v = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        raise BadRequest("tool_calls[].function.arguments must be a JSON object string", "messages") from None
    if not isinstance(v, dict):
        raise BadRequest("tool_calls[].function.arguments must encode a JSON object", "messages")
    return v


def function_tools(body: dict) -> list[dict]:
    """The {name, description, parameters} of each function tool; others are rejected."""
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", "tools")
    out = []
    for t in tools:
        f = t.get("function") if isinstance(t, dict) and t.get("type", "function") == "function" else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise BadRequest("only function tools ({type: function, function: {name, parameters}}) are supported "
                             "by this deployment's provider", "tools")
        out.append({"name": f["name"], "description": f.get("description") or "",
                    "parameters": f.get("parameters") or {"type": "object", "properties": {}}})
    return out


def tool_choice(body: dict) -> tuple[str, str | None] | None:
    """("auto"|"none"|"required"|"named", name) or None when absent."""
    tc = body.get("tool_choice")
    if tc is None:
        return None
    if tc in ("auto", "none", "required"):
        return tc, None
    if isinstance(tc, dict) and isinstance(tc.get("function"), dict) and isinstance(tc["function"].get("name"), str):
        return "named", tc["function"]["name"]
    raise BadRequest("'tool_choice' must be auto, none, required or {type: function, function: {name}}", "tool_choice")


def json_format(body: dict) -> tuple[str, dict | None] | None:
    """("json_object", None) | ("json_schema", schema) | None for text/absent."""
    rf = body.get("response_format")
    if rf is None:
        return None
    t = rf.get("type") if isinstance(rf, dict) else None
    if t == "text":
        return None
    if t == "json_object":
        return "json_object", None
    if t == "json_schema":
        js = rf.get("json_schema")
        schema = js.get("schema") if isinstance(js, dict) else None
        return "json_schema", schema if isinstance(schema, dict) else {"type": "object"}
    raise BadRequest("'response_format.type' must be text, json_object or json_schema", "response_format")


def content_parts(content, provider: str, *, text: Callable[[str], dict],
                  image: Callable[[str, str, str], dict]) -> list[dict]:
    """A message content's blocks in a provider's shape: `text(s)` per text part, `image(kind,
    media_type, data)` (see image_source) per image_url part; any other part type is a 400."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text(content)] if content else []
    if not isinstance(content, list):
        raise BadRequest("message 'content' must be a string or an array of content parts", "messages")
    out = []
    for p in content:
        t = p.get("type") if isinstance(p, dict) else None
        if t == "text":
            out.append(text(str(p.get("text", ""))))
        elif t == "image_url":
            out.append(image(*image_source(p)))
        else:
            raise BadRequest(f"content part type {t!r} is not supported by {provider} deployments", "messages")
    return out


def translated(kind: str, provider: str, translate: Callable[[], tuple[dict, list[str]]]
               ) -> tuple[dict, list[str]] | ProviderError:
    """`translate()` (the provider request and its warnings) for a chat request; its 400 otherwise."""
    if kind != "chat":
        return BadRequest(f"{provider} deployments serve chat completions only", "model").error
    try:
        return translate()
    except BadRequest as exc:
        return exc.error


def conversation(body: dict, provider: str, *, parts: Callable[[object], list[dict]],
                 tool_call: Callable[[str, str, dict], dict], tool_result: Callable[[dict], dict],
                 model_role: str = "assistant", key: str = "content") -> tuple[list[str], list[dict]]:
    """(system texts, turns) of an OpenAI chat body in a provider's shape: system / developer
    messages apart; user and assistant (`model_role`) turns {"role", key: [blocks]}, consecutive
    same-role turns merged (Anthropic, Gemini and Bedrock require alternation); `parts(content)`
    gives a message's blocks, `tool_call(id, name, args)` an assistant tool call's block and
    `tool_result(message)` the block a role-tool message becomes (in a user turn)."""
    system: list[str] = []
    turns: list[dict] = []

    def push(role: str, blocks: list[dict]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1][key].extend(blocks)
        else:
            turns.append({"role": role, key: blocks})

    for m in messages(body):
        role = m.get("role")
        if role in ("system", "developer"):
            text = text_of(m.get("content"))
            if text:
                system.append(text)
        elif role == "user":
            push("user", parts(m.get("content")))
        elif role == "assistant":
            blocks = parts(m.get("content"))
            for tc in m.get("tool_calls") or ():
                f = tc.get("function") if isinstance(tc, dict) else None
                if not isinstance(f, dict):
                    raise BadRequest("tool_calls[] must be {id, type: function, function: {name, arguments}}",
                                     "messages")
                blocks.append(tool_call(tc.get("id") or "", f.get("name") or "", tool_args(f.get("arguments"))))
            push(model_role, blocks)
        elif role == "tool":
            push("user", [tool_result(m)])
        else:
            raise BadRequest(f"message role {role!r} is not supported", "messages")
    if not turns:
        raise BadRequest(f"{provider} needs at least one user or assistant message", "messages")
    return system, turns


def messages(body: dict) -> list[dict]:
    m = body.get("messages")
    if not isinstance(m, list) or not all(isinstance(x, dict) for x in m):
        raise BadRequest("'messages' must be an array of message objects", "messages")
    return m


def completion(rid: str, model: str, created: int, text: str | None, tool_calls: list[dict], finish: str,
               usage: object) -> dict:
    msg: dict = {"role": "assistant", "content": text if (text or not tool_calls) else None}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
            "usage": usage}


def tool_call(call_id: str, name: str, args: dict | str) -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else orjson.dumps(args).decode()}}
