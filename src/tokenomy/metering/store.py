"""Storage interfaces. `Ledger` keeps the durable records (events, keys, tenants, admin);
`CounterStore` keeps fast, shared counters (budget spend + reservations, rate-limit buckets).

Defaults: SQLite ledger + in-process counters; PostgreSQL / Redis implementations can slot in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tokenomy.metering.types import KeyRecord, TenantRecord, UsageEvent, UserCap

Scope = tuple[str, str, str, str]  # (kind "key"|"tenant"|"user", subject, period, period_key); user: "tenant/user"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A notable thing, recorded once per (kind, scope, subject, period_key): e.g. soft_limit."""

    kind: str
    scope: str
    subject: str
    period_key: str
    ts: float
    message: str


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One administrative change (append-only `admin_audit`): who (the admin key id, or "cli"),
    what (action, e.g. key.revoke), on what (target, e.g. key:k_ab12), the record before and after
    (JSON-ready, never a secret or a hash), when (the metering clock)."""

    ts: float
    actor: str
    action: str
    target: str
    before: dict | None
    after: dict | None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Totals of the events of one (model, deployment) group."""

    model: str
    deployment: str
    requests: int
    errors: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_pusd: int
    price_pusd: int
    energy_joules: float


class Ledger(Protocol):
    # events: append is one durable transaction; True per event newly recorded, False if its id existed
    def append(self, events: Sequence[UsageEvent], audits: Sequence[AuditRecord] = ()) -> list[bool]: ...
    def spend_pusd(self, *, kind: str, subject: str, since: float | None, until: float | None) -> int: ...
    def usage_rows(self, tenant: str | None, since: float | None, until: float | None) -> list[UsageRow]: ...
    def events(self, tenant: str | None, since: float | None, until: float | None, limit: int) -> list[UsageEvent]: ...
    def count_event(self, event_id: str) -> int: ...
    def audits(self, kind: str | None = None) -> list[AuditRecord]: ...
    # tenants and keys
    def create_tenant(self, tenant: TenantRecord, *, exist_ok: bool) -> bool: ...
    def get_tenant(self, name: str) -> TenantRecord | None: ...
    def list_tenants(self) -> list[TenantRecord]: ...
    def insert_key(self, key: KeyRecord) -> None: ...
    def get_key(self, key_id: str) -> KeyRecord | None: ...
    def list_keys(self, tenant: str | None) -> list[KeyRecord]: ...
    def revoke_key(self, key_id: str, ts: float) -> bool: ...
    # administrative changes: the record and its audit row in one transaction (False: no such record)
    def update_key(self, key: KeyRecord, change: ChangeRecord) -> bool: ...
    def update_tenant(self, tenant: TenantRecord, change: ChangeRecord) -> bool: ...
    def record_change(self, change: ChangeRecord) -> None: ...
    def changes(self, limit: int, target: str | None = None) -> list[ChangeRecord]: ...  # newest first
    # end-user caps within a tenant (user "*": the tenant's default); cap None deletes
    def user_caps(self, tenant: str) -> list[UserCap]: ...
    def set_user_cap(self, tenant: str, user: str, cap: UserCap | None, change: ChangeRecord) -> bool: ...
    # admin key (hash only)
    def get_admin_hash(self) -> str | None: ...
    def set_admin_hash(self, key_hash: str, *, replace: bool) -> str: ...
    def close(self) -> None: ...


class CounterStore(Protocol):
    # budgets: committed spend per scope (loaded lazily from the ledger) plus outstanding reservations
    def is_loaded(self, scope: Scope) -> bool: ...
    def load(self, scope: Scope, spent_pusd: int) -> None: ...
    def try_reserve(self, limits: Sequence[tuple[Scope, int]], amount_pusd: int) -> tuple[Scope, int, int, int] | None: ...
    # grow a held reservation on all its scopes or none (False: a limit, or not held any more)
    def top_up(self, limits: Sequence[tuple[Scope, int]], held_pusd: int, extra_pusd: int) -> bool: ...
    def unreserve(self, scopes: Sequence[Scope], amount_pusd: int) -> None: ...
    def add_spent(self, scopes: Sequence[Scope], amount_pusd: int) -> None: ...
    def spent(self, scope: Scope) -> tuple[int, int]: ...
    # rate limits: take from several token buckets atomically; 0.0 if taken, else seconds to wait
    def take(self, buckets: Sequence[tuple[str, float, float, float]], now: float) -> float: ...
