"""What billing reads from the ledger: one BillableEvent per request, and totals by category."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

BILLABLE_STATUSES = ("ok", "cancelled")  # errors are never billed (the gateway records them at 0)


@dataclass(frozen=True, slots=True)
class BillableEvent:
    id: str
    ts: float
    recorded_at: float
    model: str
    deployment: str
    input_tokens: int  # includes cached (OpenAI usage)
    cached_input_tokens: int
    output_tokens: int  # includes reasoning
    cost_usd: Decimal
    price_usd: Decimal
    energy_joules: float = 0.0

    @property
    def categories(self) -> dict[str, int]:
        cached = min(self.cached_input_tokens, self.input_tokens)
        return {"input": self.input_tokens - cached, "cached_input": cached, "output": self.output_tokens}

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Totals:
    requests: int = 0
    input: int = 0
    cached_input: int = 0
    output: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)
    price_usd: Decimal = field(default_factory=Decimal)
    energy_joules: float = 0.0

    def add(self, e: BillableEvent) -> None:
        c = e.categories
        self.requests += 1
        self.input += c["input"]
        self.cached_input += c["cached_input"]
        self.output += c["output"]
        self.cost_usd += e.cost_usd
        self.price_usd += e.price_usd
        self.energy_joules += e.energy_joules

    def quantity(self, unit: str) -> int:
        return getattr(self, unit)

    def to_dict(self) -> dict:
        from tokenomy.billing.money import usd_str

        return {"requests": self.requests, "input_tokens": self.input, "cached_input_tokens": self.cached_input,
                "output_tokens": self.output, "cost_usd": usd_str(self.cost_usd),
                "price_usd": usd_str(self.price_usd), "energy_joules": round(self.energy_joules, 6)}


def totals(events: Iterable[BillableEvent]) -> Totals:
    t = Totals()
    for e in events:
        t.add(e)
    return t


def by_key(events: Iterable[BillableEvent], key) -> dict[str, Totals]:
    out: dict[str, Totals] = {}
    for e in events:
        out.setdefault(key(e), Totals()).add(e)
    return dict(sorted(out.items()))
