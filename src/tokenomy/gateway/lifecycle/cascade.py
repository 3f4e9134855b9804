"""Policy cascade of a routed alias, through the same dispatch and settle as every request.

Non-stream: weak call -> verifier -> return it, or call the strong model. Stream: the weak
answer is fetched whole (non-stream) and scored before anything is sent; kept answers are
then sent as one SSE content chunk, escalated requests stream the strong model. So the TTFT
of a streamed cascade request is the weak call's full latency + the verifier's time (+ the
strong model's TTFT when escalated): the price of judging the answer, not the prompt.

Logprobs (a verifier with `wants_logprobs`, e.g. cascade-logprobs): the weak call asks for the
answer's token logprobs (`logprobs: true, top_logprobs: 5` on chat, `logprobs: 5` on completions)
on the attempts that go to a deployment speaking OpenAI's wire (state.speaks_openai: the emulator,
vLLM, llama.cpp's server, azure; translated providers cannot send them), unless the client asked
itself. They are scored (routing.cascade.logprobs), recorded in extra.route.logprobs and the
x-tokenomy-cascade-logprobs header, and removed from the answer when the client did not ask. A
deployment that answers 400 about logprobs is retried once without them (text-only score) and
not asked again by this alias.

Agreement (verifier `agreement`, cascade.samples k): the weak call asks for k samples in one upstream
call (`n: k`; config refuses weak deployments that cannot send k choices), at temperature
SAMPLE_TEMPERATURE when the client sent none or 0 (identical greedy samples would always agree).
The score is the share of the k samples whose final answer is the majority's (samples missing,
not a dict or not text count as disagreeing); a kept answer is cut to ONE choice, the first
sample giving the majority answer, re-indexed to 0, billed with all k samples' usage. A client's
n > 1 is refused at admission. The tally is recorded in extra.route.agreement.

escalate_share: the cut is 1 - a live quantile of (1 - score) (RouteRuntime.observe_escalation),
fed with every scored weak answer after its own decision.

Metering: every upstream call is one usage event under the request id: the served answer
is `<req>` (settles the reservation; carries extra.route), the unserved weak (or failed
strong) call is `<req>:weak` (`<req>:strong`), an LLM judge call `<req>:judge`. They share
the request's Allowance, so together they never settle more than was reserved.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from tokenomy.gateway.errors import ApiError
from tokenomy.gateway.lifecycle.state import CallFailed, OpenAIExtra, RequestCtx, UnaryResult, fmt_usd, header_safe
from tokenomy.gateway.lifecycle.wire import response_text
from tokenomy.metering import UsageEvent
from tokenomy.tokencount import counter_for

if TYPE_CHECKING:
    from tokenomy.gateway.routing import DeploymentRuntime, GroupRuntime, RouteRuntime


TOP_LOGPROBS = 5  # alternatives asked per token (entropy); 5 is the legacy completions maximum


def client_asked_logprobs(body: dict) -> bool:
    lp = body.get("logprobs")
    return lp is not None and lp is not False


def logprobs_ask(kind: str) -> dict | None:
    if kind == "chat":
        return {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
    if kind == "completions":
        return {"logprobs": TOP_LOGPROBS}
    return None


def refuses_logprobs(r: UnaryResult) -> bool:
    """A 400 whose error names logprobs (an upstream without logprob support)."""
    return r.status == "client_error" and r.err is not None and r.err.status == 400 and b"logprob" in r.raw[:8192].lower()


def without_logprobs(r: UnaryResult) -> UnaryResult:
    """The answer with every choice's logprobs nulled (as OpenAI sends when not asked)."""
    obj = r.obj
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list) or not any(isinstance(c, dict) and c.get("logprobs") is not None for c in choices):
        return r
    new = {**obj, "choices": [{**c, "logprobs": None} if isinstance(c, dict) and "logprobs" in c else c
                              for c in choices]}
    return dataclasses.replace(r, obj=new, raw=orjson.dumps(new))


SAMPLE_TEMPERATURE = 0.7  # agreement samples when the client asked for greedy (0) or gave none


def ask_samples(body: dict, k: int) -> float | int:
    """The weak call's body asks for k samples; returns the temperature they are drawn at."""
    body["n"] = k
    t = body.get("temperature")
    if t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and t == 0):
        body["temperature"] = t = SAMPLE_TEMPERATURE
    return t


def sample_texts(obj: object, kind: str, k: int) -> list[str]:
    """The text of the first k choices of an untrusted answer, "" for each missing or unusable one."""
    choices = obj.get("choices") if isinstance(obj, dict) else None
    out: list[str] = []
    for c in choices[:k] if isinstance(choices, list) else ():
        text = None
        if isinstance(c, dict):
            holder = c.get("message") if kind == "chat" else c
            text = holder.get("content" if kind == "chat" else "text") if isinstance(holder, dict) else None
        out.append(text if isinstance(text, str) else "")
    return out + [""] * (k - len(out))


def one_choice(r: UnaryResult, index: int | None, kind: str) -> UnaryResult:
    """The answer cut to the sample at `index` (the first usable choice when None), re-indexed to 0;
    the gateway's own token count (no upstream usage) still covers every sample generated."""
    obj = r.obj
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list):
        return r
    if index is None or index >= len(choices) or not isinstance(choices[index], dict):
        index = next((i for i, c in enumerate(choices) if isinstance(c, dict)), None)
        if index is None:
            return r
    new = {**obj, "choices": [{**choices[index], "index": 0}]}
    return dataclasses.replace(r, obj=new, raw=orjson.dumps(new), own_text=response_text(obj, kind))


class SampleVote:
    """The agreement verifier over one request's k samples; keeps the tally for the event."""

    def __init__(self, verifier, k: int):
        self.verifier, self.k = verifier, k
        self.vote = None

    def score(self, prompt: str, samples: list[str]) -> float:
        self.vote = self.verifier.tally(samples)
        return self.vote.share


def _result_of(exc: BaseException | None) -> UnaryResult:
    if isinstance(exc, CallFailed):
        return exc.result
    return UnaryResult("failed", None, err=ApiError(502, f"{type(exc).__name__}: {exc}", code="upstream_error"))


class Cascade:
    def __init__(self, gw):
        self.gw = gw
        self.dispatcher, self.settler = gw.dispatcher, gw.settler

    async def aux(self, ctx: RequestCtx, sub: RequestCtx, r: UnaryResult, role: str) -> UsageEvent:
        """Settle an auxiliary call of the request as `<req>:<role>`."""
        sub.rid = f"{ctx.rid}:{role}"
        sub.part = {"route_part": role, "parent": ctx.rid}
        ev = self.settler.unary_event(sub, r)
        await self.settler.commit_aux(ctx, ev)
        return ev

    async def run(self, request: web.Request, ctx: RequestCtx, route: RouteRuntime, priced,
                  weak_order: list[DeploymentRuntime]) -> web.StreamResponse:
        from tokenomy.routing.cascade import run_cascade

        settler = self.settler
        weak_g, strong_g = route.candidates[0], route.candidates[-1]
        wctx = ctx.sub(ctx.rid, weak_g, stream=False)
        sctx = ctx.sub(ctx.rid, strong_g, stream=False)
        judge = None
        aux_usd = Decimal(0)
        weak_box: list[UnaryResult] = []

        verifier = route.verifier
        if route.judge is not None:
            judge = verifier = GatewayJudge(self, ctx, *route.judge)
        wants_lp = judge is None and bool(getattr(verifier, "wants_logprobs", False))
        ask = None
        if wants_lp and not client_asked_logprobs(ctx.body) and (fields := logprobs_ask(ctx.kind)) is not None:
            wctx.openai_extra = ask = OpenAIExtra(fields, route.logprobs_refused)
        refused: list[str] = []
        k = route.samples
        vote = temperature = None
        if k is not None and judge is None:
            verifier = vote = SampleVote(verifier, k)
            temperature = ask_samples(wctx.body, k)
            wctx.n_choices = k  # bounds the weak call's billed output at k x max_tokens

        async def call_weak() -> UnaryResult:
            r = await self.dispatcher.unary(wctx, weak_order)
            if ask is not None and r.d is not None and ask.applies(r.d) and refuses_logprobs(r):
                ask.skip.add(r.d.name)  # this alias does not ask it again (until a config reload)
                refused.append(r.d.name)
                r = await self.dispatcher.unary(wctx, weak_order)
            weak_box.append(r)
            if r.status != "ok":
                raise CallFailed(r)
            return r

        async def call_strong() -> UnaryResult | None:
            if ctx.stream:
                return None  # streamed below, once the decision is known
            r = await self.dispatcher.unary(sctx, strong_g.rank(ctx.input_tokens, ctx.max_tokens).order)
            if r.status != "ok":
                raise CallFailed(r)
            return r

        threshold = route.threshold
        try:
            res = await run_cascade(call_weak, call_strong, verifier, threshold, prompt=ctx.prompt,
                                    text_of=(lambda r: sample_texts(r.obj, ctx.kind, k)) if vote is not None
                                    else lambda r: response_text(r.obj, ctx.kind),
                                    logprobs_of=_weak_logprobs if wants_lp else None)
        except CallFailed as exc:  # both calls failed (non-stream): the strong failure is the answer
            await self.aux(ctx, wctx, weak_box[0] if weak_box else _result_of(None), "weak")
            ctx.group = strong_g
            ctx.route = {**route.route_extra(priced, strong_g), "escalated": True, "score": None,
                         "threshold": threshold, "verifier": route.verifier_name, "served_by": "none"}
            return await settler.unary(ctx, exc.result, {"x-tokenomy-cascade-escalated": "true"})
        if res.score is not None:
            route.observe_escalation(res.score)  # escalate_share: moves the cut of the next requests
        if judge is not None:
            aux_usd += judge.cost_usd
        weak_call = res.calls[0]
        weak_r = weak_call.response if weak_call.error is None else _result_of(weak_call.error)
        served_strong = res.served_by == "strong"
        served = strong_g if served_strong else weak_g
        ctx.route = {**route.route_extra(priced, served), "escalated": res.escalated, "served_by": res.served_by,
                     "score": res.score, "predicted_quality": res.score, "threshold": threshold,
                     "verifier": route.verifier_name, "verifier_ms": round(res.verifier_seconds * 1000.0, 3)}
        if route.share is not None:
            ctx.route["escalate_share"] = route.share.share
        if res.verifier_error:
            ctx.route["verifier_error"] = res.verifier_error[:200]
        if vote is not None and vote.vote is not None:
            t = vote.vote
            ctx.route["agreement"] = {"k": t.k, "share": t.share, "answers": t.distinct, "answered": t.answered,
                                      "temperature": temperature}
        headers = {**res.headers(), "x-tokenomy-route-alias": route.alias, "x-tokenomy-route-model": served.alias,
                   "x-tokenomy-cascade-verifier": header_safe(route.verifier_name)}
        if wants_lp:
            stats = res.logprobs
            ctx.route["logprobs"] = stats.to_json() if stats is not None else None
            if stats is not None:
                headers["x-tokenomy-cascade-logprobs"] = stats.header()
            if refused:
                ctx.route["logprobs_refused"] = refused[0]
        if ask is not None and weak_call.error is None:  # the client did not ask: it gets none
            weak_r = without_logprobs(weak_r)
        ctx.group = served
        if served_strong or (res.escalated and ctx.stream):
            aux_usd += (await self.aux(ctx, wctx, weak_r, "weak")).cost_usd
            ctx.headers.update(headers)
            if ctx.stream:  # escalated: stream the strong model (fallbacks before the first byte)
                ctx.route["served_by"] = "strong"
                ctx.route["strong"] = True
                return await self.gw.serve_stream(request, ctx, strong_g.rank(ctx.input_tokens, ctx.max_tokens).order)
            main = res.calls[-1].response
        else:  # the weak answer is served (kept, or the strong call failed)
            if res.strong_error is not None:
                failed = res.calls[-1].error
                aux_usd += (await self.aux(ctx, sctx, _result_of(failed), "strong")).cost_usd
                ctx.route["strong_error"] = res.strong_error[:200]
            main = weak_r
            if vote is not None and weak_call.error is None:  # one choice served; all k samples billed
                main = one_choice(weak_r, vote.vote.index if vote.vote is not None else None, ctx.kind)
                ctx.n_choices = k
            ctx.headers.update(headers)
            if ctx.stream:
                return await settler.sse_from_unary(request, ctx, main, aux_usd)
        resp = await settler.unary(ctx, main)
        if aux_usd and "x-tokenomy-cost-usd" in resp.headers:
            resp.headers["x-tokenomy-route-total-cost-usd"] = fmt_usd(Decimal(resp.headers["x-tokenomy-cost-usd"]) + aux_usd)
        return resp


def _weak_logprobs(r: UnaryResult):
    from tokenomy.routing.cascade.logprobs import logprob_stats, response_logprobs

    return logprob_stats(response_logprobs(r.obj))


class GatewayJudge:
    """LLM-as-judge through the gateway's own dispatch: the judge group's deployments, fallbacks
    and prices apply, and its tokens are metered to the same tenant as `<req>:judge`."""

    def __init__(self, cascade: Cascade, ctx: RequestCtx, group: GroupRuntime, jv):
        self.cascade, self.ctx, self.group, self.jv = cascade, ctx, group, jv
        self.cost_usd = Decimal(0)

    async def ascore(self, prompt: str, answer: str) -> float | None:
        from tokenomy.routing.cascade.judge import JudgeError, normalize, parse_score

        messages = self.jv.messages(prompt, answer)
        body = {"model": self.group.alias, "messages": messages, "max_tokens": self.jv.max_tokens, "temperature": 0}
        jctx = self.ctx.sub(self.ctx.rid, self.group, stream=False, body=body)
        jctx.kind = "chat"
        jctx.input_tokens = counter_for(self.group).count_chat(messages)
        jctx.max_tokens = jctx.out_limit_tokens = self.jv.max_tokens
        jctx.n_choices = 1
        r = await self.cascade.dispatcher.unary(jctx, self.group.rank(jctx.input_tokens, self.jv.max_tokens).order)
        ev = await self.cascade.aux(self.ctx, jctx, r, "judge")
        self.cost_usd += ev.cost_usd
        if r.status != "ok":
            raise JudgeError(f"judge {self.group.alias}: {r.err.message if r.err else r.status}")
        s = parse_score(response_text(r.obj, "chat"))
        return None if s is None else normalize(s)
