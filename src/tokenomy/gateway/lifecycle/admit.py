"""Admit: everything decided before a byte goes upstream, in this order:
auth -> body -> validate -> model group / routed alias -> plan caps (block / downgrade /
overage; gateway/plans.py) -> rank deployments -> rate limit -> reserve the worst case.
A refusal raises ApiError (OpenAI-style JSON); an admitted request holds a reservation that
settle (or the pipeline's `finally`) releases.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from tokenomy.gateway.routing import AFFINITY_HEADER
from tokenomy.gateway import embeddings as emb
from tokenomy.gateway import validate as v
from tokenomy.gateway.lifecycle import budget
from tokenomy.gateway.errors import ApiError
from tokenomy.gateway.lifecycle.state import Allowance, RequestCtx, header_safe
from tokenomy.gateway.lifecycle.usage import UNSTATED_MAX_OUTPUT_TOKENS
from tokenomy.metering import MeteringError
from tokenomy.tokencount import counter_for

if TYPE_CHECKING:
    from tokenomy.gateway.plans import PlanState
    from tokenomy.gateway.routing import DeploymentRuntime, GroupRuntime, RouteRuntime
    from tokenomy.metering.types import Reservation

@dataclass(slots=True)
class Admitted:
    ctx: RequestCtx
    order: list[DeploymentRuntime]  # ranked deployments: first = chosen, rest = fallbacks
    cascade: RouteRuntime | None = None  # a cascade alias: weak answer first, maybe escalated
    priced: Any = None  # the route's priced candidates (cascade route extras)
    routed: bool = False  # served through a routed alias (its prompt may be stored for feedback)


class Admission:
    def __init__(self, gw):
        self.gw = gw

    @staticmethod
    def _secret(request: web.Request) -> str:
        auth = request.headers.get("Authorization")
        if not auth:
            # Anthropic-style clients (the anthropic SDK, agents built on it) send `x-api-key`.
            key = request.headers.get("x-api-key", "").strip()
            if key:
                return key
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')",
                           code="missing_api_key")
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "malformed Authorization header: expected 'Bearer <key>'",
                           code="invalid_api_key")
        return secret.strip()

    def authenticate(self, request: web.Request):
        try:
            return self.gw.metering.authenticate(self._secret(request))
        except MeteringError as exc:
            raise ApiError(exc.status, exc.message, code=exc.code) from None

    async def aauthenticate(self, request: web.Request):
        """authenticate, with the key look-up off the event loop (Metering.aauthenticate)."""
        m = self.gw.metering
        if not hasattr(m, "aauthenticate"):
            return self.authenticate(request)
        try:
            return await m.aauthenticate(self._secret(request))
        except MeteringError as exc:
            raise ApiError(exc.status, exc.message, code=exc.code) from None

    async def admit(self, request: web.Request, kind: str, rid: str, t0: float, inbound: Any = None) -> Admitted:
        gw = self.gw
        principal = await self.aauthenticate(request)
        body = v.parse_body(await gw._read_body(request))
        if inbound is not None:  # another API's request (gateway/messages), as a chat request
            body = inbound.to_chat(body)
        alias = v.require_str(body, "model")
        tc = counter_for(gw.groups.get(alias) or gw.routes.get(alias))  # the model's tokenizer
        if kind == "embeddings":  # no output tokens, no stream: priced and reserved on input only
            stream, max_tokens = False, 0
            input_tokens = emb.input_tokens(emb.embedding_inputs(body), tc)
        else:
            stream = v.opt_bool(body, "stream")
            max_tokens = v.max_tokens(body)
        if kind == "chat":
            input_tokens = tc.count_chat(v.chat_messages(body))
            tools = v.opt_array(body, "tools") or v.opt_array(body, "functions")
            if tools:  # tool schemas are prompt tokens too (budgets must not under-reserve)
                input_tokens += tc.count_text(orjson.dumps(tools).decode())
            extra = getattr(inbound, "uncounted_text", "")  # e.g. thinking blocks a native relay sends
            if extra:
                input_tokens += tc.count_text(extra)
        elif kind == "completions":
            prompt = v.completion_prompt(body)
            input_tokens = prompt if isinstance(prompt, int) else tc.count_text(prompt)
        so = body.get("stream_options")
        if so is not None and not isinstance(so, dict):
            raise ApiError(400, "'stream_options' must be an object", param="stream_options", code="invalid_type")
        n_choices = v.n_choices(body) if kind != "embeddings" else 1
        user, _ = v.user_and_tags(body)  # recorded on the event; bad ones are a 400 before any work
        if user is not None:  # end-user caps of the tenant apply to this request (metering)
            principal = replace(principal, user=user)

        # ---- model group: a plain group, or a routed alias (quality router / cascade)
        group = gw.groups.get(alias)
        route = gw.routes.get(alias) if group is None else None
        if group is None and route is None:
            raise ApiError(404, f"unknown model '{alias}'; available: {', '.join(sorted([*gw.groups, *gw.routes]))}",
                           param="model", code="model_not_found")
        mode = group.mode if group is not None else "chat"  # routed aliases pick among chat groups
        if mode != ("embedding" if kind == "embeddings" else "chat"):
            raise _wrong_mode(alias, kind, mode)
        if kind == "embeddings":
            emb.check_options(body, emb.native_dimensions(group))
        headers: dict[str, str] = {"x-tokenomy-request-id": rid}
        route_extra = priced = None
        prompt = ""
        if route is not None:
            prompt = routed_prompt(body, kind)
            priced = route.priced(input_tokens, max_tokens)
            if route.policy == "router":
                qd, group = route.decide(prompt, priced)
                headers.update({**qd.headers(), "x-tokenomy-route-model": group.alias,
                                "x-tokenomy-route-alias": alias})
                if route.kind == "max_usd_per_request":
                    headers["x-tokenomy-route-max-usd"] = f"{route.cfg.max_usd_per_request:g}"
                route_extra = {**qd.to_json(), **route.route_extra(priced, group), "model": group.alias}
            else:
                group = route.candidates[0]  # cascade: the weakest answers first
                if route.samples is not None and n_choices > 1:  # its k samples are the `n` of the weak call
                    raise ApiError(400, f"'{alias}' is a cascade scored by the agreement of {route.samples} samples "
                                        "and serves one choice: 'n' must be 1", param="n", code="unsupported_value")
        assert group is not None

        # ---- plan caps (the plan's downgrade wins over routing)
        plan_state = None
        if gw.plans is not None:
            before = group
            plan_state, group, plan_headers = self._apply_plan(principal, group)
            if route is not None and group is not before:
                route, route_extra = None, None
                headers = {"x-tokenomy-request-id": rid}
            headers.update(plan_headers)
        try:
            # ---- rank, rate limit, reserve for the deployment chosen
            decision = group.rank(input_tokens, max_tokens, body)
            if decision.affinity is not None:  # policy prefix-affinity (gateway/routing.py)
                headers[AFFINITY_HEADER] = (f"routed; {decision.affinity_tokens} prompt tokens believed cached"
                                            if decision.affinity else "no")
            cascade = route if route is not None and route.policy == "cascade" else None
            m = gw.metering
            try:
                tokens = input_tokens + int(decision.predicted_output_tokens)
                if hasattr(m, "acheck_rate"):
                    await m.acheck_rate(principal, tokens)
                else:
                    m.check_rate(principal, tokens)
            except MeteringError as exc:
                err_headers = {}
                if exc.retry_after_s is not None:
                    err_headers["Retry-After"] = str(max(1, int(-(-exc.retry_after_s // 1))))
                raise ApiError(exc.status, exc.message, code=exc.code, headers=err_headers) from None
            try:
                reservation, out_limit, capped = await self._reserve(principal, plan_state, decision.order, cascade,
                                                                     input_tokens, max_tokens, n_choices)
            except budget.BudgetRefused as exc:
                raise budget.refusal_error(exc.refusal) from None
            if capped:  # the client set no max_tokens: the upstream gets what the budget affords
                body["max_tokens"] = out_limit
                headers["x-tokenomy-max-tokens-capped"] = str(out_limit)
            warnings = [*(inbound.warnings if inbound is not None else ()), *m.warnings(principal)]
            if warnings:
                headers["x-tokenomy-warning"] = header_safe("; ".join(warnings))
            if decision.slo_met is False:
                headers["x-tokenomy-slo"] = "unmet: no deployment currently meets the group SLO; least-bad chosen"
        except BaseException:
            if plan_state is not None:  # not admitted: free the plan's in-flight slot
                gw.plans.finish(principal.tenant, plan_state)
            raise
        gw.retry_budget.deposit()
        ctx = RequestCtx(rid, t0, principal, kind, body, stream, input_tokens, group, headers,
                         client_usage=bool(so and so.get("include_usage")), max_tokens=max_tokens,
                         out_limit_tokens=out_limit, n_choices=n_choices, reservation=reservation,
                         reserved_usd=reservation.amount_usd,
                         allowance=Allowance(reservation.amount_usd) if reservation.scopes else None,
                         plan=plan_state, route=route_extra, prompt=prompt, inbound=inbound,
                         counterfactual=decision.counterfactual)
        return Admitted(ctx, decision.order, cascade, priced, routed=route is not None)

    async def _reserve(self, principal, plan_state, order: list[DeploymentRuntime], cascade, input_tokens: int,
                       max_tokens: int | None, n: int) -> tuple[Reservation, int, bool]:
        """(reservation, max output tokens per choice, whether the gateway capped max_tokens).

        Priced at the deployment chosen (order[0]); a dearer fallback tops it up (dispatch).
        Without max_tokens and with a hard budget, the output is capped to what the budget
        affords on that deployment (at most its output limit) and that is reserved; without a
        hard budget nothing is capped (the reservation then holds nothing back)."""
        gw = self.gw
        m, plans, wait_s = gw.metering, gw.plans, gw.budget_wait_s
        chosen = order[0]
        limit = chosen.cfg.max_output_tokens or gw.default_max_tokens
        if cascade is not None:  # the weak call, then maybe the strong one (and a judge call): group-wide
            out = max_tokens or gw.default_max_tokens
            k = cascade.samples or 1  # agreement: the weak call generates k samples (n = 1 then)
            worst = budget.worst_case_usd(cascade.candidates[0].deployments, input_tokens, out * n * k)
            worst += budget.worst_case_usd(cascade.candidates[-1].deployments, input_tokens, out * n)
            plan_in, plan_out = input_tokens * 2, out * n * (k + 1)  # a plan's usage price counts every call
            if cascade.judge is not None:
                worst += budget.worst_case_usd(cascade.judge[0].deployments, input_tokens * 2 + 400,
                                               cascade.judge[1].max_tokens)
                plan_in, plan_out = plan_in + input_tokens * 2 + 400, plan_out + cascade.judge[1].max_tokens
            if plan_state is not None:
                worst = plans.worst_case_usd(plan_state, plan_in, plan_out, worst)
            return await budget.reserve(m, principal, worst, wait_s=wait_s), out, False
        if max_tokens is not None:
            worst = budget.priced_worst_usd(plans, plan_state, [chosen], input_tokens, max_tokens * n)
            return await budget.reserve(m, principal, worst, wait_s=wait_s), max_tokens, False
        headroom = await budget.headroom_usd(m, principal)
        if headroom is None:  # no hard budget: the upstream's own default applies, bounded for billing
            worst = budget.priced_worst_usd(plans, plan_state, [chosen], input_tokens, gw.default_max_tokens * n)
            out = chosen.cfg.max_output_tokens or UNSTATED_MAX_OUTPUT_TOKENS
            return await budget.reserve(m, principal, worst, wait_s=wait_s), out, False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (budget.DEFAULT_WAIT_S if wait_s is None else wait_s)
        seen = gw.longest_output.get(chosen.name)
        while True:
            cap = budget.affordable_output_tokens(plans, plan_state, chosen, input_tokens, n, headroom, limit)
            if cap < limit and seen:
                # A tight budget: reserving all it affords would let one request hold it all and make
                # concurrent ones wait. Cap at the longest output this deployment has produced: an
                # answer is cut short only if it is longer than any seen (and the header says so).
                cap = min(cap, seen)
            left_s = max(0.0, deadline - loop.time())
            if cap >= 1:
                worst = budget.priced_worst_usd(plans, plan_state, [chosen], input_tokens, cap * n)
                try:
                    return await budget.reserve(m, principal, worst, wait_s=0.0), cap, True
                except budget.BudgetRefused:
                    if left_s <= 0:
                        raise
                    await asyncio.sleep(budget.POLL_S)  # another request took it first: look again
            else:  # not one token fits now: wait (bounded) for in-flight reservations to settle
                one = budget.priced_worst_usd(plans, plan_state, [chosen], input_tokens, n)
                m.release(await budget.reserve(m, principal, one, wait_s=left_s))  # raises when exhausted
            headroom = await budget.headroom_usd(m, principal)
            if headroom is None:  # the budget was lifted meanwhile
                headroom = Decimal(10**12)

    def _apply_plan(self, principal, group: GroupRuntime) -> tuple[PlanState, GroupRuntime, dict[str, str]]:
        """The tenant's plan caps, before anything is reserved or sent: block raises a 429 naming the
        cap with Retry-After and x-tokenomy-cap-reset; downgrade swaps in the plan's cheaper group."""
        from tokenomy.billing.periods import iso

        gw = self.gw
        now = time.time()
        state = gw.plans.check(principal.tenant, now)
        d = state.decision
        headers: dict[str, str] = {}
        if d.action == "block":
            retry = d.retry_after_seconds(now) or 0.0
            headers = {"Retry-After": str(max(1, math.ceil(retry)))}
            if d.reset_at is not None:
                headers["x-tokenomy-cap-reset"] = iso(d.reset_at)
            raise ApiError(429, d.message, code="plan_cap_reached", headers=headers)
        if d.action == "downgrade":
            target = gw.groups.get(d.downgrade_group or "")
            if target is not None and target is not group and target.mode == group.mode:
                headers["x-tokenomy-downgraded"] = header_safe(f"{group.alias}->{target.alias}")
                group = target
        elif d.action == "overage":
            headers["x-tokenomy-overage"] = "true"
        return state, group, headers


def _wrong_mode(alias: str, kind: str, mode: str) -> ApiError:
    if mode == "embedding":
        what = f"'{alias}' is an embedding model: send it to POST /v1/embeddings"
    else:
        what = f"'{alias}' is not an embedding model: POST /v1/embeddings needs a group of embedding deployments"
    return ApiError(400, what, param="model", code="model_not_supported")


def routed_prompt(body: dict, kind: str) -> str:
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
