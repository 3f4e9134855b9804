"""The request path: authenticate, validate, route, reserve, dispatch with fallbacks, meter.

One `Gateway` per app. The order of a request is fixed:
auth -> body -> validate -> model group -> plan caps (block / downgrade group / overage; gateway/plans.py)
-> rank deployments -> rate limit -> reserve worst case
-> try deployments (breaker, retry budget) -> build ONE UsageEvent (price_usd: the tenant's plan price)
-> `await metering.commit` -> count it against the plan caps
-> only then send the body (non-stream) or the final `data: [DONE]` (stream; see streaming.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tokenomy.config import GatewayConfig
from tokenomy.errors import ConfigError, TokenomyError
from tokenomy.gateway import validate as v
from tokenomy.gateway.context import _CallFailed, _Ctx, _fmt_usd, _header_safe, _Unary
from tokenomy.gateway.errors import ApiError, error_response
from tokenomy.gateway.health import RetryBudget
from tokenomy.gateway.metrics import Metrics
from tokenomy.gateway.plans import PlanGate, PlanState, load_plan_gate
from tokenomy.gateway.pricing import latency_prior_ms, resolve_price
from tokenomy.gateway.routing import DeploymentRuntime, GroupRuntime, RouteRuntime, build_groups, build_routes
from tokenomy.gateway.streaming import StreamingMixin
from tokenomy.gateway.upstream import LeanClient, UpstreamResponse, reported_energy_joules, usage_counts
from tokenomy.metering import MeteringError, UsageEvent
from tokenomy.tokencount import counter_for

log = logging.getLogger("tokenomy.gateway")
_ZERO = Decimal(0)
_PICO = Decimal("1e-12")
# Reserve a little above our own input estimate: an upstream's tokenizer may count more.
_INPUT_MARGIN = 1.1
_INPUT_SLACK_TOKENS = 16


class CascadeMixin:
    """Policy cascade of a routed alias (uses Gateway's _call_unary, _unary_event, _commit, _stream).

    Non-stream: weak call -> verifier -> return it, or call the strong model. Stream: the weak
    answer is fetched whole (non-stream) and scored before anything is sent; kept answers are
    then sent as one SSE content chunk, escalated requests stream the strong model. So the TTFT
    of a streamed cascade request is the weak call's full latency + the verifier's time (+ the
    strong model's TTFT when escalated): the price of judging the answer, not the prompt.

    Metering: every upstream call is one usage event under the request id: the served answer
    is `<req>` (settles the reservation; carries extra.route), the unserved weak (or failed
    strong) call is `<req>:weak` (`<req>:strong`), an LLM judge call `<req>:judge`."""

    async def _commit_aux(self, ctx: "_Ctx", ev: UsageEvent) -> None:
        """Record an auxiliary call of a request (no reservation of its own: the main event settles it)."""
        recorded = await self.metering.commit(ev, None)
        self.metrics.observe(ev)
        if ctx.plan is not None and recorded is not False:
            self.plans.record(ev)  # type: ignore[union-attr]

    async def _aux(self, ctx: "_Ctx", sub: "_Ctx", r: _Unary, role: str) -> UsageEvent:
        sub.rid = f"{ctx.rid}:{role}"
        sub.part = {"route_part": role, "parent": ctx.rid}
        ev = self._unary_event(sub, r)
        await self._commit_aux(ctx, ev)
        return ev

    async def _cascade(self, request: web.Request, ctx: "_Ctx", route: RouteRuntime, priced,
                       weak_order: list[DeploymentRuntime], max_tokens: int | None) -> web.StreamResponse:
        from tokenomy.routing.cascade import run_cascade

        weak_g, strong_g = route.candidates[0], route.candidates[-1]
        wctx = ctx.sub(ctx.rid, weak_g, stream=False)
        sctx = ctx.sub(ctx.rid, strong_g, stream=False)
        judge = None
        aux_usd = Decimal(0)

        weak_box: list[_Unary] = []

        async def call_weak() -> _Unary:
            r = await self._call_unary(wctx, weak_order)
            weak_box.append(r)
            if r.status != "ok":
                raise _CallFailed(r)
            return r

        async def call_strong() -> _Unary | None:
            if ctx.stream:
                return None  # streamed below, once the decision is known
            r = await self._call_unary(sctx, strong_g.rank(ctx.input_tokens, max_tokens).order)
            if r.status != "ok":
                raise _CallFailed(r)
            return r

        verifier = route.verifier
        if route.judge is not None:
            judge = verifier = _GatewayJudge(self, ctx, *route.judge)
        try:
            res = await run_cascade(call_weak, call_strong, verifier, route.threshold, prompt=ctx.prompt,
                                    text_of=lambda r: _response_text(r.obj, ctx.kind))
        except _CallFailed as exc:  # both calls failed (non-stream): the strong failure is the answer
            await self._aux(ctx, wctx, weak_box[0] if weak_box else _result_of(None, None), "weak")
            ctx.group = strong_g
            ctx.route = {**route.route_extra(priced, strong_g), "escalated": True, "score": None,
                         "threshold": route.threshold, "verifier": route.verifier_name, "served_by": "none"}
            return await self._finish_unary(ctx, exc.result, {"x-tokenomy-cascade-escalated": "true"})
        if judge is not None:
            aux_usd += judge.cost_usd
        weak_call = res.calls[0]
        weak_r = weak_call.response if weak_call.error is None else _result_of(weak_call.error, None)
        served_strong = res.served_by == "strong"
        served = strong_g if served_strong else weak_g
        ctx.route = {**route.route_extra(priced, served), "escalated": res.escalated, "served_by": res.served_by,
                     "score": res.score, "predicted_quality": res.score, "threshold": route.threshold,
                     "verifier": route.verifier_name, "verifier_ms": round(res.verifier_seconds * 1000.0, 3)}
        if res.verifier_error:
            ctx.route["verifier_error"] = res.verifier_error[:200]
        headers = {**res.headers(), "x-tokenomy-route-alias": route.alias, "x-tokenomy-route-model": served.alias,
                   "x-tokenomy-cascade-verifier": _header_safe(route.verifier_name)}
        ctx.group = served
        if served_strong or (res.escalated and ctx.stream):
            aux_usd += (await self._aux(ctx, wctx, weak_r, "weak")).cost_usd
            ctx.headers.update(headers)
            if ctx.stream:  # escalated: stream the strong model (fallbacks before the first byte)
                ctx.route["served_by"] = "strong"
                ctx.route["strong"] = True
                return await self._stream(request, ctx, strong_g.rank(ctx.input_tokens, max_tokens).order)
            main = res.calls[-1].response
        else:  # the weak answer is served (kept, or the strong call failed)
            if res.strong_error is not None:
                failed = res.calls[-1].error
                aux_usd += (await self._aux(ctx, sctx, _result_of(failed, strong_g), "strong")).cost_usd
                ctx.route["strong_error"] = res.strong_error[:200]
            main = weak_r
            ctx.headers.update(headers)
            if ctx.stream:
                return await self._sse_from_unary(request, ctx, main, aux_usd)
        resp = await self._finish_unary(ctx, main)
        if aux_usd and "x-tokenomy-cost-usd" in resp.headers:
            resp.headers["x-tokenomy-route-total-cost-usd"] = _fmt_usd(Decimal(resp.headers["x-tokenomy-cost-usd"]) + aux_usd)
        return resp

    async def _sse_from_unary(self, request: web.Request, ctx: "_Ctx", r: _Unary, aux_usd: Decimal) -> web.StreamResponse:
        """Send a complete (buffered) answer as an SSE stream: one content chunk, the finish chunk,
        the usage chunk when asked for, then [DONE] — after its event is committed."""
        ev = self._unary_event(ctx, r)
        await self._commit(ctx, ev)
        obj = r.obj or {}
        chat = ctx.kind == "chat"
        choice = (obj.get("choices") or [{}])[0] if isinstance(obj.get("choices"), list) else {}
        text = _response_text(obj, ctx.kind)
        head = {"id": obj.get("id", ctx.rid), "object": "chat.completion.chunk" if chat else "text_completion",
                "created": obj.get("created", int(time.time())), "model": obj.get("model", r.d.model)}
        finish = choice.get("finish_reason", "stop") if isinstance(choice, dict) else "stop"
        if chat:
            chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                            "finish_reason": None}]},
                      {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}]
        else:
            chunks = [{**head, "choices": [{"index": 0, "text": text, "finish_reason": None}]},
                      {**head, "choices": [{"index": 0, "text": "", "finish_reason": finish}]}]
        tail = {"request_id": ctx.rid, "deployment": r.d.name, "cost_usd": _fmt_usd(ev.cost_usd),
                "energy_joules": ev.energy_joules, "input_tokens": ev.input_tokens,
                "output_tokens": ev.output_tokens, "estimated": ev.estimated,
                "route_total_cost_usd": _fmt_usd(ev.cost_usd + aux_usd)}
        if ctx.plan is not None:
            tail["price_usd"] = _fmt_usd(ev.price_usd)
        if ctx.client_usage:
            chunks.append({**head, "choices": [], "x_tokenomy": tail,
                           "usage": {"prompt_tokens": ev.input_tokens, "completion_tokens": ev.output_tokens,
                                     "total_tokens": ev.input_tokens + ev.output_tokens}})
        out = web.StreamResponse(status=200, headers={
            **ctx.headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "x-tokenomy-deployment": r.d.name})
        out.enable_chunked_encoding()
        body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
        try:
            await out.prepare(request)
            await out.write(body + b": x-tokenomy " + orjson.dumps(tail) + b"\n\ndata: [DONE]\n\n")
            await out.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        return out


class _GatewayJudge:
    """LLM-as-judge through the gateway's own dispatch: the judge group's deployments, fallbacks
    and prices apply, and its tokens are metered to the same tenant as `<req>:judge`."""

    def __init__(self, gw, ctx: "_Ctx", group: GroupRuntime, jv):
        self.gw, self.ctx, self.group, self.jv = gw, ctx, group, jv
        self.cost_usd = Decimal(0)

    async def ascore(self, prompt: str, answer: str) -> float | None:
        from tokenomy.routing.cascade.judge import JudgeError, normalize, parse_score

        messages = self.jv.messages(prompt, answer)
        body = {"model": self.group.alias, "messages": messages, "max_tokens": self.jv.max_tokens, "temperature": 0}
        jctx = self.ctx.sub(self.ctx.rid, self.group, stream=False, body=body)
        jctx.kind = "chat"
        jctx.input_tokens = counter_for(self.group).count_chat(messages)
        r = await self.gw._call_unary(jctx, self.group.rank(jctx.input_tokens, self.jv.max_tokens).order)
        ev = await self.gw._aux(self.ctx, jctx, r, "judge")
        self.cost_usd += ev.cost_usd
        if r.status != "ok":
            raise JudgeError(f"judge {self.group.alias}: {r.err.message if r.err else r.status}")
        s = parse_score(_response_text(r.obj, "chat"))
        return None if s is None else normalize(s)


def _result_of(exc: BaseException | None, group) -> _Unary:
    if isinstance(exc, _CallFailed):
        return exc.result
    return _Unary("failed", None, err=ApiError(502, f"{type(exc).__name__}: {exc}", code="upstream_error"))


class Gateway(StreamingMixin, CascadeMixin):
    def __init__(self, config: GatewayConfig, metering: Any):
        self.config, self.metering = config, metering
        self.deployments: dict[str, DeploymentRuntime] = {}
        for i, d in enumerate(config.deployments):
            try:
                price = resolve_price(d)
            except TokenomyError as exc:  # e.g. an unknown accelerator or price-map id
                raise ConfigError(f"invalid config: deployments[{i}].pricing ({d.name}): {exc}") from None
            rt = self.deployments[d.name] = DeploymentRuntime(d, price, config)
            try:
                prior = latency_prior_ms(d)
            except TokenomyError:
                prior = None  # no prior: the first observations decide
            if prior is not None:
                rt.ttft_ms.value, rt.tpot_ms.value = prior
        for d in self.deployments.values():
            if d.cfg.api_key_env:
                key = os.environ.get(d.cfg.api_key_env)
                if key:
                    d.headers["Authorization"] = f"Bearer {key}"
        self.groups: dict[str, GroupRuntime] = build_groups(config, self.deployments)
        # Routed aliases (`auto`): router and calibrated threshold, or cascade verifier, loaded once.
        self.routes: dict[str, RouteRuntime] = build_routes(config, self.groups)
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
        self.max_attempts = config.retry.max_attempts
        self.in_flight = 0  # requests being handled (for graceful drain)

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
        self.lean = LeanClient()

    async def close(self) -> None:
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
        auth = request.headers.get("Authorization")
        if not auth:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "malformed Authorization header: expected 'Bearer <key>'",
                           code="invalid_api_key")
        try:
            return self.metering.authenticate(secret.strip())
        except MeteringError as exc:
            raise ApiError(exc.status, exc.message, code=exc.code) from None

    # ---------------------------------------------------------------- inference
    async def handle(self, request: web.Request, kind: str) -> web.StreamResponse:
        """kind: "chat" (/v1/chat/completions) or "completions" (/v1/completions)."""
        t0 = time.perf_counter()
        rid = "req_" + os.urandom(12).hex()
        self.in_flight += 1
        try:
            return await self._handle(request, kind, rid, t0)
        except ApiError as err:
            if err.status == 429:
                self.metrics.rejected(err.code or "429")
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

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.config.server.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"request body too large: {request.content_length} bytes > limit {limit}",
                           code="request_too_large")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"request body too large: > limit {limit} bytes",
                           code="request_too_large") from None

    async def _handle(self, request: web.Request, kind: str, rid: str, t0: float) -> web.StreamResponse:
        principal = self.authenticate(request)
        body = v.parse_body(await self._read_body(request))
        alias = v.require_str(body, "model")
        stream = v.opt_bool(body, "stream")
        max_tokens = v.max_tokens(body)
        tc = counter_for(self.groups.get(alias) or self.routes.get(alias))  # the model's tokenizer
        if kind == "chat":
            input_tokens = tc.count_chat(v.chat_messages(body))
            tools = v.opt_array(body, "tools") or v.opt_array(body, "functions")
            if tools:  # tool schemas are prompt tokens too (budgets must not under-reserve)
                input_tokens += tc.count_text(orjson.dumps(tools).decode())
        else:
            prompt = v.completion_prompt(body)
            input_tokens = prompt if isinstance(prompt, int) else tc.count_text(prompt)
        so = body.get("stream_options")
        if so is not None and not isinstance(so, dict):
            raise ApiError(400, "'stream_options' must be an object", param="stream_options", code="invalid_type")
        group = self.groups.get(alias)
        route = self.routes.get(alias) if group is None else None
        if group is None and route is None:
            raise ApiError(404, f"unknown model '{alias}'; available: {', '.join(sorted([*self.groups, *self.routes]))}",
                           param="model", code="model_not_found")
        route_headers: dict[str, str] = {}
        route_extra = priced = None
        prompt = ""
        if route is not None:
            prompt = _routed_prompt(body, kind)
            priced = route.priced(input_tokens, max_tokens)
            if route.policy == "router":
                qd, group = route.decide(prompt, priced)
                route_headers = {**qd.headers(), "x-tokenomy-route-model": group.alias,
                                 "x-tokenomy-route-alias": alias}
                if route.kind == "max_usd_per_request":
                    route_headers["x-tokenomy-route-max-usd"] = f"{route.cfg.max_usd_per_request:g}"
                route_extra = {**qd.to_json(), **route.route_extra(priced, group), "model": group.alias}
            else:
                group = route.candidates[0]  # cascade: the weakest answers first
        plan_state, plan_headers = None, None
        if self.plans is not None:
            before = group
            plan_state, group, plan_headers = self._apply_plan(principal, group)
            if route is not None and group is not before:  # the plan's downgrade wins over routing
                route, route_extra, route_headers = None, None, {}
        try:
            decision = group.rank(input_tokens, max_tokens)
            m = self.metering
            n_choices = v.n_choices(body)
            max_out = (max_tokens or self.default_max_tokens) * n_choices
            worst = self._worst_case_usd(group, input_tokens, max_out)
            cascade = route is not None and route.policy == "cascade"
            if cascade:  # the weak call, then maybe the strong one (and a judge call)
                worst += self._worst_case_usd(route.candidates[-1], input_tokens, max_out)
                if route.judge is not None:
                    jv = route.judge[1]
                    worst += self._worst_case_usd(route.judge[0], input_tokens * 2 + 400, jv.max_tokens)
            if plan_state is not None:
                worst = self.plans.worst_case_usd(plan_state, input_tokens, max_out, worst)  # type: ignore[union-attr]
            try:
                m.check_rate(principal, input_tokens + int(decision.predicted_output_tokens))
                reservation = m.reserve(principal, worst)
            except MeteringError as exc:
                headers = {}
                if exc.retry_after_s is not None:
                    headers["Retry-After"] = str(max(1, int(-(-exc.retry_after_s // 1))))
                raise ApiError(exc.status, exc.message, code=exc.code, headers=headers) from None
            extra_headers = {"x-tokenomy-request-id": rid}
            if plan_headers:
                extra_headers.update(plan_headers)
            extra_headers.update(route_headers)
            warnings = m.warnings(principal)
            if warnings:
                extra_headers["x-tokenomy-warning"] = _header_safe("; ".join(warnings))
            if decision.slo_met is False:
                extra_headers["x-tokenomy-slo"] = "unmet: no deployment currently meets the group SLO; least-bad chosen"
            self.retry_budget.deposit()
            ctx = _Ctx(rid, t0, principal, group, body, stream, input_tokens, reservation, extra_headers, kind,
                       client_usage=bool(so and so.get("include_usage")))
            ctx.plan = plan_state
            ctx.route, ctx.prompt = route_extra, prompt
            if route is not None and self.feedback is not None and self.config.routing.store_prompts:
                await asyncio.to_thread(self.feedback.record_prompt, rid, principal.tenant, prompt)
            committed = False
            try:
                if cascade:
                    resp = await self._cascade(request, ctx, route, priced, decision.order, max_tokens)
                elif stream:
                    resp = await self._stream(request, ctx, decision.order)
                else:
                    resp = await self._unary(ctx, decision.order)
                committed = True
                return resp
            finally:
                if not committed and not ctx.committed:
                    m.release(reservation)
        finally:
            if plan_state is not None:  # not admitted, or failed before its event: free the slot
                self.plans.finish(principal.tenant, plan_state)  # type: ignore[union-attr]

    def _apply_plan(self, principal, group: GroupRuntime) -> tuple[PlanState, GroupRuntime, dict[str, str]]:
        """The tenant's plan caps, before anything is reserved or sent: block raises a 429 naming the
        cap with Retry-After and x-tokenomy-cap-reset; downgrade swaps in the plan's cheaper group."""
        from tokenomy.billing.periods import iso

        now = time.time()
        state = self.plans.check(principal.tenant, now)  # type: ignore[union-attr]
        d = state.decision
        headers: dict[str, str] = {}
        if d.action == "block":
            retry = d.retry_after_seconds(now) or 0.0
            headers = {"Retry-After": str(max(1, math.ceil(retry)))}
            if d.reset_at is not None:
                headers["x-tokenomy-cap-reset"] = iso(d.reset_at)
            raise ApiError(429, d.message, code="plan_cap_reached", headers=headers)
        if d.action == "downgrade":
            target = self.groups.get(d.downgrade_group or "")
            if target is not None and target is not group:
                headers["x-tokenomy-downgraded"] = _header_safe(f"{group.alias}->{target.alias}")
                group = target
        elif d.action == "overage":
            headers["x-tokenomy-overage"] = "true"
        return state, group, headers

    def _worst_case_usd(self, group: GroupRuntime, input_tokens: int, max_tokens: int) -> Decimal:
        """Worst case over every deployment a fallback might reach: no cache hits, all of
        max_tokens generated at the highest output/reasoning price."""
        inp = int(input_tokens * _INPUT_MARGIN) + _INPUT_SLACK_TOKENS
        best = 0.0
        for d in group.deployments:  # floats: the input margin dwarfs any rounding
            c = inp * d.p_in + max_tokens * (d.p_out if d.p_out >= d.p_reason else d.p_reason)
            if c > best:
                best = c
        return Decimal(repr(best))

    # ---------------------------------------------------------------- dispatch helpers
    def _candidates(self, order: list[DeploymentRuntime]):
        """Yield deployments to try, honouring breakers, max_attempts and the retry budget."""
        tried = 0
        for d in order:
            if tried >= self.max_attempts:
                return
            if tried and not self.retry_budget.try_spend():
                return
            if not d.breaker.acquire():
                continue
            tried += 1
            yield d

    def _payload(self, ctx: "_Ctx", d: DeploymentRuntime) -> bytes:
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

    def _url(self, ctx: "_Ctx", d: DeploymentRuntime) -> str:
        return d.base_url + ("/chat/completions" if ctx.kind == "chat" else "/completions")

    def _fail(self, d: DeploymentRuntime, ctx: "_Ctx", kind: str, message: str) -> None:
        d.breaker.failure()
        self.metrics.upstream_error(d.name, kind)
        ctx.attempts.append({"deployment": d.name, "error": kind, "message": message[:200]})
        ctx.last_error = (kind, f"{d.name}: {message}")

    def _all_failed(self, ctx: "_Ctx", any_tried: bool) -> ApiError:
        if not any_tried:
            return ApiError(503, f"no available deployment for model '{ctx.group.alias}': circuit breakers "
                                 f"open on {', '.join(d.name for d in ctx.group.deployments)}",
                            code="no_healthy_deployment")
        kind, msg = ctx.last_error or ("connection", "no upstream answered")
        tried = ", ".join(a["deployment"] for a in ctx.attempts)
        if kind == "timeout":
            return ApiError(504, f"upstream timed out ({msg}); tried: {tried}", code="upstream_timeout")
        if kind == "http_429":
            return ApiError(429, f"all deployments of '{ctx.group.alias}' are rate limited upstream ({msg})",
                            code="upstream_rate_limited", headers={"Retry-After": _retry_after(ctx.retry_after)})
        code = "upstream_garbage" if kind == "garbage" else "upstream_error"
        return ApiError(502, f"upstream error ({msg}); tried: {tried}", code=code)

    def _event(self, ctx: "_Ctx", d: DeploymentRuntime | None, *, counts: tuple[int, int, int, int],
               status: str, http_status: int, estimated: bool, ttft_ms: float | None,
               energy: float | None = None, billable: bool = True) -> UsageEvent:
        inp, cached, out, reasoning = counts
        if d is not None and billable:
            # Rounded to the ledger's resolution (1e-12 USD) so headers and ledger agree exactly.
            cost = d.price.cost_usd(inp, cached, out, reasoning).quantize(_PICO)
            joules = energy if energy is not None else d.price.energy_joules(inp, out)
            price = cost if ctx.plan is None else self.plans.price_usd(ctx.plan, counts, cost).quantize(_PICO)
        else:
            cost, joules, price = _ZERO, 0.0, _ZERO
        extra: dict = {"policy": ctx.group.policy}
        if ctx.plan is not None:
            extra["plan"] = ctx.plan.plan.name
            if ctx.plan.action != "allow":
                extra["cap_action"] = ctx.plan.action
                if "x-tokenomy-downgraded" in ctx.headers:
                    extra["downgraded"] = ctx.headers["x-tokenomy-downgraded"]
        if ctx.attempts:
            extra["attempts"] = ctx.attempts
        if ctx.route is not None:
            extra["route"] = ctx.route
        if ctx.part is not None:
            extra.update(ctx.part)
        if estimated and d is not None:
            extra["token_counter"] = counter_for(d).name  # which tokenizer produced the estimate
        return UsageEvent(
            id=ctx.rid, ts=time.time(), tenant=ctx.principal.tenant, key_id=ctx.principal.key_id,
            model=ctx.group.alias, deployment=d.name if d is not None else "", input_tokens=inp,
            cached_input_tokens=cached, output_tokens=out, reasoning_tokens=reasoning, cost_usd=cost,
            price_usd=price, energy_joules=joules, ttft_ms=ttft_ms,
            latency_ms=(time.perf_counter() - ctx.t0) * 1000.0, status=status, estimated=estimated,
            http_status=http_status, extra=extra)

    async def _commit(self, ctx: "_Ctx", ev) -> None:
        """Durably record the event (settling the reservation) — before the client sees the end."""
        recorded = await self.metering.commit(ev, ctx.reservation)
        ctx.committed = True
        self.metrics.observe(ev)
        if ctx.plan is not None:
            if recorded is not False:
                self.plans.record(ev)  # type: ignore[union-attr]
            self.plans.finish(ev.tenant, ctx.plan)  # type: ignore[union-attr]  # now counted as recorded

    def _learn(self, ctx: "_Ctx", d: DeploymentRuntime, counts, ttft_ms: float | None, t_first: float | None,
               t_start: float) -> None:
        inp, cached, out, _ = counts
        if inp > 0:
            d.cached_frac.update(cached / inp)
        ctx.group.observe_output(out)
        now = time.perf_counter()
        if ttft_ms is not None:
            d.ttft_ms.update(ttft_ms)
            if out > 1 and t_first is not None:
                d.tpot_ms.update((now - t_first) * 1000.0 / (out - 1))
        elif out > 0:
            # Non-stream: no TTFT seen; attribute what the known TTFT does not explain to decode.
            lat = (now - t_start) * 1000.0
            d.tpot_ms.update(max(0.0, lat - (d.ttft_ms.value or 0.0)) / out)

    async def _error_event(self, ctx: "_Ctx", err: ApiError, d: DeploymentRuntime | None) -> None:
        ev = self._event(ctx, d, counts=(0, 0, 0, 0), status="upstream_error", http_status=err.status,
                         estimated=False, ttft_ms=None, billable=False)
        await self._commit(ctx, ev)

    # ---------------------------------------------------------------- non-stream
    async def _post(self, session: aiohttp.ClientSession, d: DeploymentRuntime, url: str,
                    payload: bytes) -> UpstreamResponse:
        """One unary upstream call, the whole answer read: the lean client for plain http://,
        aiohttp for the rest (https, ...). Raises aiohttp.ClientError / OSError / TimeoutError."""
        t = self.unary_timeout
        if self.lean is not None:
            resp = await self.lean.post(url, payload, d.headers, total_s=t.total, connect_s=t.connect)
            if resp is not None:
                return resp
        async with session.post(url, data=payload, headers=d.headers, timeout=t) as r:
            raw = await r.read()
            return UpstreamResponse(r.status, {k.lower(): v for k, v in r.headers.items()}, raw)

    async def _unary(self, ctx: "_Ctx", order: list[DeploymentRuntime]) -> web.Response:
        return await self._finish_unary(ctx, await self._call_unary(ctx, order))

    async def _call_unary(self, ctx: "_Ctx", order: list[DeploymentRuntime]) -> _Unary:
        """Try deployments in order until one answers; nothing is metered here."""
        session = self.session
        assert session is not None, "gateway not started"
        last: DeploymentRuntime | None = None
        for d in self._candidates(order):
            last = d
            t_start = time.perf_counter()
            d.in_flight += 1
            try:
                resp = await self._post(session, d, self._url(ctx, d), self._payload(ctx, d))
                status, raw = resp.status, resp.body
                ctype = resp.get("Content-Type", "application/json")
                energy_hdr = resp.get("x-emulator-energy-j")
                if status == 429:
                    ctx.retry_after = resp.get("Retry-After") or ctx.retry_after
            except (asyncio.TimeoutError, TimeoutError):
                self._fail(d, ctx, "timeout", f"no response within {self.config.timeouts.total_s:g} s")
                continue
            except (aiohttp.ClientError, OSError) as exc:
                self._fail(d, ctx, "connection", f"{type(exc).__name__}: {exc}")
                continue
            finally:
                d.in_flight -= 1
            if status == 429 or status >= 500:
                self._fail(d, ctx, "http_429" if status == 429 else "http_5xx", f"HTTP {status}: {raw[:200]!r}")
                continue
            if status >= 400:  # the request itself is bad for this upstream: pass it through, no fallback
                d.breaker.success()
                return _Unary("client_error", d, raw, err=ApiError(status, f"HTTP {status} from {d.name}"))
            try:
                obj = orjson.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except (orjson.JSONDecodeError, ValueError) as exc:
                self._fail(d, ctx, "garbage", f"invalid JSON in response: {exc}")
                continue
            counts = usage_counts(obj.get("usage"))
            estimated = counts is None
            if counts is None:
                counts = (ctx.input_tokens, 0, counter_for(d).count_text(_response_text(obj, ctx.kind)), 0)
            energy = reported_energy_joules(obj)
            if energy is None and energy_hdr:
                try:
                    energy = float(energy_hdr)
                except ValueError:
                    energy = None
            d.breaker.success()
            self._learn(ctx, d, counts, None, None, t_start)
            return _Unary("ok", d, raw, ctype, obj, counts, estimated, energy)
        return _Unary("failed", last, err=self._all_failed(ctx, last is not None))

    def _unary_event(self, ctx: "_Ctx", r: _Unary) -> UsageEvent:
        if r.status == "ok":
            return self._event(ctx, r.d, counts=r.counts, status="ok", http_status=200, estimated=r.estimated,
                               ttft_ms=None, energy=r.energy)
        if r.status == "client_error":
            return self._event(ctx, r.d, counts=(0, 0, 0, 0), status="error", http_status=r.err.status,
                               estimated=False, ttft_ms=None, billable=False)
        return self._event(ctx, r.d, counts=(0, 0, 0, 0), status="upstream_error", http_status=r.err.status,
                           estimated=False, ttft_ms=None, billable=False)

    async def _finish_unary(self, ctx: "_Ctx", r: _Unary, extra_headers: dict[str, str] | None = None) -> web.Response:
        """Meter the main event of a non-stream request (committed before the body is sent), respond."""
        ev = self._unary_event(ctx, r)
        await self._commit(ctx, ev)
        dep = {"x-tokenomy-deployment": r.d.name} if r.d is not None else {}
        more = extra_headers or {}
        if r.status == "client_error":
            return web.Response(status=r.err.status, body=r.raw, content_type="application/json",
                                headers={**ctx.headers, **dep, **more})
        if r.status == "failed":
            return error_response(r.err, {**ctx.headers, **dep, **more})
        return web.Response(status=200, body=r.raw, content_type=r.ctype.split(";")[0],
                            headers={**ctx.headers, **dep,
                                     "x-tokenomy-cost-usd": _fmt_usd(ev.cost_usd),
                                     **({"x-tokenomy-price-usd": _fmt_usd(ev.price_usd)} if ctx.plan else {}),
                                     "x-tokenomy-energy-j": f"{ev.energy_joules:.6g}", **more})


def _routed_prompt(body: dict, kind: str) -> str:
    """What a router reads: the last user message (text parts joined), or the completion prompt."""
    if kind != "chat":
        p = body.get("prompt")
        if isinstance(p, list):
            p = p[-1] if p else ""
        return p if isinstance(p, str) else ""
    for m in reversed(body.get("messages") or ()):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _retry_after(value: str | None) -> str:
    """An upstream's Retry-After in whole seconds (>= 1); 1 when absent or an HTTP date."""
    try:
        return str(max(1, int(-(-float(value) // 1)))) if value else "1"
    except ValueError:
        return "1"


def _response_text(obj: dict, kind: str) -> str:
    parts = []
    for c in obj.get("choices") or ():
        if not isinstance(c, dict):
            continue
        if kind == "chat":
            msg = c.get("message")
            if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                parts.append(msg["content"])
        elif isinstance(c.get("text"), str):
            parts.append(c["text"])
    return "".join(parts)
