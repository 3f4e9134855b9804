"""Usage totals from per-(model, deployment) rows: exact money, JSON-ready (money as str)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenomy.metering.money import from_pusd, money_str
from tokenomy.metering.store import UsageRow

_INT_FIELDS = ("requests", "errors", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")


def _empty() -> dict:
    out = {name: 0 for name in _INT_FIELDS}
    out.update(cost_pusd=0, price_pusd=0, energy_joules=0.0)
    return out


def _add(total: dict, row: UsageRow) -> None:
    for name in _INT_FIELDS:
        total[name] += getattr(row, name)
    total["cost_pusd"] += row.cost_pusd
    total["price_pusd"] += row.price_pusd
    total["energy_joules"] += row.energy_joules


def _finish(total: dict) -> dict:
    out = {name: total[name] for name in _INT_FIELDS}
    out["cost_usd"] = money_str(from_pusd(total.pop("cost_pusd")))
    out["price_usd"] = money_str(from_pusd(total.pop("price_pusd")))
    out["energy_joules"] = round(total["energy_joules"], 6)
    return out


def summarize(rows: Iterable[UsageRow]) -> dict:
    """{"requests", "errors", token counts, "cost_usd", "price_usd" (str), "energy_joules",
    "by_model": {model: {...}}, "by_deployment": {deployment: {...}}}."""
    total, by_model, by_deployment = _empty(), {}, {}
    for row in rows:
        _add(total, row)
        _add(by_model.setdefault(row.model, _empty()), row)
        _add(by_deployment.setdefault(row.deployment, _empty()), row)
    out = _finish(total)
    out["by_model"] = {name: _finish(t) for name, t in sorted(by_model.items())}
    out["by_deployment"] = {name: _finish(t) for name, t in sorted(by_deployment.items())}
    return out
