"""Usage grouped by the request's end user (`user`) or tags (`metadata`), from the events'
`extra` (recorded by the gateway's settle step): requests, tokens and cost per value, on the
SQLite and PostgreSQL ledgers (the same figures; money exact)."""

from __future__ import annotations

from decimal import Decimal

from tokenomy.ledgerdb import LedgerDB

DIMENSIONS = ("user", "tag")
_SELECT = ("COUNT(*), SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens), SUM(cost_pusd), "
           "SUM(price_pusd), SUM(energy_joules)")


def _sql(dim: str, pg: bool, tenant: str | None, since: float | None, until: float | None,
         user: str | None = None, tag: tuple[str, str] | None = None) -> tuple[str, list]:
    if dim == "user":
        key = "events.extra->>'user'" if pg else "json_extract(events.extra, '$.user')"
        frm = "events"
    else:  # one row per (event, tag): key=value
        key = "t.key || '=' || t.value"
        frm = "events, jsonb_each_text(events.extra->'tags') AS t" if pg else "events, json_each(events.extra, '$.tags') AS t"
    where, params = [f"{key} IS NOT NULL"], []
    if not pg:
        where.insert(0, "json_valid(extra)")
    for cond, val in (("tenant = ?", tenant), ("ts >= ?", since), ("ts < ?", until)):
        if val is not None:
            where.append(cond)
            params.append(val)
    if user is not None:  # only this end user's requests (e.g. its spend by tag)
        where.append("events.extra->>'user' = ?" if pg else "json_extract(events.extra, '$.user') = ?")
        params.append(user)
    if tag is not None:  # only requests carrying this tag (e.g. a feature's spend by user)
        where.append("events.extra->'tags'->>? = ?" if pg
                     else "json_extract(events.extra, '$.tags.' || json_quote(?)) = ?")
        params.extend(tag)
    return f"SELECT {key}, {_SELECT} FROM {frm} WHERE {' AND '.join(where)} GROUP BY 1 ORDER BY 1", params


def usage_by(db: LedgerDB, dim: str, tenant: str | None = None, since: float | None = None,
             until: float | None = None, *, user: str | None = None,
             tag: tuple[str, str] | None = None) -> dict[str, dict]:
    """{value: {requests, input_tokens, cached_input_tokens, output_tokens, tokens, cost_usd, price_usd,
    energy_joules}} for dim = user | tag (tags keyed 'key=value'), over the requests of one end user
    and/or one tag (key, value) when given."""
    if dim not in DIMENSIONS:
        from tokenomy.errors import TokenomyError

        raise TokenomyError(f"group by must be one of {', '.join(DIMENSIONS)}, not '{dim}'")
    sql, params = _sql(dim, db.url is not None, tenant, since, until, user, tag)
    out = {}
    for value, n, inp, cached, outp, cost, price, energy in db.run(sql, tuple(params)):
        out[str(value)] = {"requests": int(n), "input_tokens": int(inp or 0), "cached_input_tokens": int(cached or 0),
                           "output_tokens": int(outp or 0), "tokens": int(inp or 0) + int(outp or 0),
                           "cost_usd": format(Decimal(int(cost or 0)).scaleb(-12).normalize(), "f"),
                           "price_usd": format(Decimal(int(price or 0)).scaleb(-12).normalize(), "f"),
                           "energy_joules": float(energy or 0.0)}
    return out
