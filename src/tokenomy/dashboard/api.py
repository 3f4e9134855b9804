"""The dashboard's data API under /dashboard/api/: JSON by default, CSV with ?format=csv.

Every route needs `Authorization: Bearer <admin key | tenant key>`. The admin sees every
tenant (and may filter with ?tenant=); a tenant key sees only its own tenant: asking for
another one is a 403. Time window: ?range=1h|6h|24h|7d|30d|90d|all (default 24h) or
?since=&until= (unix seconds or ISO 8601); ?res=minute|hour|day overrides the resolution.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from tokenomy.dashboard import queries
from tokenomy.dashboard.baselines import Rates
from tokenomy.dashboard.rollups import RESOLUTIONS
from tokenomy.dashboard.store import RollupStore
from tokenomy.errors import TokenomyError

RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "90d": 90 * 86400}
DEFAULT_RANGE = "24h"
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 409: "invalid_request_error", 413: "invalid_request_error",
                415: "invalid_request_error", 503: "service_unavailable"}


@dataclass
class DashboardConfig:
    """Optional settings; every default works with none given."""

    strong_model: str | None = None          # all-strong baseline model (default: the priciest seen)
    single_deployment: dict[str, str] = field(default_factory=dict)  # model -> pinned deployment
    near_limit_fraction: float = 0.8         # "near a limit" from this share of a budget / cap
    refresh_s: int = 30                      # auto-refresh period of the pages
    min_fold_interval_s: float = 1.0         # rollups catch up with the ledger at most this often
    plans_dir: Path | None = None            # default <data_dir>/plans


class DashError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_response(err: DashError) -> web.Response:
    body = {"error": {"message": err.message, "type": _ERROR_TYPES.get(err.status, "api_error"),
                      "param": err.param, "code": err.code}}
    return web.Response(status=err.status, body=orjson.dumps(body), content_type="application/json")


class Dashboard:
    """Per-app state: metering (auth, tenants, keys), rollups (lazily opened) and config."""

    def __init__(self, metering: Any, config: DashboardConfig, clock: Callable[[], float] = time.time):
        self.metering = metering
        self.config = config
        self.clock = clock  # "now" of windows, budget periods and rates (injected by tests)
        self._rollups: RollupStore | None = None
        self._open_lock = asyncio.Lock()

    @property
    def data_dir(self) -> Path | None:
        d = getattr(self.metering, "data_dir", None)
        return Path(d) if d is not None else None

    def _open_rollups(self) -> RollupStore:
        try:
            store = open_rollup_store(getattr(self.metering, "ledger", None),
                                      min_interval_s=self.config.min_fold_interval_s)
        except TokenomyError as exc:
            raise DashError(503, str(exc), code="ledger_unavailable") from None
        if store is None:
            raise DashError(503, "the dashboard needs the SQLite ledger (metering opened with Metering.open(data_dir)) "
                                 "or the PostgreSQL ledger (TOKENOMY_LEDGER_URL)", code="no_ledger")
        return store

    async def rollups(self, fold: bool = True) -> RollupStore:
        if self._rollups is None:
            async with self._open_lock:
                if self._rollups is None:
                    self._rollups = await asyncio.to_thread(self._open_rollups)
        if fold:
            await asyncio.to_thread(self._rollups.maybe_fold)
        return self._rollups

    @staticmethod
    def rollup_meta(r: RollupStore) -> dict:
        """{"behind": events not folded yet} — non-zero while a large ledger is being caught up."""
        return {"behind": max(0, r.behind())}

    async def close(self) -> None:
        if self._rollups is not None:
            await asyncio.to_thread(self._rollups.close)
            self._rollups = None

    # request helpers ---------------------------------------------------------------------
    def principal(self, request: web.Request):
        from tokenomy.metering import MeteringError

        header = request.headers.get("Authorization", "")
        secret = header[7:].strip() if header[:7].lower() == "bearer " else None
        try:
            return self.metering.authenticate(secret)
        except MeteringError as exc:
            raise DashError(getattr(exc, "status", 401), exc.message, code=getattr(exc, "code", None)) from None

    @staticmethod
    def scope(request: web.Request, p) -> str | None:
        """The tenant this request may see: None = all (admin only)."""
        wanted = request.query.get("tenant") or None
        if p.is_admin:
            return wanted
        if wanted is not None and wanted != p.tenant:
            raise DashError(403, f"a key of tenant '{p.tenant}' cannot see tenant '{wanted}'", code="permission_denied",
                            param="tenant")
        return p.tenant

    async def window(self, request: web.Request, r: RollupStore) -> queries.Window:
        q = request.query
        now = self.clock()
        res = q.get("res") or None
        if res is not None and res not in RESOLUTIONS:
            raise DashError(400, f"res must be one of {', '.join(RESOLUTIONS)}", param="res", code="invalid_value")
        if q.get("since") or q.get("until"):
            until = _time_param(q, "until", now)
            since = _time_param(q, "since", until - 86400)
        else:
            name = q.get("range") or DEFAULT_RANGE
            until = now
            if name == "all":
                first = await asyncio.to_thread(r.first_bucket)
                since = float(first) if first is not None else now - 86400
            elif name in RANGES:
                since = now - RANGES[name]
            else:
                raise DashError(400, f"range must be one of {', '.join([*RANGES, 'all'])}", param="range",
                                code="invalid_value")
        if since >= until:
            raise DashError(400, "since must be before until", param="since", code="invalid_value")
        return queries.make_window(since, until, res)

    def context(self, request: web.Request) -> queries.Context:
        known: dict[str, Rates] = {}
        live: dict[str, dict] = {}
        first: dict[str, str] = {}
        gw = _gateway(request.app)
        if gw is not None:
            from tokenomy.gateway.health import STATE_NAMES

            for name, d in gw.deployments.items():
                known[name] = Rates(d.p_in, d.p_cached, d.p_out, d.p_reason)
                live[name] = {"breaker": STATE_NAMES.get(d.breaker.state, str(d.breaker.state)),
                              "in_flight": d.in_flight, "max_in_flight": d.max_in_flight,
                              "ttft_ms_ewma": d.ttft_ms.value, "tpot_ms_ewma": d.tpot_ms.value}
            first = {alias: g.deployments[0].name for alias, g in gw.groups.items() if g.deployments}
        c = self.config
        return queries.Context(known_rates=known, strong_model=c.strong_model, pinned=c.single_deployment,
                               group_first=first, live=live, near_limit_fraction=c.near_limit_fraction,
                               now=self.clock())

    def routed_savings(self, w: queries.Window, tenant: str | None) -> dict:
        """`tokenomy route savings` over this window (the one all-strong baseline), per bucket too."""
        from tokenomy.routing.savings import savings

        ledger = getattr(self.metering, "ledger", None)
        url = getattr(ledger, "url", None) or getattr(getattr(ledger, "inner", None), "url", None)
        if url is None and self.data_dir is None:
            return {"requests": 0, "actual_usd": "0", "all_strong_usd": "0", "series": []}
        return savings(self.data_dir or ".", w.since, w.until, url, tenant=tenant, bucket_s=w.step)

    def plans_dir(self) -> Path | None:
        if self.config.plans_dir is not None:
            return Path(self.config.plans_dir)
        return self.data_dir / "plans" if self.data_dir is not None else None


def open_rollup_store(ledger: Any, *, min_interval_s: float = 1.0) -> RollupStore | None:
    """The rollup store of a metering ledger: PostgreSQL when it has a URL (PostgresLedger, or the
    outbox in front of one), SQLite when it is a ledger file; None for an in-memory ledger."""
    url = getattr(ledger, "url", None)
    if url:
        from tokenomy.dashboard.pg_rollups import PgRollups

        return PgRollups(url, min_interval_s=min_interval_s)
    path = getattr(ledger, "path", None)
    if path is not None and getattr(ledger, "inner", None) is None:
        from tokenomy.dashboard.rollups import Rollups

        return Rollups(path, min_interval_s=min_interval_s)
    return None


def _gateway(app: web.Application):
    """The gateway's live state, when the dashboard is mounted on the gateway app."""
    try:
        from tokenomy.gateway.app import GATEWAY_KEY
    except Exception:  # pragma: no cover - gateway not importable
        return None
    try:
        return app.get(GATEWAY_KEY)
    except Exception:
        return None


def _time_param(q, name: str, default: float) -> float:
    """Unix seconds or ISO 8601 (UTC unless zoned), within years 1970-9999 (tokenomy.timebounds)."""
    from tokenomy.timebounds import in_range, out_of_range_message

    raw = q.get(name)
    if not raw:
        return default
    try:
        ts = float(raw)
    except ValueError:
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            shown = raw if len(raw) <= 64 else raw[:64] + "..."
            raise DashError(400, f"'{name}' must be unix seconds or an ISO 8601 time, not {shown!r}", param=name,
                            code="invalid_value") from None
        if dt.tzinfo is None:
            from datetime import timezone

            dt = dt.replace(tzinfo=timezone.utc)
        try:
            ts = dt.timestamp()
        except (OverflowError, ValueError, OSError):  # 0001-01-01T00:00+14:00: before datetime.min in UTC
            ts = float("nan")
    if not in_range(ts):
        raise DashError(400, out_of_range_message(name, raw), param=name, code="invalid_value")
    return ts


def _json_default(o: Any):
    from decimal import Decimal

    if isinstance(o, Decimal):
        return format(o, "f")
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def render(request: web.Request, data: dict) -> web.Response:
    """JSON, or one of data["tables"] as CSV (?format=csv[&table=NAME])."""
    fmt = request.query.get("format", "json")
    headers = {"Cache-Control": "no-store"}
    if fmt == "json":
        try:
            body = orjson.dumps(data, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)
        except orjson.JSONEncodeError:  # an int beyond 64 bits (absurd usage): exact, via the stdlib
            body = json.dumps(data, default=_json_default).encode()
        return web.Response(body=body, content_type="application/json", headers=headers)
    if fmt != "csv":
        raise DashError(400, "format must be json or csv", param="format", code="invalid_value")
    tables = data.get("tables") or {}
    name = request.query.get("table") or next(iter(tables), None)
    if name not in tables:
        raise DashError(404, f"no table '{name}'; tables: {', '.join(tables) or 'none'}", param="table",
                        code="unknown_table")
    return web.Response(text=to_csv(tables[name]), content_type="text/csv",
                        headers={**headers, "Content-Disposition": f'attachment; filename="{name}.csv"'})


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text, never runs (OWASP CSV injection): a string starting with
    = + - @ TAB or CR gets a leading apostrophe, unless it is a plain number like -1.5."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, default=str)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)
            if value.strip() == value:
                return value  # a signed number (money as a string): safe and still numeric
        except ValueError:
            pass
        return "'" + value
    return value


def to_csv(rows: list[dict]) -> str:
    cols: list[str] = []
    for row in rows:
        for k in row:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; a CR or LF inside a cell is then quoted
    w.writerow([csv_cell(c) for c in cols])
    for row in rows:
        w.writerow(["" if row.get(c) is None else csv_cell(row[c]) for c in cols])
    return buf.getvalue()
