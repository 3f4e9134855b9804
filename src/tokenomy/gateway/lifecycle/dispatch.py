"""Dispatch: try the ranked deployments (fallbacks, same-deployment retries, breakers, retry
budget) until one answers; nothing is metered here (settle does that).

    r = await dispatcher.unary(ctx, order)        # UnaryResult: ok | client_error | failed
    s = await dispatcher.open_stream(ctx, order)  # OpenStream (first event read) | UnaryResult

Unary and stream attempts share the classifier (lifecycle/retry.py) and the attempt schedule
(`Attempts`): a stream can still fail over or be retried until its first event arrives (read
within timeouts.first_byte_s), never after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson

from tokenomy.gateway.errors import ApiError
from tokenomy.gateway.lifecycle import budget, wire
from tokenomy.gateway.lifecycle.retry import RetryPolicy, classify_exception, classify_status, garbage
from tokenomy.gateway.lifecycle.state import Failure, OpenStream, RequestCtx, UnaryResult
from tokenomy.gateway.upstream import MAX_EVENT_BYTES, event_data, read_capped, read_event

if TYPE_CHECKING:
    from tokenomy.gateway.health import RetryBudget
    from tokenomy.gateway.metrics import Metrics
    from tokenomy.gateway.routing import DeploymentRuntime


_PICO = Decimal("1e-12")


class Attempts:
    """The deployments one request may try, in order: the ranked ones, then those whose failure
    allows another try (after its backoff). At most policy.max_attempts; every attempt after the
    first spends a retry-budget token; a deployment whose breaker refuses is skipped."""

    __slots__ = ("policy", "budget", "order", "pos", "tried", "again", "failures", "fits", "full", "deferred")

    def __init__(self, order: list[DeploymentRuntime], policy: RetryPolicy, budget: RetryBudget,
                 fits: Callable[[DeploymentRuntime], Awaitable[bool]] | None = None,
                 full: Callable[[DeploymentRuntime], bool] | None = None):
        self.policy, self.budget, self.order = policy, budget, list(order)
        self.fits = fits  # may this deployment be tried within the request's reservation (topped up)?
        # committed-first: a committed deployment whose SLO headroom went while this request awaited
        # is moved behind the others once (checked with no await before the caller takes the slot)
        self.full = full
        self.deferred: set[str] = set()
        self.pos = 0
        self.tried = 0
        self.again: list[tuple[DeploymentRuntime, float]] = []  # (deployment, delay before retrying it)
        self.failures: dict[str, int] = {}

    async def next(self) -> DeploymentRuntime | None:
        while self.tried < self.policy.max_attempts:
            delay = 0.0
            if self.pos < len(self.order):
                d = self.order[self.pos]
                self.pos += 1
            elif self.again:
                d, delay = self.again.pop(0)
            else:
                return None
            if self.fits is not None and not await self.fits(d):
                continue
            if self.tried and not self.budget.try_spend():
                return None
            if delay > 0:
                await self.policy.sleep(delay)
            if self.full is not None and d.name not in self.deferred and self.full(d) \
                    and self.pos < len(self.order):
                self.deferred.add(d.name)
                self.order.append(d)
                continue
            if not d.breaker.acquire():
                continue
            self.tried += 1
            return d
        return None

    def failed(self, d: DeploymentRuntime, f: Failure) -> None:
        n = self.failures[d.name] = self.failures.get(d.name, 0) + 1
        delay = self.policy.delay_s(f, n)
        if delay is not None:
            self.again.append((d, delay))


class Dispatcher:
    def __init__(self, gw):
        self.gw = gw  # session, lean client, timeouts, metrics, retry budget and policy
        self.metrics: Metrics = gw.metrics

    def attempts(self, ctx: RequestCtx, order: list[DeploymentRuntime]) -> Attempts:
        fits = None
        if ctx.reservation is not None and ctx.allowance is not None:  # a hard budget to respect
            fits = lambda d: self._fits(ctx, d)  # noqa: E731
        full = ctx.group.full if ctx.group.headroom else None
        return Attempts(order, self.gw.retry_policy, self.gw.retry_budget, fits, full)

    async def _fits(self, ctx: RequestCtx, d: DeploymentRuntime) -> bool:
        """A deployment dearer than what is reserved is tried only if the reservation can be topped
        up to its worst case; else it is skipped (recorded in the event's attempts)."""
        need = budget.priced_worst_usd(self.gw.plans, ctx.plan, [d], ctx.input_tokens,
                                       ctx.out_limit_tokens * ctx.n_choices)
        if need <= ctx.reserved_usd + _PICO or await budget.top_up(self.gw.metering, ctx, need - ctx.reserved_usd):
            return True
        ctx.attempts.append({"deployment": d.name, "error": "budget",
                             "message": f"skipped: its worst case ${need:.6g} does not fit the budget"})
        return False

    def fail(self, ctx: RequestCtx, d: DeploymentRuntime, f: Failure, plan: Attempts | None = None) -> None:
        """Record a failed attempt: breaker, metrics, the event's `attempts`, maybe a retry."""
        d.breaker.failure()
        self.metrics.upstream_error(d.name, f.kind)
        ctx.attempts.append({"deployment": d.name, "error": f.kind, "message": f.message[:200]})
        ctx.last_failure = f
        if f.kind == "http_429" and f.retry_after_raw:
            ctx.retry_after = f.retry_after_raw
        if plan is not None:
            plan.failed(d, f)

    def all_failed(self, ctx: RequestCtx, any_tried: bool) -> ApiError:
        if not any_tried:
            return ApiError(503, f"no available deployment for model '{ctx.group.alias}': circuit breakers "
                                 f"open on {', '.join(d.name for d in ctx.group.deployments)}",
                            code="no_healthy_deployment")
        f = ctx.last_failure
        kind, msg = (f.kind, f.message) if f is not None else ("connection", "no upstream answered")
        where = ctx.attempts[-1]["deployment"] if ctx.attempts else "?"
        msg = f"{where}: {msg}"
        tried = ", ".join(a["deployment"] for a in ctx.attempts)
        if kind == "timeout":
            return ApiError(504, f"upstream timed out ({msg}); tried: {tried}", code="upstream_timeout")
        if kind == "http_429":
            return ApiError(429, f"all deployments of '{ctx.group.alias}' are rate limited upstream ({msg})",
                            code="upstream_rate_limited", headers={"Retry-After": _retry_after(ctx.retry_after)})
        code = "upstream_garbage" if kind == "garbage" else "upstream_error"
        return ApiError(502, f"upstream error ({msg}); tried: {tried}", code=code)

    # ------------------------------------------------------------------ non-stream
    async def send(self, ctx: RequestCtx, d: DeploymentRuntime):
        """One unary attempt on the wire (an UpstreamResponse; raises transport errors)."""
        gw = self.gw
        assert gw.session is not None, "gateway not started"
        return await wire.post(gw.session, gw.lean, gw.unary_timeout, ctx, d)

    async def unary(self, ctx: RequestCtx, order: list[DeploymentRuntime]) -> UnaryResult:
        timeout = self.gw.unary_timeout
        plan = self.attempts(ctx, order)
        last: DeploymentRuntime | None = None
        while (d := await plan.next()) is not None:
            last = d
            t_start = time.perf_counter()
            d.in_flight += 1
            try:
                resp = await self.send(ctx, d)
            except Exception as exc:
                f = classify_exception(exc, f"no response within {timeout.total:g} s")
                if f is None:
                    raise
                self.fail(ctx, d, f, plan)
                continue
            finally:
                d.in_flight -= 1
            status, raw = resp.status, resp.body
            f = classify_status(status, raw, resp.get("Retry-After"))
            if f is not None:
                self.fail(ctx, d, f, plan)
                continue
            if status >= 400:  # the request itself is bad for this upstream: pass it through, no fallback
                d.breaker.success()
                return UnaryResult("client_error", d, raw, err=ApiError(status, f"HTTP {status} from {d.name}"),
                                   t_start=t_start)
            try:
                obj = orjson.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except (orjson.JSONDecodeError, ValueError) as exc:
                self.fail(ctx, d, garbage(f"invalid JSON in response: {exc}"), plan)
                continue
            d.breaker.success()
            return UnaryResult("ok", d, raw, resp.get("Content-Type", "application/json"), obj, obj.get("usage"),
                               wire.energy_j(obj, resp.get("x-emulator-energy-j")), t_start=t_start,
                               t_end=time.perf_counter())
        return UnaryResult("failed", last, err=self.all_failed(ctx, last is not None))

    # ------------------------------------------------------------------ stream
    async def open_stream(self, ctx: RequestCtx, order: list[DeploymentRuntime]) -> OpenStream | UnaryResult:
        """Connect and read the first SSE event (within first_byte_s), failing over or retrying
        until one deployment sends it. A 4xx passes through (UnaryResult client_error)."""
        plan = self.attempts(ctx, order)
        last: DeploymentRuntime | None = None
        while (d := await plan.next()) is not None:
            last = d
            t_start = time.perf_counter()
            d.in_flight += 1
            try:
                got = await self._open_one(ctx, d)
            except BaseException:  # cancelled: keep the in-flight count honest
                d.in_flight -= 1
                raise
            if isinstance(got, Failure):
                d.in_flight -= 1
                self.fail(ctx, d, got, plan)
                continue
            resp, first = got
            if resp.status != 200:
                d.in_flight -= 1
                d.breaker.success()
                return UnaryResult("client_error", d, first, err=ApiError(resp.status, f"HTTP {resp.status} from {d.name}"),
                                   t_start=t_start)
            return OpenStream(d, resp, first, t_start)  # in_flight is released once relayed
        return UnaryResult("failed", last, err=self.all_failed(ctx, last is not None))

    async def _open_one(self, ctx: RequestCtx, d: DeploymentRuntime):
        """One stream attempt: (response, first event) | (non-200 response, its body) | Failure."""
        gw = self.gw
        session = gw.session
        assert session is not None, "gateway not started"
        resp = None
        try:
            async with asyncio.timeout(gw.first_byte_s):
                resp = await wire.open_stream(session, gw.stream_timeout, ctx, d)
                if resp.status != 200:
                    raw = await read_capped(resp, MAX_EVENT_BYTES)  # an error body: small
                    resp.release()
                    f = classify_status(resp.status, raw, resp.headers.get("Retry-After"))
                    return f if f is not None else (resp, raw)
                first = await read_event(resp.content)
        except Exception as exc:
            if resp is not None:
                resp.close()
            f = classify_exception(exc, f"no first token within {gw.first_byte_s:g} s")
            if f is None:
                raise
            return f
        if first is None:
            resp.close()
            return garbage("stream ended before any event")
        data = event_data(first)
        if data is not None and data != b"[DONE]":
            try:
                orjson.loads(data)
            except orjson.JSONDecodeError:
                resp.close()
                return garbage(f"invalid JSON in first stream event: {data[:100]!r}")
        return resp, first


def _retry_after(value: str | None) -> str:
    """An upstream's Retry-After in whole seconds (>= 1); 1 when absent or an HTTP date."""
    try:
        return str(max(1, int(-(-float(value) // 1)))) if value else "1"
    except ValueError:
        return "1"
