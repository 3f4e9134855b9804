"""Managing tenants, keys, budgets, limits and end-user caps over HTTP: the dashboard's Manage
page calls these under /dashboard/api/manage/, and the gateway serves the same handlers under
/admin/ (its older POST/GET /admin/keys stay as they were).

    GET    {base}                              everything the Manage page shows (tables; ?format=csv)
    POST   {base}/tenants                      {name, budget_usd?, budget_period?, soft_budget_usd?}
    PATCH  {base}/tenants/{tenant}             budget fields (null clears; absent keeps)
    PUT    {base}/tenants/{tenant}/users/{user}  {budget_usd?, budget_period?, rpm?, tpm?}  (user "*": default)
    DELETE {base}/tenants/{tenant}/users/{user}
    POST   {base}/keys                         {tenant, name?, budget fields, rpm?, tpm?} -> the secret, once
    PATCH  {base}/keys/{key_id}                budget fields, rpm, tpm, name
    POST   {base}/keys/{key_id}/rotate         -> the new secret, once
    POST   {base}/keys/{key_id}/revoke
    GET    {base}/audit?limit=&target=         the administrative audit trail, newest first

Admin key only (a tenant key gets 403). CSRF-safe by construction: the only credential is the
`Authorization: Bearer` header, which a browser never attaches on its own (no cookies, no
sessions); and a write must be `Content-Type: application/json` (a cross-site form can only send
form/text types, and a JSON one would need a CORS preflight this server never grants), so
form-encoded and text posts are refused with 415. Every change is recorded in the ledger's
append-only admin_audit table (Metering does it, in the same transaction as the change).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from aiohttp import web

from tokenomy.dashboard.api import DashError, error_response, render
from tokenomy.dashboard.store import LedgerUnavailable

MAX_BODY_BYTES = 64 * 1024
AUDIT_LIMIT = 100
_MONEY = (int, float, str)
_FIELDS: dict[str, tuple] = {  # JSON field -> accepted types (bool is never a number here)
    "name": (str,), "tenant": (str,), "budget_usd": _MONEY, "soft_budget_usd": _MONEY, "budget_period": (str,),
    "rpm": (int,), "tpm": (int,),
}


def _dash(request: web.Request):
    from tokenomy.dashboard.routes import DASH_KEY

    return request.app[DASH_KEY]


async def _json_body(request: web.Request) -> dict:
    if request.content_type != "application/json":
        raise DashError(415, "send the change as JSON with 'Content-Type: application/json' (form posts are "
                             "refused: this API is for bearer-token clients only)", code="unsupported_media_type")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise DashError(413, f"request body larger than {MAX_BODY_BYTES} bytes", code="request_too_large")
    if not raw.strip():
        return {}
    from tokenomy.gateway.errors import ApiError
    from tokenomy.gateway.validate import parse_body

    try:
        return parse_body(raw)
    except ApiError as exc:
        raise DashError(exc.status, exc.message, code=exc.code) from None


def _fields(body: dict, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The allowed fields present in body (null kept: it clears), type-checked; others refused."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise DashError(400, f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}",
                        param=unknown[0], code="unknown_parameter")
    out = {}
    for name in allowed:
        if name not in body:
            continue
        val = body[name]
        if val is not None and (isinstance(val, bool) or not isinstance(val, _FIELDS[name])):
            kinds = " or ".join("number" if t in (int, float) else "string" if t is str else t.__name__
                                for t in _FIELDS[name])
            raise DashError(400, f"'{name}' must be {'an integer' if _FIELDS[name] == (int,) else kinds} or null",
                            param=name, code="invalid_type")
        out[name] = val
    return out


def manage_handler(fn):
    """Admin only; JSON body for writes; metering errors as OpenAI-style JSON; ledger I/O off the loop."""

    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.Response:
        from tokenomy.metering import MeteringError

        dash = _dash(request)
        try:
            p = dash.principal(request)
            if not p.is_admin:
                raise DashError(403, "managing tenants, keys and budgets needs the admin key", code="permission_denied")
            body = await _json_body(request) if request.method in ("POST", "PATCH", "PUT") else {}
            status, data = await fn(request, dash.metering, p.key_id, body)
            if status == 204:
                return web.Response(status=204, headers={"Cache-Control": "no-store"})
            resp = render(request, data)
            resp.set_status(status)
            return resp
        except DashError as err:
            return error_response(err)
        except MeteringError as exc:
            return error_response(DashError(exc.status, exc.message, code=exc.code))
        except LedgerUnavailable as exc:
            return error_response(DashError(503, str(exc), code="ledger_unavailable"))

    return handler


def _run(fn, *args, **kwargs):
    return asyncio.to_thread(fn, *args, **kwargs)


@manage_handler
async def overview(request, m, actor, body):
    """The Manage page's tables: tenants (with their end-user caps), keys, the latest changes."""
    def read():
        tenants = m.list_tenants()
        caps = [c for t in tenants for c in m.user_caps(t["name"])]
        return {"meta": {"audit_limit": AUDIT_LIMIT},
                "totals": {"tenants": len(tenants), "keys": sum(1 for _ in m.list_keys()),
                           "user_caps": len(caps)},
                "tables": {"tenants": tenants, "keys": m.list_keys(), "user_caps": caps,
                           "audit": m.changes(AUDIT_LIMIT)}}

    return 200, await _run(read)


@manage_handler
async def create_tenant(request, m, actor, body):
    f = _fields(body, ("name", "budget_usd", "budget_period", "soft_budget_usd"))
    name = f.pop("name", None)
    if not name:
        raise DashError(400, "missing required field 'name' (string)", param="name", code="missing_required_parameter")
    f = {k: v for k, v in f.items() if v is not None}
    return 201, await _run(m.create_tenant, name, actor=actor, **f)


@manage_handler
async def update_tenant(request, m, actor, body):
    f = _fields(body, ("budget_usd", "budget_period", "soft_budget_usd"))
    return 200, await _run(m.update_tenant, request.match_info["tenant"], actor=actor, **f)


@manage_handler
async def put_user_cap(request, m, actor, body):
    f = {k: v for k, v in _fields(body, ("budget_usd", "budget_period", "rpm", "tpm")).items() if v is not None}
    return 200, await _run(m.set_user_cap, request.match_info["tenant"], request.match_info["user"], actor=actor, **f)


@manage_handler
async def delete_user_cap(request, m, actor, body):
    await _run(m.delete_user_cap, request.match_info["tenant"], request.match_info["user"], actor=actor)
    return 204, None


@manage_handler
async def list_user_caps(request, m, actor, body):
    caps = await _run(m.user_caps, request.match_info["tenant"])
    return 200, {"object": "list", "data": caps, "tables": {"user_caps": caps}}


@manage_handler
async def create_key(request, m, actor, body):
    f = _fields(body, ("tenant", "name", "budget_usd", "budget_period", "soft_budget_usd", "rpm", "tpm"))
    tenant = f.pop("tenant", None)
    if not tenant:
        raise DashError(400, "missing required field 'tenant' (string)", param="tenant",
                        code="missing_required_parameter")
    f = {k: v for k, v in f.items() if v is not None}

    def create():
        key_id, secret = m.create_key(tenant, actor=actor, **f)
        return {**next(k for k in m.list_keys(tenant) if k["key_id"] == key_id), "key": secret}

    return 201, await _run(create)


@manage_handler
async def update_key(request, m, actor, body):
    f = _fields(body, ("name", "budget_usd", "budget_period", "soft_budget_usd", "rpm", "tpm"))
    return 200, await _run(m.update_key, request.match_info["key_id"], actor=actor, **f)


@manage_handler
async def rotate_key(request, m, actor, body):
    _fields(body, ())
    key, secret = await _run(m.rotate_key, request.match_info["key_id"], actor=actor)
    return 200, {**key, "key": secret}


@manage_handler
async def revoke_key(request, m, actor, body):
    _fields(body, ())
    return 200, await _run(m.revoke_key, request.match_info["key_id"], actor=actor)


@manage_handler
async def audit(request, m, actor, body):
    raw = request.query.get("limit") or str(AUDIT_LIMIT)
    if not raw.isdigit() or not 0 < int(raw) <= 10_000:
        raise DashError(400, "limit must be an integer in [1, 10000]", param="limit", code="invalid_value")
    rows = await _run(m.changes, int(raw), request.query.get("target") or None)
    return 200, {"object": "list", "data": rows, "tables": {"audit": rows}}


def add_manage_routes(app: web.Application, base: str, *, keys: bool = True) -> None:
    """The management API under `base` (keys=False: leave POST/GET {base}/keys to an older handler)."""
    r = app.router
    if keys:
        r.add_post(f"{base}/keys", create_key)
    r.add_get(base, overview)
    r.add_post(f"{base}/tenants", create_tenant)
    r.add_patch(f"{base}/tenants/{{tenant}}", update_tenant)
    r.add_get(f"{base}/tenants/{{tenant}}/users", list_user_caps)
    r.add_put(f"{base}/tenants/{{tenant}}/users/{{user}}", put_user_cap)
    r.add_delete(f"{base}/tenants/{{tenant}}/users/{{user}}", delete_user_cap)
    r.add_patch(f"{base}/keys/{{key_id}}", update_key)
    r.add_post(f"{base}/keys/{{key_id}}/rotate", rotate_key)
    r.add_post(f"{base}/keys/{{key_id}}/revoke", revoke_key)
    r.add_get(f"{base}/audit", audit)


__all__ = ["add_manage_routes"]
