"""The wire format of each export target (pure: events in, HTTP requests out).

Each target turns a batch of ledger events into HTTP requests that carry the event's id as the
receiver's idempotency key, so a batch sent twice (a retry after a lost reply) is counted once:
- OpenMeter: CloudEvents 1.0 in one `application/cloudevents-batch+json` POST to /api/v1/events;
  OpenMeter deduplicates on (source, id).
- Stripe billing meter events: one form-encoded POST to /v1/billing/meter_events per event and
  meter, `identifier` = event id (+ meter) and the same `Idempotency-Key` header (Stripe dedups
  identifiers for at least 24 h and replays idempotent requests).
- Lago: up to 100 events in one POST to /api/v1/events/batch; Lago dedups on transaction_id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import orjson

TARGETS = ("openmeter", "stripe", "lago")
MAX_BATCH = {"openmeter": 500, "stripe": 100, "lago": 100}  # Lago: 100 events per batch call
USAGE_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "tokens",
                "price_microusd", "cost_microusd")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # appended to the target's base URL
    headers: dict[str, str]
    body: bytes
    event_ids: tuple[str, ...]  # the ledger events this request carries


@dataclass(frozen=True)
class TargetConfig:
    name: str
    source: str = "tokenomy"  # OpenMeter CloudEvents `source`
    event_type: str = "tokenomy.usage"  # OpenMeter CloudEvents `type`
    customers: dict[str, str] = field(default_factory=dict)  # tenant -> customer / subscription id
    meters: dict[str, str] = field(default_factory=lambda: {"tokenomy_input_tokens": "input_tokens",
                                                             "tokenomy_output_tokens": "output_tokens"})
    lago_code: str = "tokenomy_usage"


def _usd(pusd: int) -> str:
    return format(Decimal(int(pusd)).scaleb(-12).normalize(), "f") if pusd else "0"


def usage_of(e: dict) -> dict[str, int]:
    """Integer quantities of one event (money in micro-USD, rounded half-even: meters sum integers)."""
    inp, out = int(e["input_tokens"]), int(e["output_tokens"])
    return {"input_tokens": inp, "cached_input_tokens": int(e["cached_input_tokens"]), "output_tokens": out,
            "reasoning_tokens": int(e["reasoning_tokens"]), "tokens": inp + out,
            "price_microusd": int(round(Decimal(int(e["price_pusd"])) / 10**6)),
            "cost_microusd": int(round(Decimal(int(e["cost_pusd"])) / 10**6))}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _properties(e: dict) -> dict[str, Any]:
    return {"tenant": e["tenant"], "key_id": e["key_id"], "model": e["model"], "deployment": e["deployment"],
            **usage_of(e), "price_usd": _usd(e["price_pusd"]), "cost_usd": _usd(e["cost_pusd"]),
            "energy_joules": float(e["energy_joules"]), "status": e["status"]}


def customer(cfg: TargetConfig, tenant: str) -> str:
    return cfg.customers.get(tenant, tenant)


def openmeter(cfg: TargetConfig, events: list[dict]) -> list[Request]:
    body = [{"specversion": "1.0", "id": e["id"], "source": cfg.source, "type": cfg.event_type,
             "subject": customer(cfg, e["tenant"]), "time": _iso(e["ts"]), "datacontenttype": "application/json",
             "data": _properties(e)} for e in events]
    return [Request("POST", "/api/v1/events", {"Content-Type": "application/cloudevents-batch+json"},
                    orjson.dumps(body), tuple(e["id"] for e in events))]


def stripe(cfg: TargetConfig, events: list[dict]) -> list[Request]:
    out = []
    for e in events:
        usage = usage_of(e)
        for event_name, field_name in cfg.meters.items():
            value = usage[field_name]
            if value <= 0:
                continue  # a meter event of 0 adds nothing (and Stripe asks for a positive value)
            identifier = f"{e['id']}:{event_name}"
            form = {"event_name": event_name, "identifier": identifier, "timestamp": str(int(float(e["ts"]))),
                    "payload[stripe_customer_id]": customer(cfg, e["tenant"]), "payload[value]": str(value)}
            out.append(Request("POST", "/v1/billing/meter_events",
                               {"Content-Type": "application/x-www-form-urlencoded", "Idempotency-Key": identifier},
                               urlencode(form).encode(), (e["id"],)))
    return out


def lago(cfg: TargetConfig, events: list[dict]) -> list[Request]:
    body = {"events": [{"transaction_id": e["id"], "external_subscription_id": customer(cfg, e["tenant"]),
                        "code": cfg.lago_code, "timestamp": float(e["ts"]), "properties": _properties(e)}
                       for e in events]}
    return [Request("POST", "/api/v1/events/batch", {"Content-Type": "application/json"}, orjson.dumps(body),
                    tuple(e["id"] for e in events))]


BUILDERS = {"openmeter": openmeter, "stripe": stripe, "lago": lago}
