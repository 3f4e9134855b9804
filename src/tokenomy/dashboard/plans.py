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
