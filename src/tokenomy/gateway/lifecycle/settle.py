"""Settle: the single place where a call's usage is bounded, priced, committed (settling the
reservation), and only then the response completed.

    ev = settler.unary_event(ctx, r)        # bound + price one unary result (no I/O)
    await settler.commit(ctx, ev)           # the request's main event: settles its reservation
    await settler.commit_aux(ctx, ev)       # a cascade's other calls (weak, strong, judge)
    resp = await settler.unary(ctx, r)      # event + commit + the HTTP answer
    await settler.stream(ctx, out, s, rl)   # a relayed stream's event + commit + its tail

Money: the cost is the deployment's price of the bounded counts; the price (what the budget
counts) is the tenant's plan price, never more than what is left of the request's reservation
(`Allowance`) when a hard budget applies, so settlement cannot exceed a hard budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING

import aiohttp
import orjson
from aiohttp import web

from tokenomy.gateway import validate as v
from tokenomy.gateway.errors import error_body, error_response
from tokenomy.gateway.lifecycle.state import OpenStream, RequestCtx, UnaryResult, fmt_usd
from tokenomy.gateway.lifecycle.usage import BilledUsage, bound_usage
from tokenomy.gateway.lifecycle.wire import response_text
from tokenomy.metering import UsageEvent
from tokenomy.tokencount import counter_for

if TYPE_CHECKING:
    from tokenomy.gateway.lifecycle.relay import Relayed
    from tokenomy.gateway.routing import DeploymentRuntime

log = logging.getLogger("tokenomy.gateway")
_ZERO = Decimal(0)
_PICO = Decimal("1e-12")
_NO_USAGE = (0, 0, 0, 0)


class Settler:
    def __init__(self, gw):
        self.metering, self.metrics, self.plans = gw.metering, gw.metrics, gw.plans
        self.request_log = None  # tokenomy.observe.requestlog.RequestLog, set by the app when enabled
        self.longest_output: dict[str, int] = gw.longest_output  # per deployment, for budget caps (admit)

    # ------------------------------------------------------------------ usage -> event
    def bill(self, ctx: RequestCtx, d: DeploymentRuntime, usage: object,
             own_output_tokens: Callable[[], int]) -> BilledUsage:
        """The upstream's usage, validated and bounded (lifecycle/usage.py); anomalies are counted
        per deployment and logged once, naming it."""
        b = bound_usage(usage, own_input_tokens=ctx.input_tokens,
                        max_output_tokens=ctx.n_choices * ctx.out_limit_tokens, own_output_tokens=own_output_tokens)
        if b.anomalies:
            self.metrics.usage_anomaly(d.name)
            log.warning("untrusted usage from deployment %s (request %s): %s; billed input=%d output=%d",
                        d.name, ctx.rid, "; ".join(b.anomalies)[:300], b.counts[0], b.counts[2])
        return b

    def event(self, ctx: RequestCtx, d: DeploymentRuntime | None, billed: BilledUsage | None, *, status: str,
              http_status: int, ttft_ms: float | None = None, energy_j: float | None = None) -> UsageEvent:
        """One usage event; billed None: nothing billable (the call failed before any work)."""
        extra: dict = {"policy": ctx.group.policy}
        if "x-tokenomy-prefix-affinity" in ctx.headers:  # policy prefix-affinity: routed for the cache?
            extra["prefix_affinity"] = ctx.headers["x-tokenomy-prefix-affinity"].startswith("routed")
        if d is not None and billed is not None:
            counts = billed.counts
            inp, cached, out, reasoning = counts
            # Rounded to the ledger's resolution (1e-12 USD) so headers and ledger agree exactly.
            cost = d.price.cost_usd(inp, cached, out, reasoning, billed.cache_write).quantize(_PICO)
            joules = energy_j if energy_j is not None else d.price.energy_joules(inp, out)
            price = cost if ctx.plan is None else self.plans.price_usd(ctx.plan, counts, cost).quantize(_PICO)
            a = ctx.allowance
            if a is not None:
                if price > a.left_usd:  # never settle more than was reserved
                    extra["uncapped_price_usd"] = fmt_usd(price)
                    price = a.left_usd.quantize(_PICO, rounding=ROUND_DOWN)
                    if cost > price and ctx.plan is None:
                        cost = price
                a.left_usd -= price
            if billed.estimated:
                extra["token_counter"] = counter_for(d).name  # which tokenizer produced the estimate
            if billed.anomalies:
                extra["usage_anomaly"] = True
                extra["usage_anomalies"] = list(billed.anomalies)
                extra["usage_raw"] = billed.raw
        else:
            counts, cost, joules, price = _NO_USAGE, _ZERO, 0.0, _ZERO
        if ctx.plan is not None:
            extra["plan"] = ctx.plan.plan.name
            if ctx.plan.action != "allow":
                extra["cap_action"] = ctx.plan.action
                if "x-tokenomy-downgraded" in ctx.headers:
                    extra["downgraded"] = ctx.headers["x-tokenomy-downgraded"]
        if ctx.attempts:
            extra["attempts"] = ctx.attempts
        user, tags = v.user_and_tags(ctx.body)  # validated at admission
        if user is not None:
            extra["user"] = user
        if tags:
            extra["tags"] = tags
        if ctx.route is not None:
            extra["route"] = ctx.route
        if ctx.counterfactual is not None:  # committed-first (tokenomy.allocation.savings)
            extra["counterfactual"] = ctx.counterfactual
        if ctx.part is not None:
            extra.update(ctx.part)
        inp, cached, out, reasoning = counts
        return UsageEvent(
            id=ctx.rid, ts=time.time(), tenant=ctx.principal.tenant, key_id=ctx.principal.key_id,
            model=ctx.group.alias, deployment=d.name if d is not None else "", input_tokens=inp,
            cached_input_tokens=cached, output_tokens=out, reasoning_tokens=reasoning, cost_usd=cost,
            price_usd=price, energy_joules=joules, ttft_ms=ttft_ms,
            latency_ms=(time.perf_counter() - ctx.t0) * 1000.0, status=status,
            estimated=billed.estimated if billed is not None else False, http_status=http_status, extra=extra,
            cache_write_tokens=billed.cache_write if d is not None and billed is not None else 0)

    def unary_event(self, ctx: RequestCtx, r: UnaryResult) -> UsageEvent:
        if r.status == "ok":
            assert r.d is not None
            usage = r.usage
            if ctx.kind == "embeddings" and isinstance(usage, dict) and "completion_tokens" not in usage:
                usage = {**usage, "completion_tokens": 0}  # OpenAI's embedding usage: no output to count
            text = r.own_text
            b = self.bill(ctx, r.d, usage, lambda: counter_for(r.d).count_text(
                text if text is not None else response_text(r.obj, ctx.kind)))
            _learn(self.longest_output, ctx, r.d, b.counts, None, None, r.t_start, r.t_end)
            return self.event(ctx, r.d, b, status="ok", http_status=200, energy_j=r.energy_j)
        assert r.err is not None
        return self.event(ctx, r.d, None, status="error" if r.status == "client_error" else "upstream_error",
                          http_status=r.err.status)

    # ------------------------------------------------------------------ commit
    async def commit(self, ctx: RequestCtx, ev: UsageEvent, response: Callable[[], str] | None = None) -> None:
        """Durably record the request's main event (settling the reservation) — before the
        client sees the end of the answer — then its request-log line (off the loop's path)."""
        recorded = await self.metering.commit(ev, ctx.reservation)
        ctx.committed = True
        self.metrics.observe(ev)
        if self.request_log is not None:
            self.request_log.record(ev, lambda: (_prompt_text(ctx), response() if response else None))
        if ctx.plan is not None:
            if recorded is not False:
                self.plans.record(ev)
            self.plans.finish(ev.tenant, ctx.plan)  # now counted as recorded

    async def commit_aux(self, ctx: RequestCtx, ev: UsageEvent) -> None:
        """Record an auxiliary call of a request (no reservation of its own: the main event settles it)."""
        recorded = await self.metering.commit(ev, None)
        self.metrics.observe(ev)
        if ctx.plan is not None and recorded is not False:
            self.plans.record(ev)

    # ------------------------------------------------------------------ responses
    async def unary(self, ctx: RequestCtx, r: UnaryResult, extra_headers: dict[str, str] | None = None) -> web.Response:
        """The main event of a non-stream answer (or of a failure), committed, then the response."""
        ev = self.unary_event(ctx, r)
        await self.commit(ctx, ev, lambda: response_text(r.obj, ctx.kind) if r.obj is not None else "")
        dep = {"x-tokenomy-deployment": r.d.name} if r.d is not None else {}
        more = extra_headers or {}
        if r.status == "client_error":
            assert r.err is not None
            return web.Response(status=r.err.status, body=r.raw, content_type="application/json",
                                headers={**ctx.headers, **dep, **more})
        if r.status == "failed":
            assert r.err is not None
            return error_response(r.err, {**ctx.headers, **dep, **more})
        body = r.raw
        if r.obj is not None and ("usage_anomaly" in ev.extra  # rare: tell the client what is billed, not the lie
                                  # no usage upstream: embeddings and inbound APIs always carry one (ours)
                                  or ((ctx.kind == "embeddings" or ctx.inbound is not None)
                                      and not isinstance(r.obj.get("usage"), dict))):
            u = billed_usage_json(ev)
            if ctx.kind == "embeddings":  # OpenAI's embedding usage: {prompt_tokens, total_tokens}
                u = {"prompt_tokens": u["prompt_tokens"], "total_tokens": u["prompt_tokens"]}
            body = orjson.dumps({**r.obj, "usage": u})
        return web.Response(status=200, body=body, content_type=r.ctype.split(";")[0],
                            headers={**ctx.headers, **dep,
                                     "x-tokenomy-cost-usd": fmt_usd(ev.cost_usd),
                                     **({"x-tokenomy-price-usd": fmt_usd(ev.price_usd)} if ctx.plan else {}),
                                     "x-tokenomy-energy-j": f"{ev.energy_joules:.6g}", **more})

    async def stream(self, ctx: RequestCtx, out: web.StreamResponse, s: OpenStream, rl: Relayed) -> web.StreamResponse:
        """A relayed stream: its event committed, then the tail (usage chunk, x-tokenomy comment,
        [DONE]); a stream broken after its first byte ends with an error event, then [DONE]."""
        d = s.d
        b = self.bill(ctx, d, rl.usage, lambda: counter_for(d).count_text("".join(rl.texts)))
        if rl.client_gone:
            status, http_status = "cancelled", 499
            d.breaker.success()  # the upstream was fine; the client left
        elif rl.broken is not None:
            status, http_status = "upstream_error", 502
            d.breaker.failure()
            self.metrics.upstream_error(d.name, "garbage")
            ctx.attempts.append({"deployment": d.name, "error": "garbage", "message": rl.broken[:200]})
        else:
            status, http_status = "ok", 200
            d.breaker.success()
            _learn(self.longest_output, ctx, d, b.counts, None if rl.t_first is None else (rl.t_first - s.t_start) * 1000.0, rl.t_first,
                   s.t_start, time.perf_counter())
        ttft_ms = None if rl.t_first is None else (rl.t_first - ctx.t0) * 1000.0
        ev = self.event(ctx, d, b, status=status, http_status=http_status, ttft_ms=ttft_ms, energy_j=rl.energy_j)
        try:
            await self.commit(ctx, ev, lambda: "".join(rl.texts))
        except Exception as exc:  # e.g. the ledger cannot commit: never report success then
            log.exception("request %s: usage not recorded", ctx.rid)
            if not rl.client_gone:
                await end_with_error(out, 500, f"internal error, the request was not completed: "
                                               f"{type(exc).__name__}: {exc}", "internal_error")
            return out
        if rl.client_gone:
            return out
        tail = stream_tail(ctx, d.name, ev)
        parts = []
        if rl.broken is not None:
            parts.append(b"data: " + error_body(502, f"upstream stream broken ({d.name}): {rl.broken}",
                                                code="upstream_garbage") + b"\n\n")
        else:
            held = rl.held_usage
            if held is None and ctx.client_usage:
                # The client asked for usage but the upstream sent none: give ours (estimated).
                head = rl.last_obj or {}
                held = {"id": head.get("id", ctx.rid), "object": head.get("object", "chat.completion.chunk"),
                        "created": head.get("created", int(time.time())), "model": head.get("model", d.model),
                        "choices": []}
            if held is not None:
                if b.anomalies or not isinstance(held.get("usage"), dict):  # the billed figures, never a lie
                    held["usage"] = billed_usage_json(ev)
                held["x_tokenomy"] = tail
                parts.append(b"data: " + orjson.dumps(held) + b"\n\n")
        parts.append(b": x-tokenomy " + orjson.dumps(tail) + b"\n\ndata: [DONE]\n\n")
        await _write_end(out, b"".join(parts))
        return out

    async def sse_from_unary(self, request: web.Request, ctx: RequestCtx, r: UnaryResult,
                             aux_usd: Decimal) -> web.StreamResponse:
        """Send a complete (buffered) answer as an SSE stream: one content chunk, the finish chunk,
        the usage chunk when asked for, then [DONE] — after its event is committed."""
        ev = self.unary_event(ctx, r)
        await self.commit(ctx, ev, lambda: response_text(r.obj, ctx.kind) if r.obj is not None else "")
        assert r.d is not None
        obj = r.obj or {}
        chat = ctx.kind == "chat"
        choices = obj.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        text = response_text(obj, ctx.kind)
        head = {"id": obj.get("id", ctx.rid), "object": "chat.completion.chunk" if chat else "text_completion",
                "created": obj.get("created", int(time.time())), "model": obj.get("model", r.d.model)}
        finish = choice.get("finish_reason", "stop") if isinstance(choice, dict) else "stop"
        # logprobs the answer carries (the client asked for them) ride on the content chunk
        lp = {"logprobs": choice["logprobs"]} if isinstance(choice, dict) and choice.get("logprobs") is not None else {}
        if chat:
            chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, **lp,
                                            "finish_reason": None}]},
                      {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}]
        else:
            chunks = [{**head, "choices": [{"index": 0, "text": text, **lp, "finish_reason": None}]},
                      {**head, "choices": [{"index": 0, "text": "", "finish_reason": finish}]}]
        tail = {**stream_tail(ctx, r.d.name, ev), "route_total_cost_usd": fmt_usd(ev.cost_usd + aux_usd)}
        if ctx.client_usage:
            chunks.append({**head, "choices": [], "x_tokenomy": tail,
                           "usage": {"prompt_tokens": ev.input_tokens, "completion_tokens": ev.output_tokens,
                                     "total_tokens": ev.input_tokens + ev.output_tokens}})
        out = sse_response(ctx, r.d.name)
        body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
        try:
            await out.prepare(request)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            return out
        await _write_end(out, body + b": x-tokenomy " + orjson.dumps(tail) + b"\n\ndata: [DONE]\n\n")
        return out


def sse_response(ctx: RequestCtx, deployment: str) -> web.StreamResponse:
    headers = {**ctx.headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "x-tokenomy-deployment": deployment}
    out = web.StreamResponse(status=200, headers=headers) if ctx.inbound is None \
        else ctx.inbound.sse_response(ctx, headers)
    out.enable_chunked_encoding()
    return out


def billed_usage_json(ev: UsageEvent) -> dict:
    """An OpenAI usage object of the billed figures."""
    u: dict = {"prompt_tokens": ev.input_tokens, "completion_tokens": ev.output_tokens,
               "total_tokens": ev.input_tokens + ev.output_tokens}
    if ev.cached_input_tokens or ev.cache_write_tokens:
        u["prompt_tokens_details"] = {"cached_tokens": ev.cached_input_tokens}
        if ev.cache_write_tokens:
            u["prompt_tokens_details"]["cache_write_tokens"] = ev.cache_write_tokens
    if ev.reasoning_tokens:
        u["completion_tokens_details"] = {"reasoning_tokens": ev.reasoning_tokens}
    return u


def stream_tail(ctx: RequestCtx, deployment: str, ev: UsageEvent) -> dict:
    tail = {"request_id": ctx.rid, "deployment": deployment, "cost_usd": fmt_usd(ev.cost_usd),
            "energy_joules": ev.energy_joules, "input_tokens": ev.input_tokens,
            "output_tokens": ev.output_tokens, "estimated": ev.estimated}
    if ctx.plan is not None:
        tail["price_usd"] = fmt_usd(ev.price_usd)
    return tail


async def end_with_error(out: web.StreamResponse, status: int, message: str, code: str) -> None:
    """End a started SSE stream as a well-formed one: an error event, then the terminator (the
    HTTP status is already on the wire; a second response must never follow)."""
    await _write_end(out, b"data: " + error_body(status, message, code=code) + b"\n\ndata: [DONE]\n\n")


async def _write_end(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
        await out.write_eof()
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        pass


def _prompt_text(ctx: RequestCtx) -> str:
    """What the client sent, for a captured request log line (redacted there)."""
    x = ctx.body.get({"chat": "messages", "embeddings": "input"}.get(ctx.kind, "prompt"))
    return x if isinstance(x, str) else orjson.dumps(x).decode()


def _learn(longest_output: dict[str, int], ctx: RequestCtx, d: DeploymentRuntime, counts, ttft_ms: float | None, t_first: float | None,
           t_start: float, t_end: float) -> None:
    """Feed the routing EWMAs from a served call: cached-input share, output length, TTFT/TPOT."""
    inp, cached, out, _ = counts
    if inp > 0:
        d.cached_frac.update(cached / inp)
    # per choice: n > 1 choices (a client's n, an agreement cascade's k samples) decode side by side,
    # and max_tokens, the group's output prediction and TPOT are all per sequence
    per_choice = -(-out // max(1, ctx.n_choices))
    ctx.group.observe_output(per_choice)
    if per_choice > longest_output.get(d.name, 0):
        longest_output[d.name] = per_choice
    if ttft_ms is not None:
        d.ttft_ms.update(ttft_ms)
        if per_choice > 1 and t_first is not None:
            d.tpot_ms.update((t_end - t_first) * 1000.0 / (per_choice - 1))
    elif per_choice > 0:
        # Non-stream: no TTFT seen; attribute what the known TTFT does not explain to decode.
        lat = (t_end - t_start) * 1000.0
        d.tpot_ms.update(max(0.0, lat - (d.ttft_ms.value or 0.0)) / per_choice)
