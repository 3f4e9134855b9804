"""Hand validation of the few request fields the gateway needs (no pydantic on the hot path).

Each failure raises ApiError(400) naming the field, OpenAI-style (`param`)."""

from __future__ import annotations

import orjson

from tokenomy.gateway.errors import ApiError


def _bad(param: str, message: str, code: str = "invalid_type") -> ApiError:
    return ApiError(400, message, param=param, code=code)


# orjson parses up to 1024 levels but serialises at most 254 (the body is re-serialised for the
# upstream): a body nested deeper than this is a 400, not a 500 after parsing.
MAX_JSON_DEPTH = 128


def json_depth_exceeds(obj: object, limit: int) -> bool:
    """True when arrays/objects nest deeper than `limit` (iterative: no recursion limit to hit)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


def parse_body(raw: bytes) -> dict:
    if not raw:
        raise ApiError(400, "request body is empty; expected a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    # nesting needs brackets: a body with few of them (nearly all) skips the walk
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth_exceeds(body, MAX_JSON_DEPTH):
        raise ApiError(400, f"request body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels",
                       code="invalid_json")
    return body


def _type_name(v: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def require_str(body: dict, field: str) -> str:
    v = body.get(field)
    if v is None:
        raise _bad(field, f"missing required field '{field}'", "missing_required_parameter")
    if not isinstance(v, str):
        raise _bad(field, f"'{field}' must be a string, got {_type_name(v)}")
    return v


def opt_bool(body: dict, field: str) -> bool:
    v = body.get(field)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad(field, f"'{field}' must be a boolean, got {_type_name(v)}")
    return v


# Upper bounds keep the worst-case reservation (n * max_tokens * price) a finite 64-bit pico-USD
# amount: 2**64 tokens made Decimal raise InvalidOperation (a 500) and would overflow Redis counters.
MAX_OUTPUT_TOKENS = 10_000_000
MAX_N = 128  # OpenAI's own limit


def opt_pos_int(body: dict, field: str, maximum: int | None = None) -> int | None:
    v = body.get(field)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(field, f"'{field}' must be an integer, got {_type_name(v)}")
    if v < 1:
        raise _bad(field, f"'{field}' must be >= 1, got {v}", "invalid_value")
    if maximum is not None and v > maximum:
        raise _bad(field, f"'{field}' must be <= {maximum}, got {v}", "invalid_value")
    return v


def opt_array(body: dict, field: str) -> list | None:
    v = body.get(field)
    if v is not None and not isinstance(v, list):
        raise _bad(field, f"'{field}' must be an array, got {_type_name(v)}")
    return v


def chat_messages(body: dict) -> list:
    msgs = body.get("messages")
    if msgs is None:
        raise _bad("messages", "missing required field 'messages'", "missing_required_parameter")
    if not isinstance(msgs, list):
        raise _bad("messages", f"'messages' must be an array, got {_type_name(msgs)}")
    if not msgs:
        raise _bad("messages", "'messages' must contain at least one message", "invalid_value")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _bad(f"messages[{i}]", f"'messages[{i}]' must be an object, got {_type_name(m)}")
        role = m.get("role")
        if not isinstance(role, str):
            raise _bad(f"messages[{i}].role", f"'messages[{i}].role' must be a string, got {_type_name(role)}"
                       if role is not None else f"missing required field 'messages[{i}].role'")
        c = m.get("content")
        if c is not None and not isinstance(c, (str, list)):
            raise _bad(f"messages[{i}].content",
                       f"'messages[{i}].content' must be a string or an array, got {_type_name(c)}")
    return msgs


def completion_prompt(body: dict) -> str | int:
    """The prompt as text (for token counting), or its token count when given as token ids."""
    p = body.get("prompt")
    if p is None:
        raise _bad("prompt", "missing required field 'prompt'", "missing_required_parameter")
    if isinstance(p, str):
        return p
    if isinstance(p, list) and all(isinstance(x, str) for x in p):
        return "\n".join(p)
    if isinstance(p, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in p):
        return len(p)
    raise _bad("prompt", f"'prompt' must be a string or an array of strings, got {_type_name(p)}")


def max_tokens(body: dict) -> int | None:
    mt = opt_pos_int(body, "max_completion_tokens", MAX_OUTPUT_TOKENS)
    legacy = opt_pos_int(body, "max_tokens", MAX_OUTPUT_TOKENS)  # validated even when both are given
    return mt if mt is not None else legacy


def n_choices(body: dict) -> int:
    return opt_pos_int(body, "n", MAX_N) or 1


# OpenAI's limits for `metadata` (16 pairs, keys <= 64 chars, values <= 512) and a bound on `user`.
from tokenomy.metering.records import MAX_USER_CHARS  # noqa: E402  (one limit for requests and caps)
MAX_TAGS, MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS = 16, 64, 512


def _printable(s: str) -> bool:
    return s.isprintable()


def user_and_tags(body: dict) -> tuple[str | None, dict[str, str] | None]:
    """The request's end user (`user`) and tags (`metadata`: string -> string), validated:
    spend is reported and limited per user and tag, so they must be short, printable strings."""
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise _bad("user", f"'user' must be a string, not {_type_name(user)}")
        if not 0 < len(user) <= MAX_USER_CHARS or not _printable(user):
            raise _bad("user", f"'user' must be 1 to {MAX_USER_CHARS} printable characters", "invalid_value")
    meta = body.get("metadata")
    if meta is None:
        return user, None
    if not isinstance(meta, dict):
        raise _bad("metadata", f"'metadata' must be an object of strings, not {_type_name(meta)}")
    if len(meta) > MAX_TAGS:
        raise _bad("metadata", f"'metadata' has {len(meta)} pairs; at most {MAX_TAGS}", "invalid_value")
    for k, val in meta.items():
        if not isinstance(val, str):
            raise _bad("metadata", f"metadata['{k[:64]}'] must be a string, not {_type_name(val)}")
        if not 0 < len(k) <= MAX_TAG_KEY_CHARS or not _printable(k):
            raise _bad("metadata", f"metadata keys must be 1 to {MAX_TAG_KEY_CHARS} printable characters", "invalid_value")
        if len(val) > MAX_TAG_VALUE_CHARS or not _printable(val):
            raise _bad("metadata", f"metadata['{k}'] must be at most {MAX_TAG_VALUE_CHARS} printable characters",
                       "invalid_value")
    return user, dict(meta)
