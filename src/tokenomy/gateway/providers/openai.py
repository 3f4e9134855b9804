"""OpenAI-compatible upstreams (passthrough, today's fast path) and Azure OpenAI.

Passthrough: url = base_url + /chat/completions (or /completions), the client's body with only
`model` (and the streaming usage request) changed, `Authorization: Bearer $api_key_env`.
Azure: the same wire format on `{base_url}/openai/deployments/{model}/chat/completions
?api-version=...` with an `api-key` header (or, with `api_version: v1`, Azure's v1 API:
`{base_url}/openai/v1/chat/completions`, the model in the body)."""

from __future__ import annotations

import orjson

from tokenomy.gateway.providers.base import (OPENAI_PATHS, ProviderError, SseSplitter, UpstreamRequest, answer_object,
                                             json_headers)

AZURE_DEFAULT_API_VERSION = "2024-10-21"  # the GA data-plane version (learn.microsoft.com, 2024-10)


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
        self.headers = json_headers(cfg, "Authorization", "Bearer ", lower=False)

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
        return answer_object(status, raw, "response")

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
        self.headers = json_headers(cfg, "api-key", lower=False)

    def url(self, d, kind: str) -> str:
        op = OPENAI_PATHS[kind][1:]
        base = d.base_url.removesuffix("/openai")
        if self.api_version == "v1":
            return f"{base}/openai/v1/{op}"
        return f"{base}/openai/deployments/{d.model}/{op}?api-version={self.api_version}"
