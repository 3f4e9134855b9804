"""What routing saved: routed requests in the ledger vs the all-strong and all-weak baselines.

Each routed request's main event (`extra.route`, written by the gateway at decision time) lists
its candidates weak..strong with the USD/Mtok (input, cached input, output, reasoning) of the
deployment each would have used. A baseline re-prices the request's own tokens at the
strongest (weakest) candidate's prices — the same tokens, as if every request had gone there.
Actual cost is what the ledger recorded (`cost_usd`), including a cascade's extra calls
(`<req>:weak`, `<req>:strong`, `<req>:judge` events, `extra.parent` = the request id).
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

from tokenomy.errors import TokenomyError

_PICO = Decimal("1e-12")
_MTOK = Decimal(1_000_000)
# PostgreSQL (jsonb): the same test
_PG_ROUTED = "COALESCE(extra->'route'->>'alias', extra->>'parent')"
_ROUTED = ("CASE WHEN extra IS NOT NULL AND json_valid(extra) THEN "
           "COALESCE(json_extract(extra, '$.route.alias'), json_extract(extra, '$.parent')) END")


def reprice_usd(usd_per_mtok: list, input_tokens: int, cached_input_tokens: int, output_tokens: int,
                reasoning_tokens: int) -> Decimal:
    """Cost of these tokens at [input, cached input, output, reasoning] USD/Mtok (as the gateway prices)."""
    p_in, p_cached, p_out, p_reason = (Decimal(str(x)) for x in usd_per_mtok)
    cached = min(cached_input_tokens, input_tokens)
    reasoning = min(reasoning_tokens, output_tokens)
    total = ((input_tokens - cached) * p_in + cached * p_cached + (output_tokens - reasoning) * p_out
             + reasoning * p_reason)
    return (total / _MTOK).quantize(_PICO)


def _money(x: Decimal) -> str:
    return format(x.normalize(), "f") if x else "0"


def _pct(saved: Decimal, base: Decimal) -> float | None:
    return None if not base else round(float(saved / base) * 100.0, 4)


class _Tally:
    def __init__(self) -> None:
        self.n = self.strong = 0
        self.actual = self.all_strong = self.all_weak = Decimal(0)

    def add(self, actual: Decimal, strong_usd: Decimal, weak_usd: Decimal, strong: bool) -> None:
        self.n += 1
        self.strong += bool(strong)
        self.actual += actual
        self.all_strong += strong_usd
        self.all_weak += weak_usd

    def to_json(self) -> dict:
        saved = self.all_strong - self.actual
        return {"requests": self.n, "strong_calls": self.strong,
                "strong_share": (self.strong / self.n) if self.n else None,
                "actual_usd": _money(self.actual), "all_strong_usd": _money(self.all_strong),
                "all_weak_usd": _money(self.all_weak), "saved_vs_all_strong_usd": _money(saved),
                "saved_vs_all_strong_pct": _pct(saved, self.all_strong),
                "extra_vs_all_weak_usd": _money(self.actual - self.all_weak)}


def _where(routed: str, since: float | None, until: float | None, ph: str,
           tenant: str | None = None) -> tuple[str, list]:
    sql, params = f"WHERE {routed} IS NOT NULL", []
    if tenant is not None:
        sql += f" AND tenant = {ph}"
        params.append(tenant)
    if since is not None:
        sql += f" AND ts >= {ph}"
        params.append(since)
    if until is not None:
        sql += f" AND ts < {ph}"
        params.append(until)
    return sql, params


_COLS = "id, ts, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, cost_pusd"


def _rows(data_dir: Path | str, since: float | None, until: float | None, ledger_url: str | None = None,
          tenant: str | None = None) -> list[tuple]:
    from tokenomy.routing.feedback import _ledger_url, pg_read

    url = _ledger_url(ledger_url)
    if url:  # the PostgreSQL ledger (TOKENOMY_LEDGER_URL): every replica's events
        where, params = _where(_PG_ROUTED, since, until, "%s", tenant)
        return pg_read(url, f'SELECT {_COLS}, extra::text FROM events {where} ORDER BY ts, id COLLATE "C"', tuple(params))
    from tokenomy.metering.paths import ledger_path

    path = ledger_path(Path(data_dir))
    if not path.is_file():
        raise TokenomyError(f"no ledger at {path} (pass the gateway's data directory)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        where, params = _where(_ROUTED, since, until, "?", tenant)
        return conn.execute(f"SELECT {_COLS}, extra FROM events {where} ORDER BY ts, id", params).fetchall()
    except sqlite3.OperationalError as exc:
        raise TokenomyError(f"cannot read the ledger {path}: {exc}") from None
    finally:
        conn.close()


def savings(data_dir: Path | str, since: float | None = None, until: float | None = None,
            ledger_url: str | None = None, *, tenant: str | None = None, bucket_s: int | None = None) -> dict:
    """Totals over routed requests with ts in [since, until) (epoch s); money as exact strings.

    `actual_usd` vs `all_strong_usd` (every request at the strongest candidate) and
    `all_weak_usd` (every request at the weakest); `strong_share` = share served by the
    strongest; `by_alias`; `cascade` (cascade requests only, weak/judge calls included).
    Reads the PostgreSQL ledger for ledger_url (or TOKENOMY_LEDGER_URL), else data_dir's SQLite.
    `tenant` limits it to one tenant; `bucket_s` adds `series`: actual and all-strong USD per
    time bucket (bucket = ts // bucket_s * bucket_s), for the dashboard's chart of the same totals."""
    mains: dict[str, tuple] = {}
    aux: dict[str, dict[str, Decimal]] = {}
    ts_of: dict[str, float] = {}
    for rid, ts, inp, cached, out, reasoning, cost_pusd, extra in _rows(data_dir, since, until, ledger_url, tenant):
        try:
            x = json.loads(extra)
        except ValueError:
            continue
        cost = Decimal(int(cost_pusd)) * _PICO
        route = x.get("route")
        if isinstance(route, dict) and route.get("candidates"):
            mains[rid] = (route, (inp, cached, out, reasoning), cost)
            ts_of[rid] = float(ts)
        elif isinstance(x.get("parent"), str):
            part = str(x.get("route_part") or "aux")
            bucket = aux.setdefault(x["parent"], {})
            bucket[part] = bucket.get(part, Decimal(0)) + cost
    total, by_alias = _Tally(), {}
    casc = _Tally()
    escalated = 0
    weak_calls = judge = Decimal(0)
    series: dict[int, list[Decimal]] = {}
    for rid, (route, tokens, cost) in mains.items():
        cands = route["candidates"]
        strong_usd = reprice_usd(cands[-1]["usd_per_mtok"], *tokens)
        weak_usd = reprice_usd(cands[0]["usd_per_mtok"], *tokens)
        parts = aux.get(rid, {})
        actual = cost + sum(parts.values(), Decimal(0))
        strong = bool(route.get("strong"))
        total.add(actual, strong_usd, weak_usd, strong)
        if bucket_s:
            point = series.setdefault(int(ts_of[rid] // bucket_s * bucket_s), [Decimal(0), Decimal(0)])
            point[0] += actual
            point[1] += strong_usd
        by_alias.setdefault(str(route.get("alias", "")), _Tally()).add(actual, strong_usd, weak_usd, strong)
        if route.get("policy") == "cascade":
            casc.add(actual, strong_usd, weak_usd, strong)
            escalated += bool(route.get("escalated"))
            weak_calls += parts.get("weak", Decimal(0)) + (cost if not strong else Decimal(0))
            judge += parts.get("judge", Decimal(0))
    out = {"since": since, "until": until, **total.to_json(),
           "by_alias": {a: t.to_json() for a, t in sorted(by_alias.items())}}
    if bucket_s:
        out["series"] = [{"ts": b, "actual_usd": float(a), "all_strong_usd": float(st)}
                         for b, (a, st) in sorted(series.items())]
    if casc.n:
        out["cascade"] = {**casc.to_json(), "escalated": escalated, "escalation_share": escalated / casc.n,
                          "weak_calls_usd": _money(weak_calls), "judge_usd": _money(judge)}
    return out


def format_savings(s: dict) -> str:
    """A short human summary (the CLI's table view)."""
    if not s["requests"]:
        return "no routed requests in this period"
    lines = [f"routed requests: {s['requests']}   strong share: {s['strong_share']:.1%}",
             f"actual cost:     ${s['actual_usd']}",
             f"all-strong:      ${s['all_strong_usd']}   saved ${s['saved_vs_all_strong_usd']}"
             + (f" ({s['saved_vs_all_strong_pct']:.1f}%)" if s["saved_vs_all_strong_pct"] is not None else ""),
             f"all-weak:        ${s['all_weak_usd']}   routing costs ${s['extra_vs_all_weak_usd']} more"]
    c = s.get("cascade")
    if c:
        lines.append(f"cascade: {c['requests']} requests, escalated {c['escalation_share']:.1%}, weak calls "
                     f"${c['weak_calls_usd']}, judge ${c['judge_usd']}, saved vs all-strong "
                     f"${c['saved_vs_all_strong_usd']} (weak calls included)")
    return "\n".join(lines)
