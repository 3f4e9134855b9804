"""The aiohttp application: OpenAI endpoints, health, metrics, admin API.

`build_app(config, metering)` returns an app that owns its lifecycle: on startup it starts
the in-process emulators of emulated deployments, the metering writer and ONE shared
upstream ClientSession; on cleanup (after in-flight requests drained) it closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from tokenomy.config import GatewayConfig, default_config
from tokenomy.errors import TokenomyError, UnknownNameError
from tokenomy.gateway.openapi import openapi_handler
from tokenomy.gateway.errors import ApiError, error_response
from tokenomy.gateway.proxy import Gateway

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
log = logging.getLogger("tokenomy.gateway")


def _json_default(o: Any):
    if isinstance(o, Decimal):
        return format(o, "f")
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _json(data: Any, status: int = 200) -> web.Response:
    try:
        body = orjson.dumps(data, default=_json_default)
    except orjson.JSONEncodeError:  # an int beyond 64 bits (absurd usage): exact, via the stdlib
        import json

        body = json.dumps(data, default=_json_default).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def _gw(request: web.Request) -> Gateway:
    return request.app[GATEWAY_KEY]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _gw(request).handle(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _gw(request).handle(request, "completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _gw(request).handle(request, "embeddings")


async def models(request: web.Request) -> web.Response:
    gw = _gw(request)
    try:
        gw.authenticate(request)
    except ApiError as err:
        return error_response(err)
    data = [{"id": alias, "object": "model", "created": 0, "owned_by": "tokenomy", "policy": g.policy,
             "deployments": [d.name for d in g.deployments]} for alias, g in gw.groups.items()]
    data += [{"id": alias, "object": "model", "created": 0, "owned_by": "tokenomy", "policy": r.policy,
              "candidates": [g.alias for g in r.candidates], "threshold": r.threshold, "threshold_kind": r.kind}
             for alias, r in gw.routes.items()]
    return _json({"object": "list", "data": data})


async def model_detail(request: web.Request) -> web.Response:
    """GET /v1/models/{id}: one entry of the model list (OpenAI's model object), or a 404."""
    gw = _gw(request)
    try:
        gw.authenticate(request)
    except ApiError as err:
        return error_response(err)
    mid = request.match_info["model_id"]
    g, r = gw.groups.get(mid), gw.routes.get(mid)
    if g is not None:
        return _json({"id": mid, "object": "model", "created": 0, "owned_by": "tokenomy", "policy": g.policy,
                      "deployments": [d.name for d in g.deployments]})
    if r is not None:
        return _json({"id": mid, "object": "model", "created": 0, "owned_by": "tokenomy", "policy": r.policy,
                      "candidates": [c.alias for c in r.candidates], "threshold": r.threshold,
                      "threshold_kind": r.kind})
    return error_response(ApiError(404, f"The model '{mid}' does not exist", param="model", code="model_not_found"))


async def feedback(request: web.Request) -> web.Response:
    """POST /v1/feedback {"request_id", "score" in [0, 1]}: an outcome label for a request of the
    caller's tenant (any other tenant's request is a 404, as if it did not exist)."""
    import asyncio

    from tokenomy.gateway.validate import parse_body

    gw = _gw(request)
    try:
        p = gw.authenticate(request)
        body = parse_body(await gw._read_body(request))  # JSON 413 past the size limit
        rid = body.get("request_id")
        if not isinstance(rid, str) or not rid or len(rid) > 200:
            raise ApiError(400, "'request_id' must be a non-empty string (the x-tokenomy-request-id of a response)",
                           param="request_id", code="invalid_value")
        score = body.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
            raise ApiError(400, "'score' must be a number in [0, 1]", param="score", code="invalid_value")
        store = gw.feedback
        if store is None:
            raise ApiError(503, "feedback store not open", code="unavailable")
        owner = await asyncio.to_thread(store.event_tenant, rid)
        if owner is False:  # ledger not in this SQLite file (in-memory / another backend)
            owner = next((e.tenant for e in gw.metering.events(None if p.is_admin else p.tenant, limit=1_000_000)
                          if e.id == rid), None)
        if owner is None or (not p.is_admin and owner != p.tenant):
            raise ApiError(404, f"no request '{rid}' of this tenant", param="request_id", code="request_not_found")
        await asyncio.to_thread(store.record_feedback, rid, owner, float(score))
        return _json({"request_id": rid, "tenant": owner, "score": float(score), "recorded": True})
    except ApiError as err:
        return error_response(err)


def _operator(request: web.Request) -> bool:
    """The caller may see operational details (per-tenant metrics, upstream URLs): the admin key,
    the scrape token of `metrics.token_env`, or anyone with `metrics.public`. Raises the 401/403."""
    import hmac
    import os

    gw = _gw(request)
    access = gw.config.metrics
    if access.public:
        return True
    token = os.environ.get(access.token_env, "") if access.token_env else ""
    auth = request.headers.get("Authorization") or ""
    if token:
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(cred.strip().encode(), token.encode()):
            return True
    p = gw.authenticate(request)
    if not p.is_admin:
        raise ApiError(403, "this endpoint needs the admin key or the metrics token", code="permission_denied")
    return True


async def health(request: web.Request) -> web.Response:
    """Public: {"status"} only. With the admin key (or the metrics token): every deployment's
    breaker, load and upstream URL."""
    from tokenomy.gateway.health import STATE_NAMES

    gw = _gw(request)
    ok = any(d.breaker.available() for d in gw.deployments.values())
    status = "ok" if ok else "degraded"
    if not request.headers.get("Authorization") and not gw.config.metrics.public:
        return _json({"status": status})
    try:
        _operator(request)
    except ApiError:
        return _json({"status": status})  # a wrong or tenant key: the public answer
    deps = {d.name: {"breaker": STATE_NAMES[d.breaker.state], "in_flight": d.in_flight,
                     "ttft_ms_ewma": d.ttft_ms.value, "tpot_ms_ewma": d.tpot_ms.value, "base_url": d.base_url,
                     "price": d.price.source}
            for d in gw.deployments.values()}
    return _json({"status": status, "in_flight": gw.in_flight, "deployments": deps})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics (per-tenant names and cost): the admin key or the metrics token."""
    from prometheus_client import CONTENT_TYPE_LATEST

    try:
        _operator(request)
    except ApiError as err:
        return error_response(err)
    body = _gw(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ------------------------------------------------------------------------- admin
def _admin(request: web.Request):
    p = _gw(request).authenticate(request)
    if not p.is_admin:
        raise ApiError(403, "this endpoint needs the admin key", code="permission_denied")
    return p


def _float_q(request: web.Request, name: str) -> float | None:
    """Unix seconds, an ISO date/datetime (UTC unless zoned) or an age like 24h / 7d."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    import time

    from tokenomy.metering.timeparse import parse_time
    from tokenomy.timebounds import in_range, out_of_range_message

    try:
        ts = float(raw)
    except ValueError:
        try:
            ts = parse_time(raw, now=time.time(), option=name)
        except TokenomyError as exc:
            raise ApiError(400, str(exc), param=name, code="invalid_value") from None
        except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00+14:00 is before datetime.min in UTC
            ts = float("nan")
    # nan/inf/1e400 or an age like 99999999d: not a datetime (it would be a 500 when rendered).
    if not in_range(ts):
        raise ApiError(400, out_of_range_message(name, raw), param=name, code="invalid_value")
    return ts


async def admin_usage(request: web.Request) -> web.Response:
    gw = _gw(request)
    try:
        p = gw.authenticate(request)
        tenant = request.query.get("tenant") or None
        if not p.is_admin:
            if tenant is not None and tenant != p.tenant:
                raise ApiError(403, f"a key of tenant '{p.tenant}' cannot read the usage of tenant '{tenant}'",
                               code="permission_denied")
            tenant = p.tenant
        since, until = _float_q(request, "since"), _float_q(request, "until")
        try:
            usage = gw.metering.usage(tenant, since=since, until=until)
        except UnknownNameError as exc:
            raise ApiError(404, str(exc), param="tenant", code="tenant_not_found") from None
        group_by = request.query.get("group_by")
        if group_by is not None:  # spend by the requests' end user or tags
            from tokenomy.ledgerdb import LedgerDB
            from tokenomy.metering.spend_by import DIMENSIONS, usage_by

            if group_by not in DIMENSIONS:
                raise ApiError(400, f"group_by must be one of {', '.join(DIMENSIONS)}", param="group_by",
                               code="invalid_value")
            from tokenomy.dashboard.spend import SpendQueryError, parse_query

            try:  # ?user=U / ?tag=key=value: only those requests (a user's spend by tag, a tag's by user)
                only = parse_query({"by": group_by, "user": request.query.get("user", ""),
                                    "tag": request.query.get("tag", "")})
            except SpendQueryError as exc:
                raise ApiError(400, str(exc), param=exc.param, code="invalid_value") from None
            db = LedgerDB.for_ledger(gw.metering.ledger)
            if db is not None:
                try:
                    usage[f"by_{group_by}"] = await asyncio.to_thread(usage_by, db, group_by, tenant, since, until,
                                                                      user=only.user, tag=only.tag)
                finally:
                    db.close()
        return _json({"tenant": tenant, **usage})
    except ApiError as err:
        return error_response(err)


async def admin_create_key(request: web.Request) -> web.Response:
    from tokenomy.metering import MeteringError

    gw = _gw(request)
    try:
        actor = _admin(request).key_id
        from tokenomy.gateway.validate import parse_body

        body = parse_body(await gw._read_body(request))  # JSON 413 past the size limit
        tenant = body.get("tenant")
        if not isinstance(tenant, str) or not tenant:
            raise ApiError(400, "missing required field 'tenant' (string)", param="tenant",
                           code="missing_required_parameter")
        check_name("tenant", tenant)
        if isinstance(body.get("name"), str):
            check_name("name", body["name"])
        kwargs = {}
        for field, typ in (("budget_usd", (int, float, str)), ("soft_budget_usd", (int, float, str)),
                           ("budget_period", str), ("rpm", int), ("tpm", int), ("name", str)):
            val = body.get(field)
            if val is None:
                continue
            if not isinstance(val, typ) or isinstance(val, bool):
                raise ApiError(400, f"'{field}' has the wrong type", param=field, code="invalid_type")
            kwargs[field] = val
        try:
            key_id, secret = gw.metering.create_key(tenant, actor=actor, **kwargs)  # creates the tenant if new
        except MeteringError as exc:
            raise ApiError(exc.status, exc.message, code=exc.code) from None
        except (TokenomyError, ValueError, TypeError) as exc:
            raise ApiError(400, str(exc), code="invalid_value") from None
        return _json({"key_id": key_id, "key": secret, "tenant": tenant}, status=201)
    except ApiError as err:
        return error_response(err)


async def admin_list_keys(request: web.Request) -> web.Response:
    gw = _gw(request)
    try:
        _admin(request)
        try:
            keys = gw.metering.list_keys(request.query.get("tenant") or None)
        except UnknownNameError as exc:
            raise ApiError(404, str(exc), param="tenant", code="tenant_not_found") from None
        # Never echo a secret hash either: it is not needed to manage keys.
        return _json({"object": "list", "data": [_public_key(k) for k in keys]})
    except ApiError as err:
        return error_response(err)


async def admin_reload(request: web.Request) -> web.Response:
    """POST /admin/reload: re-read deployments, groups and prices from the config file (gateway/reload.py).
    An invalid file is a 400 naming the reason; the running config then stays as it was."""
    from tokenomy.errors import ConfigError
    from tokenomy.gateway.reload import reload_config, summary

    gw = _gw(request)
    try:
        _admin(request)
        try:
            report = await reload_config(gw)
        except ConfigError as exc:
            log.warning("config reload refused (admin call): %s", exc)
            raise ApiError(400, f"config reload refused, the running config is kept: {exc}",
                           code="invalid_config") from None
        log.warning("%s (admin call)", summary(report))
        return _json(report)
    except ApiError as err:
        return error_response(err)


MAX_NAME_CHARS = 200
_CONTROL = __import__("re").compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_name(field: str, value: str) -> None:
    """A tenant or key name: 1-200 characters, no control characters (CR/LF/NUL would split log
    lines and CSV rows), not blank. Spreadsheet formulas are neutralised where CSV is written."""
    if not value.strip():
        raise ApiError(400, f"'{field}' must not be blank", param=field, code="invalid_value")
    if len(value) > MAX_NAME_CHARS:
        raise ApiError(400, f"'{field}' is longer than {MAX_NAME_CHARS} characters ({len(value)})", param=field,
                       code="invalid_value")
    if _CONTROL.search(value):
        raise ApiError(400, f"'{field}' must not contain control characters (CR, LF, NUL, ...)", param=field,
                       code="invalid_value")


def _public_key(k: Any) -> dict:
    if not isinstance(k, dict):
        import dataclasses

        k = dataclasses.asdict(k) if dataclasses.is_dataclass(k) else dict(k)
    return {key: val for key, val in k.items() if "hash" not in key and "secret" not in key}


async def not_found(request: web.Request) -> web.Response:
    return error_response(ApiError(404, f"no such endpoint: {request.method} {request.path}", code="not_found"))


# ------------------------------------------------------------------------- app
def build_app(config: GatewayConfig | None, metering: Any, *, config_path: str | None = None) -> web.Application:
    """The gateway as an aiohttp app. `metering`: a tokenomy.metering.Metering (opened, not started);
    `config_path`: the YAML file the config came from (what a reload re-reads)."""
    config = config or default_config()
    gw = Gateway(config, metering)
    gw.config_path = config_path
    if config.request_log.enabled:
        from tokenomy.observe.requestlog import RequestLog

        gw.settler.request_log = RequestLog(config.request_log)
    if config.tracing.enabled:  # wraps the lifecycle's stage methods; nothing at all when off
        from tokenomy.observe import open_tracing

        gw.tracing = open_tracing(config.tracing)
        gw.tracing.instrument(gw)
    app = web.Application(client_max_size=config.server.max_body_bytes, handler_args={"max_field_size": 16384})
    app[GATEWAY_KEY] = gw
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    from tokenomy.gateway.messages import messages as anthropic_messages

    app.router.add_post("/v1/messages", anthropic_messages)  # Anthropic Messages API (gateway/messages)
    from tokenomy.gateway.responses import responses

    app.router.add_post("/v1/responses", responses)  # OpenAI Responses API on chat deployments (gateway/responses)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model_id}", model_detail)
    app.router.add_post("/v1/feedback", feedback)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_handler)
    app.router.add_get("/admin/usage", admin_usage)
    app.router.add_post("/admin/keys", admin_create_key)
    app.router.add_get("/admin/keys", admin_list_keys)
    app.router.add_post("/admin/reload", admin_reload)
    # The dashboard (pages + data API under /dashboard) reads pre-aggregated rollups of the ledger.
    from tokenomy.dashboard import mount as mount_dashboard

    mount_dashboard(app, metering)
    from tokenomy.dashboard.manage import add_manage_routes

    add_manage_routes(app, "/admin", keys=False)  # tenants, budgets, rotate/revoke, user caps, audit
    app.router.add_route("*", "/{tail:.*}", not_found)  # last: everything else is a clear 404
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _start_capacity_recorder(gw: Gateway, stack: contextlib.AsyncExitStack) -> None:
    """Record, per interval, that each self-hosted deployment is provisioned (tokenomy.allocation)."""
    from tokenomy.allocation.recorder import CapacityRecorder
    from tokenomy.allocation.spec import spec_of
    from tokenomy.allocation.store import CapacityStore

    specs = [s for s in (spec_of(d) for d in gw.config.deployments) if s is not None]
    store = CapacityStore.for_ledger(getattr(gw.metering, "ledger", None))
    if not specs or store is None or not gw.config.costs.record:
        return
    recorder = CapacityRecorder(store, specs, interval_s=gw.config.costs.interval_s)
    task = asyncio.create_task(recorder.run(), name="capacity-recorder")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(recorder.tick)  # the running interval is provisioned too
        store.close()

    stack.push_async_callback(stop)


async def _start_alerts(gw: Gateway, stack: contextlib.AsyncExitStack) -> None:
    """Budget, cap and anomaly alerts to the configured webhooks (tokenomy.alerts)."""
    import os

    from tokenomy.alerts.service import AlertService
    from tokenomy.alerts.store import AlertStore

    cfg = gw.config.alerts
    store = AlertStore.for_ledger(getattr(gw.metering, "ledger", None)) if cfg.webhooks else None
    if store is None:
        return
    secrets = {h.url: os.environ[h.secret_env] for h in cfg.webhooks if h.secret_env and os.environ.get(h.secret_env)}
    service = AlertService(gw.metering, cfg, store, plan_gate=gw.plans, secrets=secrets)
    gw.alerts = service
    task = asyncio.create_task(service.run(), name="alerts")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()

    stack.push_async_callback(stop)


async def _lifecycle(app: web.Application):
    from tokenomy.gateway.fleet import start_emulators

    gw = app[GATEWAY_KEY]
    async with contextlib.AsyncExitStack() as stack:
        if gw.tracing is not None:
            stack.push_async_callback(gw.tracing.shutdown)  # last: spans of drained requests exported
        await start_emulators(gw.deployments.values(), stack)
        gw.resources = stack  # a config reload starts the emulators of new deployments here
        await gw.metering.start()
        stack.push_async_callback(gw.metering.close)
        await gw.start()
        stack.push_async_callback(gw.close)
        await _start_capacity_recorder(gw, stack)
        await _start_alerts(gw, stack)
        if gw.settler.request_log is not None:
            stack.callback(gw.settler.request_log.close)  # drains what is queued
        yield
