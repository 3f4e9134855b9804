"""The administrative audit trail's rows, shared by the SQLite and PostgreSQL ledgers, and the
end-user budget scope's subject ("tenant/user": tenant names cannot hold a '/')."""

from __future__ import annotations

import json

from tokenomy.metering.store import ChangeRecord
from tokenomy.metering.types import Budget, KeyRecord, TenantRecord, UserCap

CHANGE_COLS = "id, ts, actor, action, target, before, after"
USER_CAP_COLS = "tenant, user_id, budget_pusd, budget_period, rpm, tpm"


# Statements of each change, with `?` placeholders (the PostgreSQL ledger rewrites them to %s):
# the record's statement first (a ledger commits only if it changed a row), then its audit row.
Statements = list[tuple[str, tuple]]
_INSERT_CHANGE = "INSERT INTO admin_audit (ts, actor, action, target, before, after) VALUES (?,?,?,?,?,?)"


def key_update(key: KeyRecord, change: ChangeRecord) -> Statements:
    b = key.budget
    return [("UPDATE keys SET name = ?, secret_hash = ?, revoked_at = ?, budget_pusd = ?, budget_period = ?, "
             "soft_budget_pusd = ?, rpm = ?, tpm = ? WHERE key_id = ?",
             (key.name, key.secret_hash, key.revoked_at, b.budget_pusd, b.period, b.soft_budget_pusd, key.rpm,
              key.tpm, key.key_id)), change_insert(change)]


def tenant_update(tenant: TenantRecord, change: ChangeRecord) -> Statements:
    b = tenant.budget
    return [("UPDATE tenants SET budget_pusd = ?, budget_period = ?, soft_budget_pusd = ? WHERE name = ?",
             (b.budget_pusd, b.period, b.soft_budget_pusd, tenant.name)), change_insert(change)]


def user_cap_change(tenant: str, user: str, cap: UserCap | None, change: ChangeRecord) -> Statements:
    """Upsert (or, cap None, delete) an end-user cap, and its audit row."""
    if cap is None:
        return [("DELETE FROM user_caps WHERE tenant = ? AND user_id = ?", (tenant, user)), change_insert(change)]
    return [(f"INSERT INTO user_caps ({USER_CAP_COLS}) VALUES (?,?,?,?,?,?) ON CONFLICT (tenant, user_id) DO UPDATE "
             "SET budget_pusd = excluded.budget_pusd, budget_period = excluded.budget_period, rpm = excluded.rpm, "
             "tpm = excluded.tpm", user_cap_params(cap)), change_insert(change)]


def change_insert(change: ChangeRecord) -> tuple[str, tuple]:
    return _INSERT_CHANGE, change_params(change)


def changes_query(limit: int, target: str | None) -> tuple[str, tuple]:
    if target is None:
        return f"SELECT {CHANGE_COLS} FROM admin_audit ORDER BY id DESC LIMIT ?", (limit,)
    return f"SELECT {CHANGE_COLS} FROM admin_audit WHERE target = ? ORDER BY id DESC LIMIT ?", (target, limit)


USER_CAPS_QUERY = f"SELECT {USER_CAP_COLS} FROM user_caps WHERE tenant = ? ORDER BY user_id"


def _text(d: dict | None) -> str | None:
    return None if d is None else json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)


def change_params(c: ChangeRecord) -> tuple:
    """(ts, actor, action, target, before, after) for an INSERT."""
    return (float(c.ts), c.actor, c.action, c.target, _text(c.before), _text(c.after))


def change_of(r) -> ChangeRecord:
    return ChangeRecord(id=int(r[0]), ts=float(r[1]), actor=r[2], action=r[3], target=r[4],
                        before=None if r[5] is None else json.loads(r[5]),
                        after=None if r[6] is None else json.loads(r[6]))


def user_cap_params(cap: UserCap) -> tuple:
    b = cap.budget
    return (cap.tenant, cap.user, b.budget_pusd, b.period, cap.rpm, cap.tpm)


def user_cap_of(r) -> UserCap:
    return UserCap(tenant=r[0], user=r[1], budget=Budget(r[2], r[3]), rpm=r[4], tpm=r[5])


def user_subject(tenant: str, user: str) -> str:
    return f"{tenant}/{user}"


def split_user_subject(subject: str) -> tuple[str, str]:
    tenant, _, user = subject.partition("/")
    return tenant, user
