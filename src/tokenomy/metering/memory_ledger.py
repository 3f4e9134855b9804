"""An in-process Ledger (tests, ephemeral gateways): same behaviour as SQLite, nothing durable."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from tokenomy.metering.money import to_pusd
from tokenomy.metering.changes import split_user_subject
from tokenomy.metering.store import AuditRecord, ChangeRecord, UsageRow
from tokenomy.metering.types import KeyRecord, TenantRecord, UsageEvent, UserCap


def _in_range(ts: float, since: float | None, until: float | None) -> bool:
    return (since is None or ts >= since) and (until is None or ts < until)


class MemoryLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, UsageEvent] = {}
        self._audits: dict[tuple[str, str, str, str], AuditRecord] = {}
        self._tenants: dict[str, TenantRecord] = {}
        self._keys: dict[str, KeyRecord] = {}
        self._admin_hash: str | None = None
        self._changes: list[ChangeRecord] = []
        self._user_caps: dict[tuple[str, str], UserCap] = {}

    def append(self, events: Sequence[UsageEvent], audits: Sequence[AuditRecord] = ()) -> list[bool]:
        with self._lock:
            out = []
            for event in events:
                new = event.id not in self._events
                if new:
                    self._events[event.id] = event
                out.append(new)
            for a in audits:
                self._audits.setdefault((a.kind, a.scope, a.subject, a.period_key), a)
            return out

    def _selected(self, tenant, since, until) -> list[UsageEvent]:
        with self._lock:
            return [
                e for e in self._events.values()
                if (tenant is None or e.tenant == tenant) and _in_range(e.ts, since, until)
            ]

    def spend_pusd(self, *, kind: str, subject: str, since: float | None, until: float | None) -> int:
        with self._lock:
            if kind == "user":
                tenant, user = split_user_subject(subject)
                return sum(to_pusd(e.price_usd) for e in self._events.values()
                           if e.tenant == tenant and (e.extra or {}).get("user") == user and _in_range(e.ts, since, until))
            field = "key_id" if kind == "key" else "tenant"
            return sum(
                to_pusd(e.price_usd) for e in self._events.values()
                if getattr(e, field) == subject and _in_range(e.ts, since, until)
            )

    def usage_rows(self, tenant, since, until) -> list[UsageRow]:
        groups: dict[tuple[str, str], list[UsageEvent]] = {}
        for e in self._selected(tenant, since, until):
            groups.setdefault((e.model, e.deployment), []).append(e)
        return [
            UsageRow(
                model=m, deployment=d, requests=len(es), errors=sum(e.status != "ok" for e in es),
                input_tokens=sum(e.input_tokens for e in es),
                cached_input_tokens=sum(e.cached_input_tokens for e in es),
                output_tokens=sum(e.output_tokens for e in es),
                reasoning_tokens=sum(e.reasoning_tokens for e in es),
                cost_pusd=sum(to_pusd(e.cost_usd) for e in es),
                price_pusd=sum(to_pusd(e.price_usd) for e in es),
                energy_joules=sum(e.energy_joules for e in es),
            )
            for (m, d), es in sorted(groups.items())
        ]

    def events(self, tenant, since, until, limit: int) -> list[UsageEvent]:
        return sorted(self._selected(tenant, since, until), key=lambda e: (-e.ts, e.id))[:limit]

    def count_event(self, event_id: str) -> int:
        return int(event_id in self._events)

    def audits(self, kind: str | None = None) -> list[AuditRecord]:
        with self._lock:
            return [a for a in self._audits.values() if kind is None or a.kind == kind]

    def create_tenant(self, tenant: TenantRecord, *, exist_ok: bool) -> bool:
        with self._lock:
            if tenant.name in self._tenants:
                if exist_ok:
                    return False
                from tokenomy.metering.errors import Conflict

                raise Conflict(f"tenant '{tenant.name}' already exists")
            self._tenants[tenant.name] = tenant
            return True

    def get_tenant(self, name: str) -> TenantRecord | None:
        return self._tenants.get(name)

    def list_tenants(self) -> list[TenantRecord]:
        return sorted(self._tenants.values(), key=lambda t: t.name)

    def insert_key(self, key: KeyRecord) -> None:
        with self._lock:
            self._keys[key.key_id] = key

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def list_keys(self, tenant: str | None) -> list[KeyRecord]:
        keys = [k for k in self._keys.values() if tenant is None or k.tenant == tenant]
        return sorted(keys, key=lambda k: (k.created, k.key_id))

    def revoke_key(self, key_id: str, ts: float) -> bool:
        with self._lock:
            key = self._keys.get(key_id)
            if key is None:
                return False
            if key.revoked_at is None:
                self._keys[key_id] = replace(key, revoked_at=ts)
            return True

    def _change(self, change: ChangeRecord) -> None:
        self._changes.append(replace(change, id=len(self._changes) + 1))

    def update_key(self, key: KeyRecord, change: ChangeRecord) -> bool:
        with self._lock:
            if key.key_id not in self._keys:
                return False
            self._keys[key.key_id] = key
            self._change(change)
            return True

    def update_tenant(self, tenant: TenantRecord, change: ChangeRecord) -> bool:
        with self._lock:
            if tenant.name not in self._tenants:
                return False
            self._tenants[tenant.name] = tenant
            self._change(change)
            return True

    def record_change(self, change: ChangeRecord) -> None:
        with self._lock:
            self._change(change)

    def changes(self, limit: int, target: str | None = None) -> list[ChangeRecord]:
        with self._lock:
            rows = [c for c in reversed(self._changes) if target is None or c.target == target]
        return rows[:limit]

    def user_caps(self, tenant: str) -> list[UserCap]:
        with self._lock:
            return sorted((c for (t, _), c in self._user_caps.items() if t == tenant), key=lambda c: c.user)

    def set_user_cap(self, tenant: str, user: str, cap: UserCap | None, change: ChangeRecord) -> bool:
        with self._lock:
            if cap is None and self._user_caps.pop((tenant, user), None) is None:
                return False
            if cap is not None:
                self._user_caps[(tenant, user)] = cap
            self._change(change)
            return True

    def get_admin_hash(self) -> str | None:
        return self._admin_hash

    def set_admin_hash(self, key_hash: str, *, replace: bool) -> str:
        with self._lock:
            if replace or self._admin_hash is None:
                self._admin_hash = key_hash
            return self._admin_hash

    def close(self) -> None:
        pass
