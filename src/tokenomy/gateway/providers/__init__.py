"""Provider adapters: how the gateway talks to a deployment's upstream.

A deployment's `provider:` (config.Deployment; default `openai`) picks one adapter:

    adapter = adapter_for(deployment_cfg, default_max_tokens=config.defaults.max_tokens)  # once, at start
    if adapter.needs_prepare:
        await adapter.prepare()                       # credential refresh (Vertex); cheap when fresh
    req = adapter.build_request(body, d, stream=False, kind="chat")   # d: DeploymentRuntime
    if isinstance(req, ProviderError): ...            # the body cannot be sent to this provider (400)
    # POST req.body to req.url with req.headers; req.warnings -> x-tokenomy-warning
    out = adapter.parse_response(status, headers, raw, req)
    if isinstance(out, ProviderError): ...            # out.status, out.body (OpenAI-shaped),
                                                      # out.kind: http_429 | http_5xx | garbage -> retry /
                                                      # fall back; client_error -> pass back
    else: ...                                         # `out` is an OpenAI chat.completion dict
    dec = adapter.stream_decoder(req)                 # streams: dec.feed(bytes) -> [chunk dicts];
                                                      # dec.close() at EOF; dec.usage; dec.error

`d` needs `.base_url` (the runtime one: emulators get theirs at start), `.model` (sent upstream)
and `.cfg`. `adapter.passthrough` is True for OpenAI and Azure: their answers and SSE streams
are already OpenAI's, so the gateway may relay the bytes and skip parse_response on 200 (the
fast path: `build_request` is then just today's `orjson.dumps(body)` with `model` set, and the
URL/header dict are precomputed). Adapters are pure translations plus auth; no I/O but
`prepare`. Optional dependencies (botocore, google-auth) are imported only by the adapters that
need them, when such a deployment is configured.

Usage: a translated answer's (and stream's) usage is the provider's mapped to OpenAI's fields by
base.translated_usage and nothing more: the counts are judged where an OpenAI upstream's are
(lifecycle/usage.py bound_usage), so an invalid count is flagged and counted by the gateway,
never read as 0, and a missing usage is None (the gateway counts, marked estimated).

Modules: openai (passthrough, azure), anthropic, gemini (gemini, vertex), bedrock, stream (a translated
stream as an aiohttp-like response), translate (shared request pieces), base
(UpstreamRequest, ProviderError, StreamDecoder, header env expansion, error classification,
the usage and embedding-answer mappings).
"""

from __future__ import annotations

from tokenomy.gateway.providers.base import (ProviderAdapter, ProviderError, StreamDecoder, UpstreamRequest,
                                             classify_error, resolve_header_value)

PROVIDERS = ("openai", "anthropic", "gemini", "bedrock", "azure", "vertex")


def adapter_for(cfg, *, default_max_tokens: int = 4096) -> ProviderAdapter:
    """The adapter for one deployment config (construct once per deployment: it precomputes headers)."""
    p = getattr(cfg, "provider", "openai") or "openai"
    if p == "openai":
        from tokenomy.gateway.providers.openai import OpenAIAdapter
        return OpenAIAdapter(cfg, default_max_tokens)
    if p == "azure":
        from tokenomy.gateway.providers.openai import AzureAdapter
        return AzureAdapter(cfg, default_max_tokens)
    if p == "anthropic":
        from tokenomy.gateway.providers.anthropic import AnthropicAdapter
        return AnthropicAdapter(cfg, default_max_tokens)
    if p == "gemini":
        from tokenomy.gateway.providers.gemini import GeminiAdapter
        return GeminiAdapter(cfg, default_max_tokens)
    if p == "vertex":
        from tokenomy.gateway.providers.gemini import VertexAdapter
        return VertexAdapter(cfg, default_max_tokens)
    if p == "bedrock":
        from tokenomy.gateway.providers.bedrock import BedrockAdapter
        return BedrockAdapter(cfg, default_max_tokens)
    from tokenomy.errors import ConfigError
    raise ConfigError(f"deployment {cfg.name}: provider {p!r} is not implemented yet "
                      "(implemented: openai, azure, anthropic, gemini, vertex)")


__all__ = ["PROVIDERS", "ProviderAdapter", "ProviderError", "StreamDecoder", "UpstreamRequest", "adapter_for",
           "classify_error", "resolve_header_value"]
