"""The adapter contract shared by every provider module (see the package docstring)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from tokenomy.gateway.lifecycle.usage import valid_count
from tokenomy.gateway.upstream import MAX_EVENT_BYTES, UpstreamTooLarge

# Failure kinds, in the dispatcher's own terms (gateway/proxy.py `_fail`): the first two are
# retried / fallen back on like an OpenAI upstream's 429 / 5xx; "client_error" is the caller's
# fault (bad request, context too long, auth) and is passed back without a fallback.
RETRYABLE_KINDS = frozenset({"http_429", "http_5xx", "garbage"})

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error",
                 500: "api_error", 502: "upstream_error", 503: "service_unavailable", 529: "overloaded_error"}


# Fan-out limits (UpstreamRequest.parts): upstream calls in flight per client request, and calls
# per client request (more is a 400 naming the cap: one client request must not turn into an
# unbounded burst against the provider's quota).
FANOUT_CONCURRENCY = 4
MAX_FANOUT_CALLS = 128
JSON_INT_MAX = 2**63 - 1  # the largest integer orjson writes (untrusted counts are clamped to it)

# The OpenAI path of each request kind (relative to a deployment's base_url, .../v1).
OPENAI_PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One HTTP POST to make upstream. `warnings` name request fields the adapter dropped
    (the gateway puts them in `x-tokenomy-warning`)."""

    url: str
    headers: dict[str, str]
    body: bytes
    warnings: tuple[str, ...] = ()
    json_mode: bool = False  # response_format asked for JSON (translated adapters need it back)
    kind: str = "chat"  # chat | completions | embeddings (how the answer is translated back)
    encoding_format: str = "float"  # embeddings: the client's encoding_format (translated adapters)
    # Fan-out: the provider takes the input list in pieces (Titan: one inputText per InvokeModel).
    # Non-empty: this request is not sent itself; each part is (at most FANOUT_CONCURRENCY at a
    # time), each answer parsed with parse_response(part), the answers merged in order
    # (merge_embeddings). A failing part fails the whole request (gateway/lifecycle/wire.py).
    parts: tuple["UpstreamRequest", ...] = ()
    # An inbound request relayed in the provider's own API (Anthropic /v1/messages to an Anthropic
    # deployment): the answer is parsed for metering and also kept as `x_native` (the adapter's doc).
    native: bool = False


@dataclass(slots=True)
class ProviderError:
    """A provider's error answer, already in OpenAI's shape.

    status: the HTTP status to give the client (a provider's 529 "overloaded" becomes 503);
    kind: http_429 | http_5xx | garbage (retry / fall back) or client_error (pass back);
    body: {"error": {"message", "type", "param", "code"}}."""

    status: int
    kind: str
    body: dict

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    @property
    def raw(self) -> bytes:
        return orjson.dumps(self.body)


def openai_error(status: int, message: str, *, code: str | None = None, param: str | None = None,
                 kind: str | None = None, etype: str | None = None) -> ProviderError:
    if kind is None:
        kind = "http_429" if status == 429 else "http_5xx" if status >= 500 else "client_error"
    return ProviderError(status, kind, {"error": {"message": message, "type": etype or _OPENAI_TYPES.get(status, "api_error"),
                                                  "param": param, "code": code}})


_CONTEXT_RE = re.compile(r"(prompt is too long|context (length|window)|too many (input )?tokens|"
                         r"input (is )?too long|exceeds the maximum|maximum context)", re.I)


def classify_error(status: int, message: str, provider_type: str | None = None) -> ProviderError:
    """Map a provider's HTTP error onto OpenAI's statuses/codes and a dispatcher failure kind."""
    msg = message or f"HTTP {status} from upstream"
    t = (provider_type or "").lower()
    if status == 529 or "overloaded" in t or (status == 503 and "overloaded" in msg.lower()):
        return openai_error(503, msg, code="upstream_overloaded", kind="http_5xx", etype="service_unavailable")
    if status == 429 or "rate" in t or "throttl" in t or "resource_exhausted" in t:
        return openai_error(429, msg, code="rate_limit_exceeded", kind="http_429")
    if status in (400, 413, 422) and _CONTEXT_RE.search(msg):
        return openai_error(400, msg, code="context_length_exceeded", kind="client_error")
    if status in (401, 403):
        return openai_error(status, msg, code="upstream_auth_failed", kind="client_error")
    if status == 408 or status >= 500:
        return openai_error(503 if status == 503 else 502, msg, code="upstream_error", kind="http_5xx")
    return openai_error(400 if status in (413, 422) else status, msg, code="invalid_request", kind="client_error")


def garbage(message: str) -> ProviderError:
    return openai_error(502, message, code="upstream_garbage", kind="garbage")


class StreamDecoder(Protocol):
    """Turns a provider's stream bytes into OpenAI chat.completion.chunk dicts."""

    usage: object  # OpenAI-shaped usage once the provider has reported it (untrusted: see translated_usage)

    def feed(self, data: bytes) -> list[dict]: ...

    def close(self) -> list[dict]:
        """End of stream: any last chunks (raises nothing; a truncated stream just ends)."""
        ...


class ProviderAdapter(Protocol):
    provider: str
    passthrough: bool  # True: the upstream speaks OpenAI (bytes may be relayed as they are)
    needs_prepare: bool  # True: `await prepare()` before build_request (credential refresh)

    async def prepare(self) -> None: ...

    def build_request(self, body: dict, d, *, stream: bool, kind: str = "chat") -> UpstreamRequest | ProviderError: ...

    def parse_response(self, status: int, headers: dict[str, str], raw: bytes,
                       req: UpstreamRequest | None = None) -> dict | ProviderError: ...

    def stream_decoder(self, req: UpstreamRequest | None = None) -> StreamDecoder: ...


# ------------------------------------------------------------------ helpers shared by adapters
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|^env:([A-Za-z_][A-Za-z0-9_]*)$")


def resolve_header_value(value: str) -> str:
    """A configured header value, with environment variables expanded: `env:NAME` (the whole
    value) or `${NAME}` anywhere, so no secret needs to sit in the config file. An unset
    variable expands to "" (the upstream then answers 401, which names the problem)."""
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1) or m.group(2), ""), value)


def resolved_headers(cfg) -> dict[str, str]:
    return {k: resolve_header_value(v) for k, v in cfg.headers.items()}


def api_key(cfg) -> str | None:
    return os.environ.get(cfg.api_key_env) or None if cfg.api_key_env else None


def json_headers(cfg, key_header: str | None, key_prefix: str = "", *, lower: bool = True,
                 defaults: dict[str, str] | None = None) -> dict[str, str]:
    """A JSON POST's headers: `defaults` (e.g. anthropic-version), then the configured headers
    (env vars expanded; they override the defaults), then the key of `api_key_env` in
    `key_header` (with `key_prefix`, e.g. "Bearer "). `lower`: header names lower-cased (OpenAI
    passthrough keeps today's exact names)."""
    conf = resolved_headers(cfg)
    h = {"content-type" if lower else "Content-Type": "application/json", **(defaults or {}),
         **({k.lower(): v for k, v in conf.items()} if lower else conf)}
    key = api_key(cfg)
    if key and key_header:
        h[key_header] = key_prefix + key
    return h


def error_message(raw: bytes) -> tuple[str, str | None]:
    """(message, provider error type) out of an OpenAI-, Anthropic- or Google-shaped error body."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:300].decode("utf-8", "replace"), None
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):  # Gemini streams errors as [{...}]
        obj = obj[0]
    if not isinstance(obj, dict):
        return str(obj)[:300], None
    err = obj.get("error", obj)
    if isinstance(err, dict):
        msg = err.get("message") or obj.get("message") or ""
        etype = err.get("type") or err.get("status") or err.get("code") or obj.get("__type")
        return str(msg)[:2000], None if etype is None else str(etype)
    return str(obj.get("message") or err)[:2000], obj.get("__type")


def answer_object(status: int, raw: bytes, what: str) -> dict | ProviderError:
    """A provider's unary answer as its JSON object: an HTTP error classified (its body's message
    and type), anything but a JSON object garbage (retried / fallen back on)."""
    if status >= 400:
        msg, etype = error_message(raw)
        return classify_error(status, msg, etype)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return garbage(f"invalid JSON in {what}: {exc}")
    if not isinstance(obj, dict):
        return garbage(f"invalid JSON in {what}: not a JSON object")
    return obj


@dataclass(slots=True)
class SseSplitter:
    """Splits an SSE byte stream into (event, data) pairs, across arbitrary chunk boundaries."""

    buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self.buf += data.replace(b"\r\n", b"\n")
        out: list[tuple[str, bytes]] = []
        while True:
            end = self.buf.find(b"\n\n")
            if end < 0:
                if len(self.buf) > MAX_EVENT_BYTES:  # one event without end: refused, not buffered on
                    raise UpstreamTooLarge(MAX_EVENT_BYTES, "stream event")
                return out
            block, self.buf[:end + 2] = bytes(self.buf[:end]), b""
            name, datas = "", []
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    name = line[6:].strip().decode("utf-8", "replace")
                elif line.startswith(b"data:"):
                    datas.append(line[5:].strip())
            if datas:
                out.append((name, b"\n".join(datas)))


def chunk(rid: str, model: str, created: int, delta: dict, finish: str | None = None,
          index: int = 0) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def translated_usage(u: object, prompt: tuple[str, ...], completion: tuple[str, ...], *, cached: str | None = None,
                     reasoning: str | None = None, cache_write: str | None = None) -> object:
    """OpenAI usage of a provider's (untrusted) usage object `u`, by field name: prompt_tokens =
    the sum of the `prompt` fields (cached and cache-write included), completion_tokens of the
    `completion` ones (reasoning included); the details one field each. Judging the counts is the gateway's one policy (lifecycle/usage.py bound_usage,
    as for an OpenAI upstream), so nothing here turns into a 0:
      - a total with a part that is not a valid count is handed on as that part (flagged there,
        and the gateway counts that side itself); valid parts are summed, absent ones are 0;
      - a total none of whose fields is present is left out (the gateway counts it: no lie);
      - no usage (None, or an object with none of the fields) is None; a non-object is handed
        on as it is (flagged)."""
    if not isinstance(u, dict):
        return u
    out: dict = {}
    for key, names in (("prompt_tokens", prompt), ("completion_tokens", completion)):
        vals = [u.get(k) for k in names]
        present = [v for v in vals if v is not None]
        if present:
            bad = next((v for v in present if not valid_count(v)), None)
            out[key] = bad if bad is not None else min(sum(present), JSON_INT_MAX)  # a sum stays writable
    got = {k: u.get(name) if name else None for k, name in (("cached", cached), ("write", cache_write),
                                                            ("reasoning", reasoning))}
    if not out and all(v is None for v in got.values()):
        return None
    p, c = out.get("prompt_tokens"), out.get("completion_tokens")
    if valid_count(p) and valid_count(c):
        out["total_tokens"] = p + c  # type: ignore[operator]
    # OpenAI's shape: details always there, 0 when not reported; cache_write_tokens (tokenomy's
    # extension for providers that bill cache writes) when there are some
    out["prompt_tokens_details"] = {"cached_tokens": 0 if got["cached"] is None else got["cached"]}
    if got["write"] is not None and got["write"] != 0:
        out["prompt_tokens_details"]["cache_write_tokens"] = got["write"]
    out["completion_tokens_details"] = {"reasoning_tokens": 0 if got["reasoning"] is None else got["reasoning"]}
    return out


def embedding_count(n: object) -> int | None:
    """A provider's embedding token count, or None (the gateway counts, marked estimated): a
    non-negative JSON integer, or a whole non-negative float (Vertex writes 7.0), kept within
    JSON's 64-bit range (an absurd one is then bounded by the gateway and flagged as a lie)."""
    if type(n) is int and n >= 0:
        return n
    if type(n) is float and math.isfinite(n) and n >= 0 and n.is_integer():
        return min(int(n), JSON_INT_MAX)
    return None


def embedding_list(vectors: object, counts: list[object], model: str, encoding_format: str,
                   who: str) -> dict | ProviderError:
    """A provider's embedding answer as OpenAI's embedding list: `vectors` the value lists in
    input order, `counts` the token counts it reported (one per call or per input); usage only
    when every count is valid (else none: the gateway counts the whole request, estimated)."""
    from tokenomy.gateway.embeddings import encode_vector

    if not isinstance(vectors, list) or not vectors or not all(isinstance(v, list) for v in vectors):
        return garbage(f"{who} embedding response has no vectors")
    try:
        data = [{"object": "embedding", "index": i, "embedding": encode_vector(v, encoding_format)}
                for i, v in enumerate(vectors)]
    except (TypeError, ValueError):
        return garbage(f"{who} embedding values are not numbers")
    out: dict = {"object": "list", "data": data, "model": model}
    ints = [embedding_count(n) for n in counts]
    if ints and all(n is not None for n in ints):
        total = min(sum(ints), JSON_INT_MAX)  # type: ignore[arg-type]
        out["usage"] = {"prompt_tokens": total, "total_tokens": total}
    return out


def merge_embeddings(outs: list[dict]) -> dict:
    """OpenAI embedding lists of a fanned-out request's parts (in input order) as one: the vectors
    re-indexed in order, usage summed when every part reported it (else none: the gateway counts
    the whole request itself, marked estimated)."""
    data: list[dict] = []
    for o in outs:
        for e in o["data"]:
            data.append({**e, "index": len(data)})
    out: dict = {"object": "list", "data": data, "model": outs[0].get("model", "") if outs else ""}
    counts = [(o.get("usage") or {}).get("prompt_tokens") for o in outs]
    if all(type(n) is int and n >= 0 for n in counts):
        n = min(sum(counts), JSON_INT_MAX)  # type: ignore[arg-type]  (bounded later, as any usage)
        out["usage"] = {"prompt_tokens": n, "total_tokens": n}
    return out
