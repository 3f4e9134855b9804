"""Admit: everything decided before a byte goes upstream, in this order:
auth -> body -> validate -> model group / routed alias -> plan caps (block / downgrade /
overage; gateway/plans.py) -> rank deployments -> rate limit -> reserve the worst case.
A refusal raises ApiError (OpenAI-style JSON); an admitted request holds a reservation that
settle (or the pipeline's `finally`) releases.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from tokenomy.gateway import validate as v
from tokenomy.gateway.errors import ApiError
from tokenomy.gateway.lifecycle.state import Allowance, RequestCtx, header_safe
from tokenomy.metering import MeteringError
from tokenomy.tokencount import counter_for

if TYPE_CHECKING:
    from tokenomy.gateway.plans import PlanState
    from tokenomy.gateway.routing import DeploymentRuntime, GroupRuntime, RouteRuntime

# Reserve a little above our own input estimate: an upstream's tokenizer may count more.
INPUT_MARGIN = 1.1
INPUT_SLACK_TOKENS = 16


@dataclass(slots=True)
class Admitted:
    ctx: RequestCtx
    order: list[DeploymentRuntime]  # ranked deployments: first = chosen, rest = fallbacks
    cascade: RouteRuntime | None = None  # a cascade alias: weak answer first, maybe escalated
    priced: Any = None  # the route's priced candidates (cascade route extras)
    routed: bool = False  # served through a routed alias (its prompt may be stored for feedback)


def worst_case_usd(deployments, input_tokens: int, max_output_tokens: int) -> Decimal:
    """Worst case over `deployments`: no cache hits, all of max_output_tokens generated at the
    highest output/reasoning price."""
    inp = int(input_tokens * INPUT_MARGIN) + INPUT_SLACK_TOKENS
    best = 0.0
    for d in deployments:  # floats: the input margin dwarfs any rounding
        c = inp * d.p_in + max_output_tokens * (d.p_out if d.p_out >= d.p_reason else d.p_reason)
        if c > best:
            best = c
    return Decimal(repr(best))


class Admission:
    def __init__(self, gw):
        self.gw = gw

    def authenticate(self, request: web.Request):
        auth = request.headers.get("Authorization")
        if not auth:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "malformed Authorization header: expected 'Bearer <key>'",
                           code="invalid_api_key")
        try:
            return self.gw.metering.authenticate(secret.strip())
        except MeteringError as exc:
            raise ApiError(exc.status, exc.message, code=exc.code) from None

    async def admit(self, request: web.Request, kind: str, rid: str, t0: float) -> Admitted:
        gw = self.gw
        principal = self.authenticate(request)
        body = v.parse_body(await gw._read_body(request))
        alias = v.require_str(body, "model")
        stream = v.opt_bool(body, "stream")
        max_tokens = v.max_tokens(body)
        tc = counter_for(gw.groups.get(alias) or gw.routes.get(alias))  # the model's tokenizer
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
        n_choices = v.n_choices(body)
        v.user_and_tags(body)  # recorded on the event; bad ones are a 400 before any work

        # ---- model group: a plain group, or a routed alias (quality router / cascade)
        group = gw.groups.get(alias)
        route = gw.routes.get(alias) if group is None else None
        if group is None and route is None:
            raise ApiError(404, f"unknown model '{alias}'; available: {', '.join(sorted([*gw.groups, *gw.routes]))}",
                           param="model", code="model_not_found")
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
            # ---- rank, rate limit, reserve
            decision = group.rank(input_tokens, max_tokens)
            cascade = route if route is not None and route.policy == "cascade" else None
            out_limit = max_tokens or gw.default_max_tokens
            max_out = out_limit * n_choices
            worst = worst_case_usd(group.deployments, input_tokens, max_out)
            if cascade is not None:  # the weak call, then maybe the strong one (and a judge call)
                worst += worst_case_usd(cascade.candidates[-1].deployments, input_tokens, max_out)
                if cascade.judge is not None:
                    worst += worst_case_usd(cascade.judge[0].deployments, input_tokens * 2 + 400,
                                            cascade.judge[1].max_tokens)
            if plan_state is not None:
                worst = gw.plans.worst_case_usd(plan_state, input_tokens, max_out, worst)
            m = gw.metering
            try:
                m.check_rate(principal, input_tokens + int(decision.predicted_output_tokens))
                reservation = m.reserve(principal, worst)
            except MeteringError as exc:
                err_headers = {}
                if exc.retry_after_s is not None:
                    err_headers["Retry-After"] = str(max(1, int(-(-exc.retry_after_s // 1))))
                raise ApiError(exc.status, exc.message, code=exc.code, headers=err_headers) from None
            warnings = m.warnings(principal)
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
                         allowance=Allowance(reservation.amount_usd) if reservation.scopes else None,
                         plan=plan_state, route=route_extra, prompt=prompt)
        return Admitted(ctx, decision.order, cascade, priced, routed=route is not None)

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
            if target is not None and target is not group:
                headers["x-tokenomy-downgraded"] = header_safe(f"{group.alias}->{target.alias}")
                group = target
        elif d.action == "overage":
            headers["x-tokenomy-overage"] = "true"
        return state, group, headers


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
