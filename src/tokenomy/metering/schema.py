"""Ledger schema as forward-only migrations; `schema_version` records the applied ones.

Money is integer pico-USD (`*_pusd`). Secrets never appear: keys and admin hold hashes only.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: tenants, keys, events, admin, audit
    [
        """CREATE TABLE tenants (
            name TEXT PRIMARY KEY,
            created REAL NOT NULL,
            budget_pusd INTEGER,
            budget_period TEXT NOT NULL DEFAULT 'total',
            soft_budget_pusd INTEGER)""",
        """CREATE TABLE keys (
            key_id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL REFERENCES tenants(name),
            name TEXT,
            secret_hash TEXT NOT NULL,
            created REAL NOT NULL,
            revoked_at REAL,
            budget_pusd INTEGER,
            budget_period TEXT NOT NULL DEFAULT 'total',
            soft_budget_pusd INTEGER,
            rpm INTEGER,
            tpm INTEGER)""",
        "CREATE INDEX keys_tenant ON keys(tenant)",
        """CREATE TABLE events (
            id TEXT PRIMARY KEY,
            ts REAL NOT NULL,
            tenant TEXT NOT NULL,
            key_id TEXT NOT NULL,
            model TEXT NOT NULL,
            deployment TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            cached_input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            cost_pusd INTEGER NOT NULL,
            price_pusd INTEGER NOT NULL,
            energy_joules REAL NOT NULL,
            ttft_ms REAL,
            latency_ms REAL NOT NULL,
            status TEXT NOT NULL,
            estimated INTEGER NOT NULL DEFAULT 0,
            http_status INTEGER NOT NULL DEFAULT 200,
            extra TEXT,
            recorded_at REAL NOT NULL)""",
        "CREATE INDEX events_tenant_ts ON events(tenant, ts)",
        "CREATE INDEX events_key_ts ON events(key_id, ts)",
        "CREATE INDEX events_ts ON events(ts)",
        """CREATE TABLE admin (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            key_hash TEXT NOT NULL,
            created REAL NOT NULL)""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            scope TEXT NOT NULL,
            subject TEXT NOT NULL,
            period_key TEXT NOT NULL,
            message TEXT NOT NULL,
            UNIQUE (kind, scope, subject, period_key))""",
    ],
    # 2: cache-write tokens (Anthropic cache_creation_input_tokens), a category priced of its own
    ["ALTER TABLE events ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0"],
    # 3: administrative changes (append-only: triggers refuse UPDATE and DELETE) and end-user caps
    [
        """CREATE TABLE admin_audit (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            before TEXT,
            after TEXT)""",
        "CREATE INDEX admin_audit_target ON admin_audit(target, id)",
        """CREATE TRIGGER admin_audit_no_update BEFORE UPDATE ON admin_audit
            BEGIN SELECT RAISE(ABORT, 'admin_audit is append-only'); END""",
        """CREATE TRIGGER admin_audit_no_delete BEFORE DELETE ON admin_audit
            BEGIN SELECT RAISE(ABORT, 'admin_audit is append-only'); END""",
        """CREATE TABLE user_caps (
            tenant TEXT NOT NULL REFERENCES tenants(name),
            user_id TEXT NOT NULL,
            budget_pusd INTEGER,
            budget_period TEXT NOT NULL DEFAULT 'total',
            rpm INTEGER,
            tpm INTEGER,
            PRIMARY KEY (tenant, user_id))""",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)
