"""OpenAI-compatible upstreams (passthrough, today's fast path) and Azure OpenAI.

Passthrough: url = base_url + /chat/completions (or /completions), the client's body with only
`model` (and the streaming usage request) changed, `Authorization: Bearer $api_key_env`.
Azure: the same wire format on `{base_url}/openai/deployments/{model}/chat/completions
?api-version=...` with an `api-key` header (or, with `api_version: v1`, Azure's v1 API:
`{base_url}/openai/v1/chat/completions`, the model in the body)."""

from __future__ import annotations

import orjson

from tokenomy.gateway.providers.base import (OPENAI_PATHS, ProviderError, SseSplitter, UpstreamRequest, api_key, classify_error,
                                             garbage, resolved_headers)

AZURE_DEFAULT_API_VERSION = "2024-10-21"  # the GA data-plane version (learn.microsoft.com, 2024-10)


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


class OpenAIStreamDecoder:
    """OpenAI SSE -> chunk dicts (the gateway relays OpenAI streams as bytes; this is for callers
    that need dicts, e.g. translated inbound APIs)."""

    def __init__(self) -> None:
        self.sse = SseSplitter()
        self.usage: dict | None = None

    def feed(self, data: bytes) -> list[dict]:
        out = []
        for _, payload in self.sse.feed(data):
            if payload == b"[DONE]":
                continue
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                if isinstance(obj.get("usage"), dict):
                    self.usage = obj["usage"]
                out.append(obj)
        return out

    def close(self) -> list[dict]:
        return []


class OpenAIAdapter:
    """Today's behaviour, byte for byte: the fast path."""

    provider = "openai"
    passthrough = True
    needs_prepare = False

    def __init__(self, cfg, default_max_tokens: int = 4096):
        self.cfg = cfg
        self.headers = {"Content-Type": "application/json", **resolved_headers(cfg)}
        key = api_key(cfg)
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    async def prepare(self) -> None:
        return None

    def url(self, d, kind: str) -> str:
        return d.base_url + OPENAI_PATHS[kind]

    def payload(self, body: dict, d, stream: bool) -> bytes:
        # Mutates `body` in place (it is the request's own dict; copying it costs the fast path).
        body["model"] = d.model
        if stream:
            so = body.get("stream_options") or {}
            if d.cfg.stream_usage:
                if not so.get("include_usage"):
                    body["stream_options"] = {**so, "include_usage": True}
            else:
                body.pop("stream_options", None)
        return orjson.dumps(body)

    def build_request(self, body: dict, d, *, stream: bool, kind: str = "chat") -> UpstreamRequest:
        return UpstreamRequest(self.url(d, kind), self.headers, self.payload(body, d, stream))

    def parse_response(self, status: int, headers: dict[str, str], raw: bytes,
                       req: UpstreamRequest | None = None) -> dict | ProviderError:
        if status >= 400:
            msg, etype = error_message(raw)
            return classify_error(status, msg, etype)
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return garbage(f"invalid JSON in response: {exc}")
        if not isinstance(obj, dict):
            return garbage("invalid JSON in response: not a JSON object")
        return obj

    def stream_decoder(self, req: UpstreamRequest | None = None) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()


class AzureAdapter(OpenAIAdapter):
    """Azure OpenAI: OpenAI's wire format, Azure's URLs and `api-key` auth. `model` is the
    Azure *deployment* name (it is in the URL)."""

    provider = "azure"
    passthrough = True  # same response and stream format as OpenAI

    def __init__(self, cfg, default_max_tokens: int = 4096):
        self.cfg = cfg
        self.api_version = cfg.api_version or AZURE_DEFAULT_API_VERSION
        self.headers = {"Content-Type": "application/json", **resolved_headers(cfg)}
        key = api_key(cfg)
        if key:
            self.headers["api-key"] = key

    def url(self, d, kind: str) -> str:
        op = OPENAI_PATHS[kind][1:]
        base = d.base_url.removesuffix("/openai")
        if self.api_version == "v1":
            return f"{base}/openai/v1/{op}"
        return f"{base}/openai/deployments/{d.model}/{op}?api-version={self.api_version}"
