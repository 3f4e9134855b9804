"""Spend by the requests' end user or tag for the dashboard (issue 21): the filters a page may
ask for, validated, and the table it shows (top values by billed spend, the rest summed).

Pure: the handler reads the ledger (`metering.spend_by.usage_by`) and passes its rows here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from tokenomy.metering.records import MAX_USER_CHARS
from tokenomy.metering.spend_by import DIMENSIONS

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_QUERY_CHARS = 200
MAX_TAG_CHARS = 64 + 1 + 512  # key=value at the gateway's own limits (gateway/validate.py)


class SpendQueryError(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class SpendQuery:
    by: str = "user"                       # user | tag: what the rows are
    user: str | None = None                # only this end user's requests
    tag: tuple[str, str] | None = None     # only requests carrying this tag (key, value)
    contains: str | None = None            # only values containing this text (case-insensitive)
    limit: int = DEFAULT_LIMIT             # rows shown; the rest are summed into `others`

    def filters(self) -> dict:
        return {"user": self.user, "tag": None if self.tag is None else "=".join(self.tag), "q": self.contains}


def parse_query(q: Mapping[str, str]) -> SpendQuery:
    """?by=user|tag&user=U&tag=key=value&q=TEXT&limit=N, each bounded; SpendQueryError names the param."""
    by = q.get("by") or "user"
    if by not in DIMENSIONS:
        raise SpendQueryError(f"by must be one of {', '.join(DIMENSIONS)}", "by")
    user = q.get("user") or None
    if user is not None and len(user) > MAX_USER_CHARS:
        raise SpendQueryError(f"user must be at most {MAX_USER_CHARS} characters", "user")
    tag = None
    raw_tag = q.get("tag") or None
    if raw_tag is not None:
        key, sep, value = raw_tag.partition("=")
        if not sep or not key or len(raw_tag) > MAX_TAG_CHARS:
            raise SpendQueryError("tag must be key=value (the request's metadata), e.g. feature=search", "tag")
        tag = (key, value)
    contains = q.get("q") or None
    if contains is not None and len(contains) > MAX_QUERY_CHARS:
        raise SpendQueryError(f"q must be at most {MAX_QUERY_CHARS} characters", "q")
    raw_limit = q.get("limit") or str(DEFAULT_LIMIT)
    try:
        limit = int(raw_limit)
    except ValueError:
        raise SpendQueryError(f"limit must be an integer from 1 to {MAX_LIMIT}", "limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise SpendQueryError(f"limit must be an integer from 1 to {MAX_LIMIT}", "limit")
    return SpendQuery(by, user, tag, contains, limit)


_SUMMED = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "tokens")


def spend_table(groups: Mapping[str, Mapping], query: SpendQuery) -> dict:
    """{"totals", "tables": {"spend"}, "meta"} from usage_by's {value: figures}: values matching
    `contains`, by billed spend (then requests, then name), the first `limit` shown with their
    share of the matching spend, the rest summed into totals["others"]. Money stays exact (str)."""
    needle = (query.contains or "").casefold()
    matched = [(v, g) for v, g in groups.items() if needle in v.casefold()]
    matched.sort(key=lambda vg: (-Decimal(vg[1]["price_usd"]), -int(vg[1]["requests"]), vg[0]))
    spend = sum((Decimal(g["price_usd"]) for _, g in matched), Decimal(0))
    rows = []
    for value, g in matched[:query.limit]:
        price = Decimal(g["price_usd"])
        rows.append({query.by: value, **{k: int(g.get(k) or 0) for k in _SUMMED},
                     "price_usd": _money(price), "cost_usd": _money(Decimal(g["cost_usd"])),
                     "energy_joules": float(g.get("energy_joules") or 0.0),
                     "share_of_spend": float(price / spend) if spend else None})
    rest = matched[query.limit:]
    others = {"values": len(rest), **{k: sum(int(g.get(k) or 0) for _, g in rest) for k in _SUMMED},
              "price_usd": _money(sum((Decimal(g["price_usd"]) for _, g in rest), Decimal(0))),
              "cost_usd": _money(sum((Decimal(g["cost_usd"]) for _, g in rest), Decimal(0)))}
    totals = {"values": len(matched), "price_usd": _money(spend),
              "cost_usd": _money(sum((Decimal(g["cost_usd"]) for _, g in matched), Decimal(0))),
              "requests": sum(int(g["requests"]) for _, g in matched), "others": others}
    # a request with several tags counts once per tag: tag rows are not additive across values
    note = "a request counts once under each of its tags" if query.by == "tag" else None
    return {"meta": {"by": query.by, "filters": query.filters(), "shown": len(rows), "note": note},
            "totals": totals, "tables": {"spend": rows}}


def _money(x: Decimal) -> str:
    return format(x.normalize(), "f") if x else "0"


__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "SpendQuery", "SpendQueryError", "parse_query", "spend_table"]
