"""The upstream seam: how one attempt's request is built and sent, and its answer read.

Everything dispatch knows about the upstream's wire format is here (OpenAI chat/completions,
the request body forwarded as is with `model` swapped, the answer's bytes passed through). A
provider adapter (gateway/providers) plugs in here: a deployment with `d.adapter` (any
provider but openai) has its request built by the adapter, and its answer (unary body, error
body, or stream) turned back into OpenAI's wire format before dispatch and relay read it, so
both stay provider-blind. `d.adapter is None` is the untouched OpenAI fast path.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
import orjson
from yarl import URL

from tokenomy.gateway.providers.base import (FANOUT_CONCURRENCY, OPENAI_PATHS, ProviderError, UpstreamRequest,
                                             merge_embeddings)
from tokenomy.gateway.providers.stream import TranslatedStream
from tokenomy.gateway.upstream import (DEFAULT_MAX_RESPONSE_BYTES, LeanClient, UpstreamResponse, read_capped,
                                      reported_energy_joules)

if TYPE_CHECKING:
    from tokenomy.gateway.lifecycle.state import RequestCtx
    from tokenomy.gateway.routing import DeploymentRuntime


def url(ctx: RequestCtx, d: DeploymentRuntime) -> str:
    return d.base_url + OPENAI_PATHS[ctx.kind]


def payload(ctx: RequestCtx, d: DeploymentRuntime) -> bytes:
    """The request body for deployment d: the client's body, its model name, and for streams the
    usage chunk asked for when the deployment can send it (so the gateway meters exactly)."""
    body = ctx.body
    body["model"] = d.model
    if ctx.stream:
        so = body.get("stream_options") or {}
        if d.cfg.stream_usage:
            if not so.get("include_usage"):
                body["stream_options"] = {**so, "include_usage": True}
        elif so:
            body.pop("stream_options", None)
    return orjson.dumps(body)


async def post(session: aiohttp.ClientSession, lean: LeanClient | None, timeout: aiohttp.ClientTimeout,
               ctx: RequestCtx, d: DeploymentRuntime) -> UpstreamResponse:
    """One unary call, the whole answer read: the lean client for plain http://, aiohttp for the
    rest (https, ...). Raises aiohttp.ClientError / OSError / TimeoutError."""
    if ctx.inbound is not None:
        _inbound_attempt(ctx, d)
    if ctx.openai_extra is not None:  # per attempt: a fallback may speak another provider's API
        ctx.openai_extra.apply(ctx.body, d)
    if d.adapter is not None:
        return await _post_adapted(session, lean, timeout, ctx, d)
    return await _send(session, lean, timeout, url(ctx, d), payload(ctx, d), _headers(ctx, d.headers))


def _headers(ctx: RequestCtx, headers: dict[str, str]) -> dict[str, str]:
    """The attempt's headers: the deployment's, plus the trace context when the request is traced."""
    return headers if ctx.trace_headers is None else {**headers, **ctx.trace_headers}


async def _send(session, lean, timeout, target: str, data: bytes, headers: dict[str, str],
                encoded: bool = False) -> UpstreamResponse:
    if lean is not None:
        resp = await lean.post(target, data, headers, total_s=timeout.total, connect_s=timeout.connect)
        if resp is not None:
            return resp
    # Adapters build percent-encoded URLs (a Bedrock model ARN's ':' is %3A and SigV4 signs it so).
    url = URL(target, encoded=True) if encoded else target
    async with session.post(url, data=data, headers=headers, timeout=timeout) as r:
        raw = await read_capped(r, lean.max_response_bytes if lean is not None else DEFAULT_MAX_RESPONSE_BYTES)
        return UpstreamResponse(r.status, {k.lower(): v for k, v in r.headers.items()}, raw)


async def open_stream(session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout, ctx: RequestCtx,
                      d: DeploymentRuntime) -> aiohttp.ClientResponse:
    if ctx.inbound is not None:
        _inbound_attempt(ctx, d)
    if d.adapter is not None:
        return await _open_adapted(session, timeout, ctx, d)
    return await session.post(url(ctx, d), data=payload(ctx, d), headers=_headers(ctx, d.headers), timeout=timeout)


_JSON = {"content-type": "application/json"}


def _inbound_attempt(ctx: RequestCtx, d: DeploymentRuntime) -> None:
    """An inbound API's request (gateway/messages) learns which deployment this attempt goes to:
    whether it is relayed natively, and so which dropped-field warning applies."""
    hook = getattr(ctx.inbound, "attempt", None)
    if hook is not None:
        hook(ctx, d)


async def _build(ctx: RequestCtx, d: DeploymentRuntime) -> UpstreamRequest | ProviderError:
    ad = d.adapter
    if ad.needs_prepare:
        await ad.prepare()
    ib = ctx.inbound
    if ib is not None and getattr(ib, "native", False):  # the client's own API: relayed as it is
        req = ad.build_native(ib.body, d, stream=ctx.stream, client_headers=ib.client_headers)
    else:
        req = ad.build_request(ctx.body, d, stream=ctx.stream, kind=ctx.kind)
    if isinstance(req, UpstreamRequest) and req.warnings:
        w = "; ".join(req.warnings)
        old = ctx.headers.get("x-tokenomy-warning")
        if not old or w not in old:
            ctx.headers["x-tokenomy-warning"] = "".join(ch if 32 <= ord(ch) < 127 else "?"
                                                       for ch in (f"{old}; {w}" if old else w))
    return req


async def _post_adapted(session, lean, timeout, ctx: RequestCtx, d: DeploymentRuntime) -> UpstreamResponse:
    req = await _build(ctx, d)
    if isinstance(req, ProviderError):  # the body cannot be expressed for this provider
        return UpstreamResponse(req.status, dict(_JSON), req.raw)
    if req.parts:
        return await _post_fanout(session, lean, timeout, ctx, d, req)
    resp = await _send(session, lean, timeout, req.url, req.body, _headers(ctx, req.headers), encoded=True)
    if d.adapter.passthrough and resp.status < 400:
        return resp
    out = d.adapter.parse_response(resp.status, resp._headers, resp.body, req)
    if isinstance(out, ProviderError):
        return _error_response(out, resp)
    return UpstreamResponse(200, dict(_JSON), orjson.dumps(out))


def _error_response(err: ProviderError, resp: UpstreamResponse) -> UpstreamResponse:
    hdrs = dict(_JSON)
    if err.status == 429 and resp.get("retry-after"):
        hdrs["retry-after"] = resp.get("retry-after")
    return UpstreamResponse(err.status, hdrs, err.raw)


async def _post_fanout(session, lean, timeout, ctx: RequestCtx, d: DeploymentRuntime,
                       req: UpstreamRequest) -> UpstreamResponse:
    """One client request the provider takes in pieces: every part sent (at most
    FANOUT_CONCURRENCY at a time, all within the one unary timeout), answers merged in input
    order. The first part to fail fails the request with its error mapped (the rest are
    cancelled), so dispatch retries or falls back exactly as for a single call."""
    ad = d.adapter
    sem = asyncio.Semaphore(FANOUT_CONCURRENCY)

    async def one(p: UpstreamRequest):
        async with sem:
            resp = await _send(session, lean, timeout, p.url, p.body, _headers(ctx, p.headers), encoded=True)
        return resp, ad.parse_response(resp.status, resp._headers, resp.body, p)

    tasks = [asyncio.ensure_future(one(p)) for p in req.parts]
    try:
        async with asyncio.timeout(timeout.total):
            for fut in asyncio.as_completed(tasks):
                resp, out = await fut
                if isinstance(out, ProviderError):
                    return _error_response(out, resp)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return UpstreamResponse(200, dict(_JSON), orjson.dumps(merge_embeddings([t.result()[1] for t in tasks])))


async def _open_adapted(session, timeout, ctx: RequestCtx, d: DeploymentRuntime):
    req = await _build(ctx, d)
    if isinstance(req, ProviderError):
        return TranslatedStream.rejected(req)
    resp = await session.post(URL(req.url, encoded=True), data=req.body, headers=_headers(ctx, req.headers),
                              timeout=timeout)
    if d.adapter.passthrough and resp.status == 200:
        return resp
    return TranslatedStream(d.adapter, req, resp)


def energy_j(obj: dict, header: str | None) -> float | None:
    """Energy the upstream reports for the request (body fields, else the emulator's header)."""
    e = reported_energy_joules(obj)
    if e is None and header:
        try:
            e = float(header)
        except ValueError:
            return None
    return e


def response_text(obj: dict | None, kind: str) -> str:
    """The generated text of a unary answer (every choice)."""
    parts = []
    for c in (obj or {}).get("choices") or ():
        if not isinstance(c, dict):
            continue
        if kind == "chat":
            msg = c.get("message")
            if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                parts.append(msg["content"])
        elif isinstance(c.get("text"), str):
            parts.append(c["text"])
    return "".join(parts)
