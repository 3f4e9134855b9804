"""The upstream seam: how one attempt's request is built and sent, and its answer read.

Everything dispatch knows about the upstream's wire format is here (OpenAI chat/completions,
the request body forwarded as is with `model` swapped, the answer's bytes passed through). A
provider adapter (gateway/providers) plugs in by replacing these few functions per deployment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import orjson

from tokenomy.gateway.upstream import (DEFAULT_MAX_RESPONSE_BYTES, LeanClient, UpstreamResponse, read_capped,
                                      reported_energy_joules)

if TYPE_CHECKING:
    from tokenomy.gateway.lifecycle.state import RequestCtx
    from tokenomy.gateway.routing import DeploymentRuntime


def url(ctx: RequestCtx, d: DeploymentRuntime) -> str:
    return d.base_url + ("/chat/completions" if ctx.kind == "chat" else "/completions")


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
    target, data = url(ctx, d), payload(ctx, d)
    if lean is not None:
        resp = await lean.post(target, data, d.headers, total_s=timeout.total, connect_s=timeout.connect)
        if resp is not None:
            return resp
    async with session.post(target, data=data, headers=d.headers, timeout=timeout) as r:
        raw = await read_capped(r, lean.max_response_bytes if lean is not None else DEFAULT_MAX_RESPONSE_BYTES)
        return UpstreamResponse(r.status, {k.lower(): v for k, v in r.headers.items()}, raw)


async def open_stream(session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout, ctx: RequestCtx,
                      d: DeploymentRuntime) -> aiohttp.ClientResponse:
    return await session.post(url(ctx, d), data=payload(ctx, d), headers=d.headers, timeout=timeout)


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
