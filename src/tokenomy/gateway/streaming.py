"""Streaming dispatch: connect, fail over only BEFORE the first byte, relay SSE, meter at the end.

The first upstream SSE event is read (within timeouts.first_byte_s) before anything is sent to
the client, so a failing deployment can still be swapped. After that the stream is relayed
event by event; usage comes from the upstream's usage chunk (requested with
stream_options.include_usage) or is counted from the relayed text (estimated). The final
`data: [DONE]` is written only after the usage event is committed.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
from aiohttp import web

from tokenomy.gateway.context import _Attempt, _Ctx, _fmt_usd
from tokenomy.gateway.errors import error_body, error_response
from tokenomy.gateway.routing import DeploymentRuntime
from tokenomy.gateway.upstream import event_data, read_event, reported_energy_joules, usage_counts
from tokenomy.tokencount import counter_for


class StreamingMixin:
    """The stream half of `Gateway` (uses its _candidates, _fail, _event, _commit, _learn)."""

    async def _open_stream(self, ctx: "_Ctx", d: DeploymentRuntime):
        """Connect and read the first SSE event within first_byte_s. Returns (resp, first_event)."""
        session = self.session
        assert session is not None, "gateway not started"
        resp = None
        try:
            async with asyncio.timeout(self.first_byte_s):
                resp = await session.post(self._url(ctx, d), data=self._payload(ctx, d), headers=d.headers,
                                          timeout=self.stream_timeout)
                if resp.status != 200:
                    raw = await resp.read()
                    resp.release()
                    return resp, raw
                first = await read_event(resp.content)
        except (asyncio.TimeoutError, TimeoutError):
            if resp is not None:
                resp.close()
            raise _Attempt("timeout", f"no first token within {self.first_byte_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            if resp is not None:
                resp.close()
            raise _Attempt("connection", f"{type(exc).__name__}: {exc}") from None
        if first is None:
            resp.close()
            raise _Attempt("garbage", "stream ended before any event")
        data = event_data(first)
        if data is not None and data != b"[DONE]":
            try:
                orjson.loads(data)
            except orjson.JSONDecodeError:
                resp.close()
                raise _Attempt("garbage", f"invalid JSON in first stream event: {data[:100]!r}") from None
        return resp, first

    async def _stream(self, request: web.Request, ctx: "_Ctx", order: list[DeploymentRuntime]):
        last: DeploymentRuntime | None = None
        chosen = None
        for d in self._candidates(order):
            last = d
            t_start = time.perf_counter()
            d.in_flight += 1
            try:
                resp, first = await self._open_stream(ctx, d)
            except _Attempt as a:
                d.in_flight -= 1
                self._fail(d, ctx, a.kind, a.message)
                continue
            except BaseException:  # cancelled: keep the in-flight count honest
                d.in_flight -= 1
                raise
            if resp.status != 200:
                d.in_flight -= 1
                st = resp.status
                if st == 429 or st >= 500:
                    if st == 429:
                        ctx.retry_after = resp.headers.get("Retry-After") or ctx.retry_after
                    self._fail(d, ctx, "http_429" if st == 429 else "http_5xx", f"HTTP {st}: {first[:200]!r}")
                    continue
                d.breaker.success()
                ev = self._event(ctx, d, counts=(0, 0, 0, 0), status="error", http_status=st, estimated=False,
                                 ttft_ms=None, billable=False)
                await self._commit(ctx, ev)
                return web.Response(status=st, body=first, content_type="application/json",
                                    headers={**ctx.headers, "x-tokenomy-deployment": d.name})
            chosen = (d, resp, first, t_start)
            break
        if chosen is None:
            err = self._all_failed(ctx, last is not None)
            await self._error_event(ctx, err, last)
            return error_response(err, {**ctx.headers, **({"x-tokenomy-deployment": last.name} if last else {})})
        d, resp, first, t_start = chosen
        try:
            return await self._relay(request, ctx, d, resp, first, t_start)
        finally:
            d.in_flight -= 1
            resp.close()

    async def _relay(self, request: web.Request, ctx: "_Ctx", d: DeploymentRuntime, resp, first: bytes,
                     t_start: float) -> web.StreamResponse:
        t_first = None  # first content token (the first event may be a bare role chunk)
        out = web.StreamResponse(status=200, headers={
            **ctx.headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "x-tokenomy-deployment": d.name})
        out.enable_chunked_encoding()
        texts: list[str] = []
        counts = None
        energy = None
        held_usage: dict | None = None  # the usage chunk, sent after commit with x_tokenomy added
        last_obj: dict | None = None
        status, http_status, broken = "ok", 200, None
        done = False
        client_gone = False
        try:
            await out.prepare(request)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            client_gone = True
        event: bytes | None = first
        while event is not None and not client_gone:
            data = event_data(event)
            forward = True
            if data is not None:
                if data == b"[DONE]":
                    done = True
                    break
                try:
                    obj = orjson.loads(data)
                except orjson.JSONDecodeError:
                    broken = f"invalid JSON in stream event: {data[:100]!r}"
                    break
                if isinstance(obj, dict):
                    last_obj = obj
                    if "error" in obj and not obj.get("choices"):
                        broken = f"upstream sent an error event: {str(obj.get('error'))[:200]}"
                        break
                    choices = obj.get("choices")
                    if choices:
                        c0 = choices[0]
                        if isinstance(c0, dict):
                            piece = (c0.get("delta") or {}).get("content") if ctx.kind == "chat" else c0.get("text")
                            if isinstance(piece, str) and piece:
                                texts.append(piece)
                                if t_first is None:
                                    t_first = time.perf_counter()
                    u = obj.get("usage")
                    if u:
                        counts = usage_counts(u) or counts
                        e = reported_energy_joules(obj)
                        if e is not None:
                            energy = e
                        if not choices:
                            forward = False
                            if ctx.client_usage:
                                held_usage = obj
            if forward:
                try:
                    await out.write(event + (b"\n" if event.endswith(b"\n") else b"\n\n"))
                except (ConnectionError, aiohttp.ClientConnectionResetError):
                    client_gone = True
                    break
            try:
                event = await read_event(resp.content)
            except (asyncio.TimeoutError, TimeoutError):
                broken = f"no stream data within {self.config.timeouts.total_s:g} s"
                break
            except (aiohttp.ClientError, OSError) as exc:
                broken = f"stream interrupted: {type(exc).__name__}: {exc}"
                break
        if not done and broken is None and not client_gone:
            broken = "stream ended without [DONE]"
        ttft_ms = None if t_first is None else (t_first - ctx.t0) * 1000.0
        estimated = counts is None
        if counts is None:
            counts = (ctx.input_tokens, 0, counter_for(d).count_text("".join(texts)), 0)
        if client_gone:
            status, http_status = "cancelled", 499
            d.breaker.success()  # the upstream was fine; the client left
        elif broken is not None:
            status, http_status = "upstream_error", 502
            self._fail(d, ctx, "garbage", broken)
        else:
            d.breaker.success()
            self._learn(ctx, d, counts, None if t_first is None else (t_first - t_start) * 1000.0, t_first,
                        t_start)
        ev = self._event(ctx, d, counts=counts, status=status, http_status=http_status, estimated=estimated,
                         ttft_ms=ttft_ms, energy=energy)
        await self._commit(ctx, ev)
        if client_gone:
            return out
        tail = {"request_id": ctx.rid, "deployment": d.name, "cost_usd": _fmt_usd(ev.cost_usd),
                "energy_joules": ev.energy_joules, "input_tokens": ev.input_tokens,
                "output_tokens": ev.output_tokens, "estimated": ev.estimated}
        if ctx.plan is not None:
            tail["price_usd"] = _fmt_usd(ev.price_usd)
        parts = []
        if broken is not None:
            parts.append(b"data: " + error_body(502, f"upstream stream broken ({d.name}): {broken}",
                                                code="upstream_garbage") + b"\n\n")
        else:
            if held_usage is None and ctx.client_usage:
                # The client asked for usage but the upstream sent none: give ours (estimated).
                head = last_obj or {}
                held_usage = {"id": head.get("id", ctx.rid), "object": head.get("object", "chat.completion.chunk"),
                              "created": head.get("created", int(time.time())), "model": head.get("model", d.model),
                              "choices": [], "usage": {"prompt_tokens": ev.input_tokens,
                                                       "completion_tokens": ev.output_tokens,
                                                       "total_tokens": ev.input_tokens + ev.output_tokens}}
            if held_usage is not None:
                held_usage["x_tokenomy"] = tail
                parts.append(b"data: " + orjson.dumps(held_usage) + b"\n\n")
            parts.append(b": x-tokenomy " + orjson.dumps(tail) + b"\n\ndata: [DONE]\n\n")
        try:
            await out.write(b"".join(parts))
            await out.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        return out
