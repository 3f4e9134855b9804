"""OpenTelemetry traces of the request lifecycle, exported over OTLP (optional extra `otel`).

One trace per request, following the OpenTelemetry GenAI semantic conventions (gen_ai.*,
semconv 1.37) plus tokenomy.* attributes:

    POST /v1/chat/completions     SERVER    the request: gen_ai.request.*, usage, cost, status
      tokenomy.route              INTERNAL  admission: model group, policy, chosen deployment
      chat <upstream model>       CLIENT    one per upstream attempt (fallbacks, retries), its
                                            status or failure kind; the answered one carries
                                            gen_ai.response.* and usage, and lasts to the end of
                                            its stream
      tokenomy.ledger.commit      INTERNAL  the usage event's durable commit

The client's W3C `traceparent` is continued (the sampler is parent-based by default) and each
attempt sends its own span's traceparent upstream.

Instrumented in ONE place: `Tracing.instrument(gw)` wraps the stage methods of one Gateway
(handle, admit, the attempt sends, fail, the settle steps) when the config has `tracing:`; with
tracing off nothing is wrapped (zero cost) and this module is never imported. Both fronts are
covered: the lean front and aiohttp both call `Gateway.handle`. A request the sampler drops
makes no child spans; it only passes its trace context upstream when the client sent one.
Spans are exported by a BatchSpanProcessor thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tokenomy.config import TracingConfig
from tokenomy.errors import ConfigError

_PROPAGATOR = TraceContextTextMapPropagator()
_OPERATION = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
# gen_ai.provider.name well-known values (semconv GenAI registry); emulated upstreams speak OpenAI
_PROVIDER = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "bedrock": "aws.bedrock",
             "azure": "azure.ai.openai", "vertex": "gcp.vertex_ai"}


class _Trace:
    """The spans of one request (held in a context variable for the request's task)."""

    __slots__ = ("server", "context", "attempt", "attempts", "carrier")

    def __init__(self, server: Any, carrier: dict[str, str] | None = None):
        self.server = server  # None: not sampled (only the client's trace context is passed on)
        self.context = trace.set_span_in_context(server) if server is not None else None
        self.attempt: Any = None  # the open attempt span
        self.attempts = 0
        self.carrier = carrier

    def end_attempt(self, error: str | None = None, message: str = "") -> None:
        span, self.attempt = self.attempt, None
        if span is None:
            return
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, message[:200]))
        span.end()


_CURRENT: contextvars.ContextVar[_Trace | None] = contextvars.ContextVar("tokenomy_trace", default=None)


def exporter_class(cfg: TracingConfig):
    """The OTLP span exporter of the configured protocol (ConfigError when it is not installed)."""
    if cfg.protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            raise ConfigError("invalid config: tracing.protocol: grpc needs opentelemetry-exporter-otlp-proto-grpc "
                              "(pip install opentelemetry-exporter-otlp-proto-grpc), or use http/protobuf") from None
        return GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter


def _exporter(cfg: TracingConfig):
    from tokenomy.gateway.providers.base import resolved_headers

    headers = resolved_headers(cfg)
    endpoint = cfg.endpoint or ""
    cls = exporter_class(cfg)
    if cfg.protocol == "grpc":
        return cls(endpoint=endpoint, headers=tuple(headers.items()) or None, timeout=cfg.timeout_s)
    if not urlsplit(endpoint).path.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return cls(endpoint=endpoint, headers=headers or None, timeout=cfg.timeout_s)


_MASK64 = (1 << 64) - 1


def _parse(tp: str) -> tuple[int, int] | None:
    """(trace id, flags) of a W3C traceparent `00-<32 hex>-<16 hex>-<2 hex>`, None when invalid."""
    if len(tp) < 55 or tp[2] != "-" or tp[35] != "-" or tp[52] != "-":
        return None
    try:
        trace_id, span_id, flags = int(tp[3:35], 16), int(tp[36:52], 16), int(tp[53:55], 16)
    except ValueError:
        return None
    if tp[:2] == "ff" or not trace_id or not span_id or (tp[:2] == "00" and len(tp) != 55):
        return None
    return trace_id, flags


def sampled(traceparent: str | None, draw: int, bound: int, parent_based: bool) -> bool:
    """Whether a request is traced, decided before any span exists (so a dropped one costs ~nothing).
    A client's valid traceparent: its sampled flag when parent-based, else the ratio on its trace id
    (the OpenTelemetry TraceIdRatioBased rule: low 64 bits < ratio x 2^64, so every service agrees).
    No (valid) parent: the ratio on `draw`, a uniform random 64-bit number (a new trace id's part)."""
    parsed = _parse(traceparent) if traceparent else None
    if parsed is None:
        return draw < bound
    trace_id, flags = parsed
    if parent_based:
        return bool(flags & 1)
    return (trace_id & _MASK64) < bound


def _port(base_url: str) -> tuple[str, int | None]:
    u = urlsplit(base_url)
    return u.hostname or "", u.port or (443 if u.scheme == "https" else 80)


class Tracing:
    """A tracer provider of its own (no global state: several gateways in one process are fine)."""

    def __init__(self, cfg: TracingConfig, exporter: Any = None):
        self.cfg = cfg
        # Sampling is decided per request before a span starts (`sampled`); what starts is recorded.
        self.provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}),
                                       sampler=ALWAYS_ON)
        self.bound = round(cfg.sample_ratio * (1 << 64))
        rng = random.Random()  # seeded from os.urandom
        self.draw = lambda: rng.getrandbits(64)
        self.provider.add_span_processor(BatchSpanProcessor(
            exporter if exporter is not None else _exporter(cfg), max_queue_size=cfg.max_queue_size,
            schedule_delay_millis=cfg.schedule_delay_ms))
        self.tracer = self.provider.get_tracer("tokenomy.gateway")

    async def shutdown(self) -> None:
        """Export what is queued (the exporter blocks: off the loop, which may serve the collector)."""
        await asyncio.to_thread(self.provider.shutdown)

    # ------------------------------------------------------------------ the stage boundaries
    def instrument(self, gw: Any) -> None:
        tracer = self.tracer
        handle, admit = gw.handle, gw.admission.admit
        d = gw.dispatcher
        send, open_one, fail = d.send, d._open_one, d.fail
        s = gw.settler
        unary_event, stream, commit, commit_aux = s.unary_event, s.stream, s.commit, s.commit_aux

        bound, parent_based, draw = self.bound, self.cfg.parent_based, self.draw

        async def traced_handle(request, kind: str, *more, **kw):
            h = request.headers
            tp = h.get("traceparent")
            if not sampled(tp, draw(), bound, parent_based):
                if tp is None or _parse(tp) is None:
                    return await handle(request, kind, *more, **kw)  # the common case at low ratios: nothing at all
                # not recorded here: the client's trace context is passed on upstream as it came
                ts = h.get("tracestate")
                state = _Trace(None, {"traceparent": tp, **({"tracestate": ts} if ts else {})})
                span = None
            else:
                parent = (_PROPAGATOR.extract({"traceparent": tp, "tracestate": h.get("tracestate") or ""})
                          if tp else None)
                path = request.path
                span = tracer.start_span(f"POST {path}", context=parent, kind=SpanKind.SERVER, attributes={
                    "http.request.method": "POST", "url.path": path, "http.route": path,
                    "gen_ai.operation.name": _OPERATION.get(kind, kind)})
                state = _Trace(span)
            token = _CURRENT.set(state)
            try:
                resp = await handle(request, kind, *more, **kw)
            except BaseException as exc:
                if state.server is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    span.end()
                raise
            finally:
                _CURRENT.reset(token)
                state.end_attempt()
            if state.server is not None:
                status = resp.status
                span.set_attribute("http.response.status_code", status)
                rid = resp.headers.get("x-tokenomy-request-id")
                if rid:
                    span.set_attribute("tokenomy.request_id", rid)
                if status >= 400:
                    span.set_attribute("error.type", str(status))
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
            return resp

        async def traced_admit(request, kind, rid, t0, *more, **kw):
            state = _CURRENT.get()
            if state is None or state.server is None:
                return await admit(request, kind, rid, t0, *more, **kw)
            with tracer.start_as_current_span("tokenomy.route", context=state.context, kind=SpanKind.INTERNAL,
                                              record_exception=False) as span:
                try:
                    a = await admit(request, kind, rid, t0, *more, **kw)
                except Exception as exc:
                    code = getattr(exc, "code", None) or type(exc).__name__
                    span.set_attribute("error.type", str(code))
                    span.set_status(Status(StatusCode.ERROR, str(getattr(exc, "message", ""))[:200]))
                    raise
                _route_attributes(span, state.server, a)
            return a

        def _start_attempt(state: _Trace, ctx, dep) -> None:
            state.end_attempt()  # a cascade's previous call, if still open
            state.attempts += 1
            op = _OPERATION.get(ctx.kind, ctx.kind)
            host, port = _port(dep.base_url)
            span = tracer.start_span(f"{op} {dep.model}", context=state.context, kind=SpanKind.CLIENT, attributes={
                "gen_ai.operation.name": op, "gen_ai.provider.name": _PROVIDER.get(dep.cfg.provider, dep.cfg.provider),
                "gen_ai.system": _PROVIDER.get(dep.cfg.provider, dep.cfg.provider),
                "gen_ai.request.model": dep.model, "server.address": host, "server.port": port,
                "tokenomy.deployment": dep.name, "tokenomy.attempt": state.attempts,
                "gen_ai.request.stream": bool(ctx.stream)})
            state.attempt = span
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
            ctx.trace_headers = carrier

        async def traced_send(ctx, dep):
            state = _CURRENT.get()
            if state is None:
                return await send(ctx, dep)
            if state.server is None:
                ctx.trace_headers = state.carrier
                return await send(ctx, dep)
            _start_attempt(state, ctx, dep)
            try:
                resp = await send(ctx, dep)
            except Exception as exc:
                state.end_attempt(type(exc).__name__, str(exc))
                raise
            if state.attempt is not None:
                state.attempt.set_attribute("http.response.status_code", resp.status)
            return resp

        async def traced_open_one(ctx, dep):
            state = _CURRENT.get()
            if state is None:
                return await open_one(ctx, dep)
            if state.server is None:
                ctx.trace_headers = state.carrier
                return await open_one(ctx, dep)
            _start_attempt(state, ctx, dep)
            try:
                got = await open_one(ctx, dep)
            except BaseException as exc:
                state.end_attempt(type(exc).__name__, str(exc))
                raise
            if isinstance(got, tuple) and state.attempt is not None:
                state.attempt.set_attribute("http.response.status_code", got[0].status)
            return got

        def traced_fail(ctx, dep, f, plan=None):
            state = _CURRENT.get()
            if state is not None and state.attempt is not None:
                state.end_attempt(f.kind, f.message)
            return fail(ctx, dep, f, plan)

        def traced_unary_event(ctx, r):
            ev = unary_event(ctx, r)
            state = _CURRENT.get()
            if state is not None and state.attempt is not None and r.obj is not None:
                reasons = [c.get("finish_reason") for c in r.obj.get("choices") or () if isinstance(c, dict)]
                _response_attributes(state.attempt, r.obj, [str(x)[:64] for x in reasons if x is not None])
            return ev

        async def traced_stream(ctx, out, st, rl):
            state = _CURRENT.get()
            if state is not None and state.attempt is not None:
                _response_attributes(state.attempt, rl.last_obj or {}, [rl.finish_reason] if rl.finish_reason else [])
                if rl.t_first is not None:
                    state.attempt.set_attribute("gen_ai.response.time_to_first_chunk", rl.t_first - st.t_start)
            return await stream(ctx, out, st, rl)

        def traced_commit_of(inner):
            async def traced_commit(ctx, ev, *args):
                state = _CURRENT.get()
                if state is None or state.server is None:
                    return await inner(ctx, ev, *args)
                with tracer.start_as_current_span("tokenomy.ledger.commit", context=state.context,
                                                  kind=SpanKind.INTERNAL, attributes={"tokenomy.event_id": ev.id}):
                    out = await inner(ctx, ev, *args)
                _usage_attributes(state.attempt, ev)
                if inner is commit:
                    _usage_attributes(state.server, ev)
                state.end_attempt(None if ev.status in ("ok", "cancelled") else ev.status)
                return out

            return traced_commit

        gw.handle, gw.admission.admit = traced_handle, traced_admit
        d.send, d._open_one, d.fail = traced_send, traced_open_one, traced_fail
        s.unary_event, s.stream = traced_unary_event, traced_stream
        s.commit, s.commit_aux = traced_commit_of(commit), traced_commit_of(commit_aux)


def _route_attributes(span: Any, server: Any, a: Any) -> None:
    """The admission's decision, on the route span and the request's server span."""
    ctx = a.ctx
    body = ctx.body
    req = {"gen_ai.request.model": str(body.get("model"))[:200], "tokenomy.tenant": ctx.principal.tenant,
           "tokenomy.model_group": ctx.group.alias, "gen_ai.request.stream": bool(ctx.stream)}
    if ctx.max_tokens is not None:
        req["gen_ai.request.max_tokens"] = ctx.max_tokens
    for field in ("temperature", "top_p"):
        x = body.get(field)
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            req[f"gen_ai.request.{field}"] = float(x)
    if ctx.n_choices != 1:
        req["gen_ai.request.choice.count"] = ctx.n_choices
    user = body.get("user")
    if isinstance(user, str):
        req["tokenomy.user"] = user[:200]
    server.set_attributes(req)
    decision = {"tokenomy.model_group": ctx.group.alias, "tokenomy.routing.policy": ctx.group.policy,
                "tokenomy.routing.deployment": a.order[0].name if a.order else "",
                "tokenomy.routing.candidates": [x.name for x in a.order],
                "tokenomy.reserved_usd": float(ctx.reserved_usd)}
    if ctx.route is not None:
        for k in ("alias", "policy", "kind", "served", "strong", "score", "threshold"):
            v = ctx.route.get(k)
            if isinstance(v, (str, bool, int, float)):
                decision[f"tokenomy.route.{k}"] = v
    if a.cascade is not None:
        decision["tokenomy.route.alias"], decision["tokenomy.route.policy"] = a.cascade.alias, "cascade"
    span.set_attributes(decision)
    server.set_attributes({k: v for k, v in decision.items() if k.startswith("tokenomy.rout")})


def _response_attributes(span: Any, obj: dict, reasons: list[str]) -> None:
    m, rid = obj.get("model"), obj.get("id")
    if isinstance(m, str):
        span.set_attribute("gen_ai.response.model", m[:200])
    if isinstance(rid, str):
        span.set_attribute("gen_ai.response.id", rid[:200])
    if reasons:
        span.set_attribute("gen_ai.response.finish_reasons", reasons)


def _usage_attributes(span: Any, ev: Any) -> None:
    """Billed figures of an event (bounded and priced by settle), on an attempt or server span."""
    if span is None:
        return
    attrs = {"gen_ai.usage.input_tokens": ev.input_tokens, "gen_ai.usage.output_tokens": ev.output_tokens,
             "tokenomy.cost_usd": float(ev.cost_usd), "tokenomy.price_usd": float(ev.price_usd),
             "tokenomy.energy_j": float(ev.energy_joules), "tokenomy.tenant": ev.tenant,
             "tokenomy.status": ev.status, "tokenomy.estimated": bool(ev.estimated)}
    if ev.deployment:
        attrs["tokenomy.deployment"] = ev.deployment
    if ev.cached_input_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = ev.cached_input_tokens
    if ev.reasoning_tokens:
        attrs["gen_ai.usage.reasoning.output_tokens"] = ev.reasoning_tokens
    if ev.ttft_ms is not None:
        attrs["tokenomy.ttft_ms"] = float(ev.ttft_ms)
    span.set_attributes(attrs)
