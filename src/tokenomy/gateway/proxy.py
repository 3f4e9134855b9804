"""The request path, one typed pipeline (gateway/lifecycle/*), read top to bottom in `_handle`:

    admit    (lifecycle/admit.py)    auth -> body -> validate -> model group / routed alias ->
                                     plan caps -> rank deployments -> rate limit -> reserve
    dispatch (lifecycle/dispatch.py) try deployments: one failure classifier (lifecycle/retry.py)
                                     for unary and stream attempts, fallbacks, retries on the same
                                     deployment with backoff + jitter, breakers, retry budget
    settle   (lifecycle/settle.py)   bound the upstream's usage (lifecycle/usage.py), price it,
                                     commit ONE event (settling the reservation), and only then
                                     send the body (non-stream) or the final `data: [DONE]` (stream)

A stream is relayed between dispatch and settle (lifecycle/relay.py); a cascade alias runs the
same dispatch and settle per call (lifecycle/cascade.py). The lean front (gateway/fastpath.py)
and aiohttp both call `Gateway.handle`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tokenomy.config import GatewayConfig
from tokenomy.gateway.errors import ApiError, error_response
from tokenomy.gateway.health import RetryBudget
from tokenomy.gateway.lifecycle.admit import Admission
from tokenomy.gateway.lifecycle.budget import release_extra
from tokenomy.gateway.lifecycle.cascade import Cascade
from tokenomy.gateway.lifecycle.dispatch import Dispatcher
from tokenomy.gateway.lifecycle.relay import Relayed, relay
from tokenomy.gateway.lifecycle.retry import RetryPolicy
from tokenomy.gateway.lifecycle.settle import Settler, end_with_error, sse_response
from tokenomy.gateway.lifecycle.state import OpenStream, RequestCtx
from tokenomy.gateway.metrics import Metrics
from tokenomy.gateway.plans import PlanGate, load_plan_gate
from tokenomy.gateway.routing import DeploymentRuntime, GroupRuntime, RouteRuntime
from tokenomy.gateway.topology import Topology, build_topology
from tokenomy.gateway.upstream import LeanClient
from tokenomy.metering import MeteringError

log = logging.getLogger("tokenomy.gateway")


def _metering_api_error(exc: MeteringError) -> ApiError:
    """A metering refusal anywhere on the path (e.g. counters unavailable, fail mode closed) as its
    own status and code, never a 500."""
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, int(-(-exc.retry_after_s // 1))))
    return ApiError(exc.status, exc.message, code=exc.code, headers=headers)


class Gateway:
    def __init__(self, config: GatewayConfig, metering: Any):
        self.config, self.metering = config, metering
        self.config_path: str | None = None  # the YAML file a reload reads (gateway/reload.py)
        self.resources: Any = None  # the app's AsyncExitStack once started (emulators of reloaded deployments)
        self.tracing: Any = None  # tokenomy.observe.tracing.Tracing when `tracing:` is configured
        # Deployments, groups and routed aliases (`auto`: router and calibrated threshold, or cascade
        # verifier, loaded once); swapped as a whole by a config reload (gateway/reload.py).
        self.apply_topology(build_topology(config))
        self.feedback = None  # routing.feedback.FeedbackStore, opened at start
        # Billing plans (caps, downgrade, overage, tenant price per event); None without `plans:`.
        self.plans: PlanGate | None = load_plan_gate(config, self.groups, getattr(metering, "data_dir", None))
        self.metrics = Metrics(lambda: self.deployments.values())
        self.retry_budget = RetryBudget(config.retry.budget_ratio, config.retry.min_budget)
        self.session: aiohttp.ClientSession | None = None
        self.lean: LeanClient | None = None  # unary calls to plain-http upstreams (aiohttp: the rest)
        t = config.timeouts
        self.unary_timeout = aiohttp.ClientTimeout(total=t.total_s, connect=t.connect_s)
        self.stream_timeout = aiohttp.ClientTimeout(total=None, connect=t.connect_s, sock_read=t.total_s)
        self.first_byte_s = t.first_byte_s
        self.default_max_tokens = config.defaults.max_tokens
        self.budget_wait_s = config.budgets.wait_s
        self.longest_output: dict[str, int] = {}  # deployment -> longest output per choice served (tokens)
        r = config.retry
        self.retry_policy = RetryPolicy(r.max_attempts, r.backoff_base_s, r.backoff_max_s, r.retry_after_max_s)
        self.in_flight = 0  # requests being handled (for graceful drain)
        # The pipeline's three stages (gateway/lifecycle/*).
        self.admission = Admission(self)
        self.dispatcher = Dispatcher(self)
        self.settler = Settler(self)
        self.cascade = Cascade(self)

    def apply_topology(self, t: Topology) -> None:
        """Swap in a topology: synchronous, so every request admitted after it sees all of it."""
        self.deployments: dict[str, DeploymentRuntime] = t.deployments
        self.groups: dict[str, GroupRuntime] = t.groups
        self.routes: dict[str, RouteRuntime] = t.routes

    @property
    def topology(self) -> Topology:
        return Topology(self.deployments, self.groups, self.routes)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        from tokenomy.routing.feedback import FeedbackStore, PgFeedbackStore

        # Feedback lives beside the events: in PostgreSQL (shared by every replica, on the
        # ledger's own pool) when the ledger is there, else in the SQLite ledger file.
        pg = getattr(getattr(self.metering, "ledger", None), "inner", None)
        if getattr(pg, "engine", None) is not None and getattr(pg, "url", "").startswith("postgresql"):
            self.feedback = PgFeedbackStore(pg.engine)
        else:
            self.feedback = FeedbackStore.open(getattr(self.metering, "data_dir", None))
        conn = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(connector=conn, json_serialize=lambda o: orjson.dumps(o).decode(),
                                             skip_auto_headers=("User-Agent",), auto_decompress=True)
        self.lean = LeanClient(max_response_bytes=self.config.server.max_upstream_response_bytes)

    async def close(self) -> None:
        for route in self.routes.values():
            if route.share_sync is not None:
                await route.share_sync.aclose()
        if self.plans is not None:
            self.plans.close()
        if self.lean is not None:
            self.lean.close()
            self.lean = None
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.feedback is not None:
            self.feedback.close()
            self.feedback = None

    # ---------------------------------------------------------------- auth
    def authenticate(self, request: web.Request):
        return self.admission.authenticate(request)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.config.server.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"request body too large: {request.content_length} bytes > limit {limit}",
                           code="request_too_large")
        deadline_s = self.config.server.head_timeout_s
        try:
            # the body within head_timeout_s of its head, as on the lean front: a client that
            # trickles (or never sends) its body holds a connection and a handler no longer
            async with asyncio.timeout(deadline_s):
                return await request.read()
        except TimeoutError:
            raise ApiError(408, f"request body not received within {deadline_s:g} s", code="request_timeout",
                           headers={"Connection": "close"}) from None
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"request body too large: > limit {limit} bytes",
                           code="request_too_large") from None

    # ---------------------------------------------------------------- inference
    async def handle(self, request: web.Request, kind: str, inbound: Any = None) -> web.StreamResponse:
        """kind: "chat" (/v1/chat/completions), "completions" (/v1/completions) or "embeddings"
        (/v1/embeddings: a unary call, priced on input tokens). `inbound`: another API's request
        served as chat (gateway/messages: Anthropic's), translated at admission."""
        t0 = time.perf_counter()
        rid = "req_" + os.urandom(12).hex()
        self.in_flight += 1
        try:
            return await self._handle(request, kind, rid, t0, inbound)
        except (ApiError, MeteringError) as exc:
            err = exc if isinstance(exc, ApiError) else _metering_api_error(exc)
            if err.status == 429:
                self.metrics.rejected(err.code or "429")
            if self.settler.request_log is not None:  # refused before any upstream work: a line too
                self.settler.request_log.refused(rid, err.status, err.code, (time.perf_counter() - t0) * 1000.0)
            return error_response(err, {"x-tokenomy-request-id": rid})
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            raise
        except Exception as exc:  # e.g. the ledger cannot commit: never report success then
            log.exception("request %s failed", rid)
            return error_response(ApiError(500, f"internal error, the request was not completed: "
                                                f"{type(exc).__name__}: {exc}", code="internal_error"),
                                  {"x-tokenomy-request-id": rid})
        finally:
            self.in_flight -= 1

    async def _handle(self, request: web.Request, kind: str, rid: str, t0: float,
                      inbound: Any = None) -> web.StreamResponse:
        a = await self.admission.admit(request, kind, rid, t0, inbound)  # raises ApiError when refused
        ctx = a.ctx
        try:
            if a.routed and self.feedback is not None and self.config.routing.store_prompts:
                await asyncio.to_thread(self.feedback.record_prompt, rid, ctx.principal.tenant, ctx.prompt)
            if a.cascade is not None:
                return await self.cascade.run(request, ctx, a.cascade, a.priced, a.order)
            if ctx.stream:
                return await self.serve_stream(request, ctx, a.order)
            return await self.settler.unary(ctx, await self.dispatcher.unary(ctx, a.order))
        finally:
            if not ctx.committed:  # failed before its event: nothing may stay held
                self.metering.release(ctx.reservation)
            release_extra(self.metering, ctx)  # top-ups held apart (the adapter of budget.top_up)
            if ctx.plan is not None:
                self.plans.finish(ctx.principal.tenant, ctx.plan)  # type: ignore[union-attr]

    async def serve_stream(self, request: web.Request, ctx: RequestCtx,
                           order: list[DeploymentRuntime]) -> web.StreamResponse:
        """dispatch (until the first event) -> relay -> settle. Once the 200 head is out, every
        ending is a well-formed SSE stream (an error event then [DONE] at worst)."""
        s = await self.dispatcher.open_stream(ctx, order)
        if not isinstance(s, OpenStream):  # every attempt failed, or a 4xx passed through
            return await self.settler.unary(ctx, s)
        out = sse_response(ctx, s.d.name)
        try:
            try:
                await out.prepare(request)
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                rl = None
            else:
                rl = await relay(ctx, s, out, self.config.timeouts.total_s)
            if rl is None:
                rl = Relayed(client_gone=True)
            return await self.settler.stream(ctx, out, s, rl)
        except Exception as exc:
            if not out.prepared:
                raise
            log.exception("request %s: stream failed after its first byte", ctx.rid)
            await end_with_error(out, 500, f"internal error: {type(exc).__name__}: {exc}", "internal_error")
            return out
        finally:
            s.d.in_flight -= 1
            s.resp.close()
