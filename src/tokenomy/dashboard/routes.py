"""aiohttp handlers of the dashboard: the data API and the static pages."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from aiohttp import web

from tokenomy.dashboard import plans, queries
from tokenomy.dashboard.api import Dashboard, DashError, _gateway, error_response, render
from tokenomy.dashboard.store import LedgerUnavailable

STATIC_DIR = Path(__file__).parent / "static"
PAGES = {"overview": "Overview", "routing": "Routing", "deployments": "Deployments", "tenants": "Tenants",
         "spend": "Users & tags", "unit-cost": "Unit cost", "plans": "Plans", "manage": "Manage"}
ADMIN_PAGES = ("plans", "manage")  # a tenant's key gets a 403 there: its nav does not show them
DASH_KEY: web.AppKey[Dashboard] = web.AppKey("tokenomy_dashboard", Dashboard)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _dash(request: web.Request) -> Dashboard:
    return request.app[DASH_KEY]


def api_handler(fn):
    """Authenticate, resolve the tenant scope, render JSON/CSV, map errors to OpenAI-style JSON."""

    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.Response:
        dash = _dash(request)
        try:
            p = dash.principal(request)
            tenant = dash.scope(request, p)
            data = await fn(request, dash, p, tenant)
            return render(request, data if p.is_admin else queries.tenant_view(data))
        except DashError as err:
            return error_response(err)
        except LedgerUnavailable as exc:
            return error_response(DashError(503, str(exc), code="ledger_unavailable"))

    return handler


@api_handler
async def costs(request, dash: Dashboard, p, tenant):
    """The real cost of each self-hosted deployment over the window (tokenomy costs), per bucket
    too: the operator's figures (admin only)."""
    from tokenomy.allocation.report import costs_report
    from tokenomy.allocation.savings import committed_savings
    from tokenomy.allocation.store import CapacityStore

    if not p.is_admin:
        raise DashError(403, "serving costs are visible to the admin key only", code="permission_denied")
    r = await dash.rollups(fold=False)
    w = await dash.window(request, r)
    store = CapacityStore.for_ledger(getattr(dash.metering, "ledger", None))
    if store is None:
        return {"meta": w.meta(), "totals": {}, "tables": {"deployments": [], "series": []}}
    try:
        rep = await asyncio.to_thread(costs_report, store, w.since, w.until, series_step_s=w.step)
        saved = await asyncio.to_thread(committed_savings, store, w.since, w.until)
    finally:
        store.close()
    rows = [{"deployment": k, **{f: v for f, v in d.items() if f != "spec"}} for k, d in rep["deployments"].items()]
    return {"meta": w.meta() | {"rule": rep["rule"]}, "totals": rep["total"] | {"committed_first": saved},
            "tables": {"deployments": rows, "series": rep.get("series", [])}}


@api_handler
async def pricing_plans(request, dash: Dashboard, p, tenant):
    """The gateway's pricing plans as cards and each tenant's position against its caps (admin)."""
    import time

    if not p.is_admin:
        raise DashError(403, "pricing plans are visible to the admin key only", code="permission_denied")
    gw = _gateway(request.app)
    names = [t.name for t in await asyncio.to_thread(dash.metering.ledger.list_tenants)]
    if tenant is not None:
        names = [n for n in names if n == tenant]
    return await asyncio.to_thread(plans.pricing_plans, getattr(gw, "plans", None), dash.clock(), names)


@api_handler
async def whoami(request, dash: Dashboard, p, tenant):
    tenants = [t.name for t in await asyncio.to_thread(dash.metering.ledger.list_tenants)] if p.is_admin else [p.tenant]
    gw = _gateway(request.app)
    # every name a chart may colour, sorted: the same colour for the same name on every page
    names = sorted({*tenants, *(gw.deployments if gw else ()), *(d.model for d in (gw.deployments.values() if gw else ())
                                                                  if getattr(d, "model", None))})
    return {"key_id": p.key_id, "tenant": None if p.is_admin else p.tenant, "is_admin": p.is_admin,
            "tenants": tenants, "refresh_s": dash.config.refresh_s,
            "pages": PAGES if p.is_admin else {k: v for k, v in PAGES.items() if k not in ADMIN_PAGES},
            "ranges": ["1h", "6h", "24h", "7d", "30d", "90d", "all"], "names": names}


async def _from_rollups(r, fn, *args) -> dict:
    """Run a read model off the event loop; meta.rollups.behind tells a page it is catching up."""

    def go() -> dict:
        out = fn(*args)
        out["meta"]["rollups"] = Dashboard.rollup_meta(r)
        return out

    return await asyncio.to_thread(go)


@api_handler
async def overview(request, dash: Dashboard, p, tenant):
    r = await dash.rollups()
    w = await dash.window(request, r)
    ctx = dash.context(request)
    routed = await asyncio.to_thread(dash.routed_savings, w, tenant)
    return await _from_rollups(r, queries.overview, r, w, tenant, ctx, routed)


def _feedback(r, w: queries.Window, tenant: str | None) -> list[tuple[str, float | None, float]]:
    """Labelled requests, if the ledger has a feedback table (request id + score), joined to events."""
    return r.feedback(w.since, w.until, tenant)


@api_handler
async def routing(request, dash: Dashboard, p, tenant):
    r = await dash.rollups()
    w = await dash.window(request, r)

    def run():
        return queries.routing(r, w, tenant, _feedback(r, w, tenant))

    return await _from_rollups(r, run)


@api_handler
async def deployments(request, dash: Dashboard, p, tenant):
    r = await dash.rollups()
    w = await dash.window(request, r)
    out = await _from_rollups(r, queries.deployments, r, w, tenant, dash.context(request))
    gw = _gateway(request.app)
    modelled = {d.name for d in gw.config.deployments if d.pricing.self_hosted is not None} if gw else set()
    for row in out["tables"]["deployments"]:
        # energy is the perf model's for self-hosted hardware; for an API provider it is a guess
        row["energy_basis"] = "power model" if row["deployment"] in modelled else "estimate"
    return out


@api_handler
async def tenants(request, dash: Dashboard, p, tenant):
    r = await dash.rollups()
    w = await dash.window(request, r)
    ledger = dash.metering.ledger

    def run():
        return queries.tenants(r, w, tenant, ledger.list_tenants(), ledger.list_keys(None), dash.context(request))

    return await _from_rollups(r, run)


@api_handler
async def spend(request, dash: Dashboard, p, tenant):
    """Spend by the requests' end user or tag, filtered by a user, a tag or a text (issue 21); a
    tenant's key sees its own requests only (api_handler scopes `tenant`)."""
    from tokenomy.dashboard.spend import SpendQueryError, parse_query, spend_table
    from tokenomy.ledgerdb import LedgerDB
    from tokenomy.metering.spend_by import usage_by

    try:
        sq = parse_query(request.query)
    except SpendQueryError as exc:
        raise DashError(400, str(exc), param=exc.param, code="invalid_value") from None
    r = await dash.rollups()
    w = await dash.window(request, r)
    db = LedgerDB.for_ledger(getattr(dash.metering, "ledger", None))
    if db is None:
        raise DashError(503, "spend by user and tag needs the SQLite or PostgreSQL ledger", code="ledger_unavailable")

    def run() -> dict:
        try:
            groups = usage_by(db, sq.by, tenant, w.since, w.until, user=sq.user, tag=sq.tag)
        finally:
            db.close()
        out = spend_table(groups, sq)
        out["meta"] = w.meta() | out["meta"]
        return out

    return await asyncio.to_thread(run)


MAX_CONTEXT_TOKENS = 10_000_000  # far above any model's window (10M tokens)
MAX_SLO_TPOT_MS = 1_000_000.0  # 1000 s per output token: no useful SLO is looser


@functools.lru_cache(maxsize=64)
def _compare(model: str, slo_tpot_ms: float | None, context: int, sites: str | None, ownership: bool) -> dict:
    from tokenomy.catalog import load_catalog
    from tokenomy.economics.compare import api_reference_rows, compare_deployments

    cat = load_catalog()
    m = cat.model(model)
    site_list = [cat.site(s) for s in sites.split(",") if s] if sites else list(cat.sites.values())
    rows, skipped = compare_deployments(m, list(cat.accelerators.values()), site_list, slo_tpot_ms=slo_tpot_ms,
                                        context=context, ownership=ownership)
    api_rows = api_reference_rows(m)
    return {"rows": [x.to_dict() for x in rows], "api": [x.to_dict() for x in api_rows], "skipped": skipped}


@api_handler
async def unit_cost(request, dash: Dashboard, p, tenant):
    from tokenomy.catalog import load_catalog
    from tokenomy.errors import TokenomyError

    q = request.query
    cat = load_catalog()
    models = sorted(cat.models)
    model = q.get("model") or ("llama-3-8b" if "llama-3-8b" in cat.models else models[0])
    try:
        slo = float(q["slo_tpot_ms"]) if q.get("slo_tpot_ms") else None
        context = int(q.get("context") or 2048)
    except ValueError:
        raise DashError(400, "slo_tpot_ms must be a number and context an integer", code="invalid_value") from None
    if slo is not None and not 0 < slo <= MAX_SLO_TPOT_MS:  # nan fails this too
        raise DashError(400, f"slo_tpot_ms must be a number in (0, {MAX_SLO_TPOT_MS:g}]", param="slo_tpot_ms",
                        code="invalid_value")
    if not 0 < context <= MAX_CONTEXT_TOKENS:
        raise DashError(400, f"context must be an integer in [1, {MAX_CONTEXT_TOKENS}] tokens", param="context",
                        code="invalid_value")
    try:
        out = await asyncio.to_thread(_compare, model, slo, context, q.get("sites") or None,
                                      q.get("ownership") in ("1", "true", "yes"))
    except TokenomyError as exc:
        raise DashError(404 if "unknown" in str(exc).lower() else 400, str(exc), code="invalid_value") from None
    top = int(q["top"]) if (q.get("top") or "").isdigit() else 0
    rows = out["rows"][:top] if top > 0 else out["rows"]
    return {"meta": {"model": model, "slo_tpot_ms": slo, "context": context, "models": models,
                     "sites": sorted(cat.sites)},
            "totals": {"rows": len(out["rows"]), "cheapest": rows[0] if rows else None},
            "tables": {"rows": rows, "api": out["api"], "skipped": out["skipped"]}}


def _admin_only(p) -> None:
    if not p.is_admin:
        raise DashError(403, "plans and pricing simulations are visible to the admin key only", code="permission_denied")


@api_handler
async def plan_list(request, dash: Dashboard, p, tenant):
    _admin_only(p)
    d = dash.plans_dir()
    items = await asyncio.to_thread(plans.list_plans, d)
    return {"meta": {"dir": str(d) if d else None}, "totals": {"plans": len(items)}, "tables": {"plans": items}}


@api_handler
async def plan_one(request, dash: Dashboard, p, tenant):
    _admin_only(p)
    name = request.match_info["name"]
    try:
        return await asyncio.to_thread(plans.load_plan, dash.plans_dir(), name)
    except FileNotFoundError:
        raise DashError(404, f"no saved plan '{name}'", code="not_found") from None
    except ValueError as exc:
        raise DashError(400, str(exc), code="invalid_value") from None


# pages -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _template() -> str:
    return (STATIC_DIR / "page.html").read_text(encoding="utf-8")


def _page_response(html: str) -> web.Response:
    return web.Response(text=html, content_type="text/html",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


async def page(request: web.Request) -> web.Response:
    name = request.match_info.get("page") or "overview"
    if name not in PAGES:
        raise web.HTTPNotFound(text=f"no dashboard page '{name}'")
    nav = "".join(f'<a href="/dashboard/{k}" class="{"active" if k == name else ""}" data-nav="{k}">{v}</a>'
                  for k, v in PAGES.items())
    html = (_template().replace("{{PAGE}}", name).replace("{{TITLE}}", PAGES[name]).replace("{{NAV}}", nav)
            .replace("{{REFRESH}}", str(_dash(request).config.refresh_s)))
    return _page_response(html)


async def login(request: web.Request) -> web.Response:
    return _page_response((STATIC_DIR / "login.html").read_text(encoding="utf-8"))


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/dashboard/overview")


def add_routes(app: web.Application, dash: Dashboard) -> None:
    app[DASH_KEY] = dash
    r = app.router
    r.add_get("/dashboard", root)
    r.add_get("/dashboard/", root)
    r.add_get("/dashboard/login", login)
    r.add_get("/dashboard/api/whoami", whoami)
    r.add_get("/dashboard/api/overview", overview)
    r.add_get("/dashboard/api/routing", routing)
    r.add_get("/dashboard/api/deployments", deployments)
    r.add_get("/dashboard/api/tenants", tenants)
    r.add_get("/dashboard/api/spend", spend)
    r.add_get("/dashboard/api/unit-cost", unit_cost)
    r.add_get("/dashboard/api/plans", plan_list)
    r.add_get("/dashboard/api/pricing-plans", pricing_plans)
    r.add_get("/dashboard/api/costs", costs)
    r.add_get("/dashboard/api/plans/{name}", plan_one)
    from tokenomy.dashboard.manage import add_manage_routes

    add_manage_routes(app, "/dashboard/api/manage")
    r.add_static("/dashboard/static/", STATIC_DIR, show_index=False, append_version=False)
    r.add_get("/dashboard/{page}", page)

    async def lifecycle(app: web.Application):
        # Catch up with a large existing ledger in the background, so the first page is fast.
        task = asyncio.create_task(_warm(dash))
        yield
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        await dash.close()

    app.cleanup_ctx.append(lifecycle)


async def _warm(dash: Dashboard) -> None:
    try:
        await dash.rollups(fold=False)
        r = dash._rollups
        if r is not None:
            await asyncio.to_thread(r.fold)
    except (DashError, LedgerUnavailable):
        pass  # in-memory metering, or the database is down: the API says so per request


__all__ = ["DASH_KEY", "PAGES", "add_routes"]
