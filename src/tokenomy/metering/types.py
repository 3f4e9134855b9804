"""The records metering deals in: usage events, principals, reservations, keys, tenants."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

STATUSES = ("ok", "error", "cancelled", "upstream_error")


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One immutable record per request; `id` is the idempotency key."""

    id: str
    ts: float
    tenant: str
    key_id: str
    model: str
    deployment: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal  # what serving it cost us, at the deployment's price
    price_usd: Decimal  # what the tenant pays; budgets count this
    energy_joules: float
    ttft_ms: float | None
    latency_ms: float
    status: str  # "ok" | "error" | "cancelled" | "upstream_error"
    estimated: bool = False  # token counts came from our tokenizer, not the upstream
    http_status: int = 200
    extra: dict | None = None  # routing decision etc (JSON-serialisable)
    cache_write_tokens: int = 0  # of input_tokens, written to the provider's prompt cache (Anthropic)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key of a tenant, or the admin; `user` is the end user the request is for
    (its OpenAI `user` field), set per request by the gateway: end-user caps apply to it."""

    key_id: str
    tenant: str
    is_admin: bool = False
    user: str | None = None


@dataclass(slots=True, eq=False)
class Reservation:
    """Worst-case spend held against budgets until settled (commit) or released."""

    id: int
    key_id: str
    tenant: str
    amount_usd: Decimal
    amount_pusd: int
    scopes: tuple[tuple[str, str, str, str], ...]  # (kind, subject, period, period_key)
    settled: bool = False
    limits_pusd: tuple[int, ...] = ()  # each scope's hard limit when reserved (top-ups check it)


@dataclass(frozen=True, slots=True)
class Budget:
    """A hard (and optional soft) spending limit over a UTC calendar period."""

    budget_pusd: int | None
    period: str = "total"
    soft_budget_pusd: int | None = None


@dataclass(frozen=True, slots=True)
class TenantRecord:
    name: str
    created: float
    budget: Budget = field(default_factory=lambda: Budget(None))


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    tenant: str
    name: str | None
    secret_hash: str
    created: float
    revoked_at: float | None
    budget: Budget
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True, slots=True)
class UserCap:
    """A cap on one end user (the request's OpenAI `user` field) within a tenant; user "*" is the
    tenant's default for every user without a cap of their own."""

    tenant: str
    user: str
    budget: Budget = field(default_factory=lambda: Budget(None))
    rpm: int | None = None
    tpm: int | None = None


DEFAULT_USER = "*"
