"""Fleet plans and pricing simulations saved from the CLI as JSON files in <data_dir>/plans/.

Two shapes are recognised (others are listed as "other" with their top-level numbers):
- fleet plan (`tokenomy fleet plan --json`): `usd_per_hour`, `assignments` (list), `best_single`, ...
- pricing simulation (`tokenomy pricing simulate --json`): `{"plans": {NAME: {revenue_usd, cost_usd, ...}}}`
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,200}$")
MAX_BYTES = 20_000_000


def kind_of(doc) -> str:
    if isinstance(doc, dict):
        if isinstance(doc.get("assignments"), list):
            return "fleet-plan"
        if isinstance(doc.get("plans"), dict):
            return "pricing-simulation"
    return "other"


def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _read(path: Path):
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{path.name} is larger than {MAX_BYTES} bytes")
    return json.loads(path.read_text(encoding="utf-8"))


def list_plans(plans_dir: Path | None) -> list[dict]:
    if plans_dir is None or not plans_dir.is_dir():
        return []
    out = []
    for path in sorted(plans_dir.glob("*.json")):
        item = {"name": path.stem, "file": path.name, "bytes": path.stat().st_size, "modified": path.stat().st_mtime}
        try:
            doc = _read(path)
            item["kind"] = kind_of(doc)
            item["summary"] = _scalars(doc) if isinstance(doc, dict) else {}
        except (ValueError, OSError) as exc:
            item["kind"] = "unreadable"
            item["error"] = str(exc)
        out.append(item)
    out.sort(key=lambda i: -i["modified"])
    return out


def load_plan(plans_dir: Path | None, name: str) -> dict:
    """One saved file with chart-ready tables: assignments (fleet) or per-plan figures (pricing)."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"invalid plan name '{name}'")
    if plans_dir is None:
        raise FileNotFoundError(name)
    path = plans_dir / f"{name.removesuffix('.json')}.json"
    if not path.is_file():
        raise FileNotFoundError(name)
    doc = _read(path)
    kind = kind_of(doc)
    tables: dict[str, list[dict]] = {}
    if kind == "fleet-plan":
        tables["assignments"] = [_flat(a) for a in doc["assignments"] if isinstance(a, dict)]
    elif kind == "pricing-simulation":
        tables["plans"] = [{"plan": k, **_scalars(v)} for k, v in doc["plans"].items() if isinstance(v, dict)]
    summary = _scalars(doc) if isinstance(doc, dict) else {}
    if isinstance(doc, dict) and isinstance(doc.get("best_single"), dict):
        summary.update({f"best_single.{k}": v for k, v in _scalars(doc["best_single"]).items()})
    tables["summary"] = [{"field": k, "value": v} for k, v in summary.items()]
    return {"meta": {"name": path.stem, "kind": kind, "file": path.name}, "totals": summary, "tables": tables,
            "document": doc}


def _flat(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in _scalars(v).items()})
        elif not isinstance(v, list):
            out[k] = v
    return out


# ---------------------------------------------------------------- the gateway's pricing plans


def _price_text(c) -> dict:
    """One category's price as plain figures (Decimal as strings)."""
    out = {"scheme": c.scheme, "per": c.per}
    if c.usd is not None:
        out["usd"] = format(c.usd, "f")
    if c.tiers:
        out["tiers"] = [{"up_to": t.up_to, "usd": format(t.usd, "f")} for t in c.tiers]
    return out


def plan_card(plan) -> dict:
    """What a plan charges and limits, for a card: fee, per-category prices and tiers, free
    allowances, caps, cost-plus markup, minimum commitment."""
    cost_plus = None
    if plan.cost_plus is not None:
        m = plan.cost_plus.markup
        cost_plus = {k: format(v, "f") for k, v in m.items()} if isinstance(m, dict) else {"all": format(m, "f")}
    return {"name": plan.name, "description": plan.description, "kind": plan.kind,
            "model_group": plan.model_group,
            "subscription_usd": None if plan.subscription_usd is None else format(plan.subscription_usd, "f"),
            "usage": {k: _price_text(v) for k, v in (plan.usage or {}).items()},
            "free": dict(plan.free),
            "caps": [{"window": c.window, "limit": c.limit, "unit": c.unit, "at_cap": c.at_cap,
                      "downgrade_group": c.downgrade_group} for c in plan.caps],
            "cost_plus_markup": cost_plus, "list_price": plan.list_price,
            "minimum_commitment_usd": None if plan.minimum_commitment_usd is None
            else format(plan.minimum_commitment_usd, "f")}


def pricing_plans(gate, now: float, tenants: list[str]) -> dict:
    """Every plan of the gateway's plan book as a card, and each tenant's position against its
    plan's caps now (used / limit over each rolling window, and when the oldest usage leaves it)."""
    if gate is None:
        return {"meta": {"configured": False}, "totals": {"plans": 0}, "tables": {"plans": [], "positions": []}}
    book = gate.book
    cards = [plan_card(p) for p in book.plans.values()]
    positions = []
    for tenant in tenants:
        plan = gate.plan(tenant, now)
        counter = gate.enforcer._counter(tenant, now) if plan.caps else None
        view = counter.view(now) if counter is not None else None
        if not plan.caps:
            positions.append({"tenant": tenant, "plan": plan.name, "cap": None, "used": None, "limit": None,
                              "fraction": None, "at_cap": None, "resets_at": None})
            continue
        for cap in plan.caps:
            secs = cap.window_seconds
            used = view.used(secs, cap.unit)
            positions.append({"tenant": tenant, "plan": plan.name, "cap": f"{cap.limit:,} {cap.unit} / {cap.window}",
                              "used": used, "limit": cap.limit, "fraction": used / cap.limit, "at_cap": cap.at_cap,
                              "resets_at": view.reset_at(secs, cap.unit, cap.limit) if used >= cap.limit else None})
    return {"meta": {"configured": True, "default_plan": book.default_plan},
            "totals": {"plans": len(cards), "tenants_at_a_cap": len({p["tenant"] for p in positions
                                                                      if p["fraction"] is not None and p["fraction"] >= 1})},
            "tables": {"plans": cards, "positions": positions}}
