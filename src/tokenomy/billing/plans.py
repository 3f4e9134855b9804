"""Plan configuration (pydantic), loaded from YAML with top-level `plans:`.

A plan combines any of these components (see examples/plans.yaml for every kind):
  subscription  flat fee per period, prorated by seconds when a tenant changes plan mid-period
  caps          rolling-window limits (requests or tokens per 5 h / per week ...) with the action
                at the cap: block (with reset time), downgrade (to a cheaper model group), overage
  usage         price per token category: unit, graduated tiers, volume tiers, package
  free          free tokens per category and period (prorated like the fee)
  cost_plus     serving cost x (1 + markup), per token category
  list_price    pass-through of the gateway's price (the ledger's price_usd)
  minimum_commitment_usd  usage spend below it is trued up at period end
Tenants map to plans over time (`subscriptions`), and hold prepaid credit grants.
Token categories: input (uncached), cached_input, output (reasoning included); `requests`
can be priced like a category.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokenomy.config import Pricing
from tokenomy.errors import ConfigError, UnknownNameError

CATEGORIES = ("input", "cached_input", "output")
PRICED_UNITS = (*CATEGORIES, "requests")
LIST_PLAN = "list"  # built-in: pass the gateway's price through
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_WINDOW_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@functools.lru_cache(maxsize=256)  # pure; called per capped request on the gateway's hot path
def window_seconds(text: str) -> float:
    m = _WINDOW.match(str(text))
    if not m:
        raise ValueError(f"window '{text}' must look like 5h, 1w, 30m, 7d")
    return float(m.group(1)) * _WINDOW_SECONDS[m.group(2)]


def to_epoch(value: Any) -> float:
    """Epoch seconds from a YAML date/datetime/ISO string/number (UTC when no zone)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        d = value
    elif isinstance(value, date):
        d = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            d = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"'{value}' is not an ISO date/time") from None
    else:
        raise ValueError(f"{value!r} is not a date/time")
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Strict):
    up_to: int | None = Field(default=None, gt=0)  # cumulative units; None: no upper bound
    usd: Decimal = Field(ge=0)  # per `per` units


class CategoryPrice(_Strict):
    """Price of one category. `usd` is per `per` units (default: per million tokens; for
    `requests` per 1000 requests). graduated: each tier prices the units inside it; volume:
    all units at the tier the total falls in; package: every started package of `per` units."""

    scheme: Literal["unit", "graduated", "volume", "package"] = "unit"
    usd: Decimal | None = Field(default=None, ge=0)
    per: int | None = Field(default=None, gt=0)
    tiers: list[Tier] | None = None

    @model_validator(mode="after")
    def _check(self) -> "CategoryPrice":
        if self.scheme in ("unit", "package") and self.usd is None:
            raise ValueError(f"scheme '{self.scheme}' needs usd")
        if self.scheme in ("graduated", "volume"):
            if not self.tiers:
                raise ValueError(f"scheme '{self.scheme}' needs tiers")
            bounds = [t.up_to for t in self.tiers]
            if any(b is None for b in bounds[:-1]):
                raise ValueError("only the last tier may omit up_to")
            finite = [b for b in bounds if b is not None]
            if finite != sorted(set(finite)):
                raise ValueError("tier up_to values must increase")
        return self


UsagePricing = dict[Literal["input", "cached_input", "output", "requests"], CategoryPrice]


class Cap(_Strict):
    window: str  # "5h", "1w"
    limit: int = Field(gt=0)
    unit: Literal["requests", "tokens"] = "requests"
    at_cap: Literal["block", "downgrade", "overage"] = "block"
    downgrade_group: str | None = None
    overage: UsagePricing | None = None  # price of requests made over the cap

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        window_seconds(v)
        return v

    @model_validator(mode="after")
    def _action(self) -> "Cap":
        if self.at_cap == "downgrade" and not self.downgrade_group:
            raise ValueError("at_cap: downgrade needs downgrade_group")
        if self.at_cap == "overage" and not self.overage:
            raise ValueError("at_cap: overage needs overage prices")
        return self

    @property
    def window_seconds(self) -> float:
        return window_seconds(self.window)

    @property
    def label(self) -> str:
        return f"{self.limit} {self.unit}/{self.window} ({self.at_cap})"


class CostPlus(_Strict):
    """price = serving cost x (1 + markup). The ledger stores one cost per event; the cost of
    each category is apportioned by tokens x cost_weights (exact when all markups are equal)."""

    markup: Decimal | dict[Literal["input", "cached_input", "output"], Decimal] = Decimal("0.2")
    cost_weights: dict[Literal["input", "cached_input", "output"], Decimal] = Field(
        default_factory=lambda: {"input": Decimal(1), "cached_input": Decimal("0.25"), "output": Decimal(4)})

    def markup_for(self, category: str) -> Decimal:
        if isinstance(self.markup, dict):
            return self.markup.get(category, Decimal(0))
        return self.markup


class Plan(_Strict):
    name: str = ""
    description: str = ""
    model_group: str | None = None  # which model group serves it (simulator's serving cost)
    subscription_usd: Decimal | None = Field(default=None, ge=0)
    caps: list[Cap] = Field(default_factory=list)
    usage: UsagePricing | None = None
    free: dict[Literal["input", "cached_input", "output", "requests"], int] = Field(default_factory=dict)
    cost_plus: CostPlus | None = None
    list_price: bool = False
    minimum_commitment_usd: Decimal | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _something(self) -> "Plan":
        if not (self.subscription_usd is not None or self.usage or self.cost_plus or self.list_price
                or self.minimum_commitment_usd is not None):
            raise ValueError("a plan needs at least one of subscription_usd, usage, cost_plus, list_price, "
                             "minimum_commitment_usd")
        return self

    @property
    def kind(self) -> str:
        if self.cost_plus:
            return "cost_plus"
        if self.list_price:
            return "list"
        if self.subscription_usd is not None and not self.usage:
            return "flat"
        return "usage"


class Subscription(_Strict):
    plan: str
    start: float  # epoch s; the plan applies from here until the next subscription's start

    @field_validator("start", mode="before")
    @classmethod
    def _t(cls, v: Any) -> float:
        return to_epoch(v)


class CreditGrant(_Strict):
    id: str
    amount_usd: Decimal = Field(gt=0)
    priority: int = 0  # lower draws first
    granted_at: float
    expires_at: float | None = None

    @field_validator("granted_at", "expires_at", mode="before")
    @classmethod
    def _t(cls, v: Any) -> float | None:
        return None if v is None else to_epoch(v)


class TenantBilling(_Strict):
    subscriptions: list[Subscription] = Field(default_factory=list)
    credits: list[CreditGrant] = Field(default_factory=list)

    @model_validator(mode="after")
    def _order(self) -> "TenantBilling":
        starts = [s.start for s in self.subscriptions]
        if starts != sorted(starts):
            raise ValueError("subscriptions must be in start order")
        ids = [c.id for c in self.credits]
        if len(ids) != len(set(ids)):
            raise ValueError("credit ids must be unique")
        return self


class BillingSettings(_Strict):
    currency: Literal["USD"] = "USD"
    grace_hours: float = Field(default=72.0, ge=0)  # late events recorded within it bill in their own period

    @property
    def grace_seconds(self) -> float:
        return self.grace_hours * 3600.0


class PlanBook(_Strict):
    billing: BillingSettings = Field(default_factory=BillingSettings)
    model_groups: dict[str, Pricing] = Field(default_factory=dict)
    plans: dict[str, Plan]
    default_plan: str = LIST_PLAN
    tenants: dict[str, TenantBilling] = Field(default_factory=dict)

    @field_validator("plans", mode="before")
    @classmethod
    def _named(cls, v: Any) -> Any:
        # accept a list of {name: ...} or a mapping name -> plan
        if isinstance(v, list):
            out = {}
            for i, p in enumerate(v):
                if not isinstance(p, dict) or not p.get("name"):
                    raise ValueError(f"plans[{i}] needs a name")
                out[p["name"]] = p
            return out
        if isinstance(v, dict):
            return {k: {**p, "name": k} if isinstance(p, dict) else p for k, p in v.items()}
        return v

    @model_validator(mode="after")
    def _refs(self) -> "PlanBook":
        names = set(self.plans) | {LIST_PLAN}
        if self.default_plan not in names:
            raise ValueError(f"default_plan: unknown plan '{self.default_plan}'")
        for pname, plan in self.plans.items():
            groups = [plan.model_group] + [c.downgrade_group for c in plan.caps]
            for g in groups:
                if g is not None and self.model_groups and g not in self.model_groups:
                    raise ValueError(f"plans.{pname}: unknown model group '{g}'")
        for tname, t in self.tenants.items():
            for s in t.subscriptions:
                if s.plan not in names:
                    raise ValueError(f"tenants.{tname}.subscriptions: unknown plan '{s.plan}'")
        return self

    def plan(self, name: str) -> Plan:
        if name == LIST_PLAN and LIST_PLAN not in self.plans:
            return Plan(name=LIST_PLAN, description="gateway list price (pass-through)", list_price=True)
        try:
            return self.plans[name]
        except KeyError:
            raise UnknownNameError("plan", name, list(self.plans)) from None

    def tenant(self, name: str) -> TenantBilling:
        return self.tenants.get(name) or TenantBilling()

    def plan_at(self, tenant: str, ts: float) -> str:
        current = self.default_plan
        for s in self.tenant(tenant).subscriptions:
            if s.start <= ts:
                current = s.plan
        return current

    def segments(self, tenant: str, start: float, end: float) -> list[tuple[str, float, float]]:
        """[(plan, seg_start, seg_end)] covering [start, end) in order."""
        cuts = sorted({start, end, *(s.start for s in self.tenant(tenant).subscriptions if start < s.start < end)})
        out: list[tuple[str, float, float]] = []
        for a, b in zip(cuts, cuts[1:]):
            name = self.plan_at(tenant, a)
            if out and out[-1][0] == name:
                out[-1] = (name, out[-1][1], b)
            else:
                out.append((name, a, b))
        return out


def empty_book() -> PlanBook:
    return PlanBook(plans={})


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_plans(data: Any, *, origin: str = "plans") -> PlanBook:
    if not isinstance(data, dict) or "plans" not in data:
        raise ConfigError(f"{origin}: expected a mapping with a top-level 'plans:'")
    try:
        return PlanBook.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _path(tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        raise ConfigError(f"{origin}: {loc}: {msg}" if loc else f"{origin}: {msg}") from None


def load_plans(path: Path | str) -> PlanBook:
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read plans file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_plans(data, origin=str(p))
