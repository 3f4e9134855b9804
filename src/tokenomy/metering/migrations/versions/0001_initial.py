"""Initial PostgreSQL ledger: tenants, keys, admin, audit; events partitioned by month on ts
(partitions created on demand by the ledger), event_ids dedup table, hourly usage rollup.

Money: BIGINT pico-USD per event (exact, like the SQLite ledger); NUMERIC sums in the rollup
so totals above 2^63 pUSD (~$9.2M) stay exact.

Revision ID: 0001
Revises:
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATEMENTS = [
    """CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        created DOUBLE PRECISION NOT NULL,
        budget_pusd BIGINT,
        budget_period TEXT NOT NULL DEFAULT 'total',
        soft_budget_pusd BIGINT)""",
    """CREATE TABLE keys (
        key_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL REFERENCES tenants(name),
        name TEXT,
        secret_hash TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION,
        budget_pusd BIGINT,
        budget_period TEXT NOT NULL DEFAULT 'total',
        soft_budget_pusd BIGINT,
        rpm INTEGER,
        tpm INTEGER)""",
    "CREATE INDEX keys_tenant ON keys(tenant)",
    """CREATE TABLE admin (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        key_hash TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        scope TEXT NOT NULL,
        subject TEXT NOT NULL,
        period_key TEXT NOT NULL,
        message TEXT NOT NULL,
        UNIQUE (kind, scope, subject, period_key))""",
    # idempotency: a unique id over all partitions (a partitioned table's unique keys must
    # include the partition key, so the id alone cannot be unique on events itself)
    """CREATE TABLE event_ids (
        id TEXT PRIMARY KEY)""",
    """CREATE TABLE events (
        id TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        tenant TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT NOT NULL,
        input_tokens BIGINT NOT NULL,
        cached_input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cost_pusd BIGINT NOT NULL,
        price_pusd BIGINT NOT NULL,
        energy_joules DOUBLE PRECISION NOT NULL,
        ttft_ms DOUBLE PRECISION,
        latency_ms DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        estimated BOOLEAN NOT NULL DEFAULT FALSE,
        http_status INTEGER NOT NULL DEFAULT 200,
        extra JSONB,
        recorded_at DOUBLE PRECISION NOT NULL
    ) PARTITION BY RANGE (ts)""",
    "CREATE INDEX events_tenant_ts ON events(tenant, ts)",
    "CREATE INDEX events_key_ts ON events(key_id, ts)",
    # BRIN: ts arrives nearly in order; a tiny index, nearly free to maintain on insert
    "CREATE INDEX events_ts ON events USING brin (ts)",
    # hourly rollup per tenant/model/deployment, maintained in the event transaction (usage,
    # tenant budgets); key budgets read events by (key_id, ts). fillfactor leaves room for
    # HOT updates: the counters change, the indexed columns never do.
    """CREATE TABLE usage_hourly (
        hour DOUBLE PRECISION NOT NULL,
        tenant TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT NOT NULL,
        requests BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        input_tokens NUMERIC NOT NULL,
        cached_input_tokens NUMERIC NOT NULL,
        output_tokens NUMERIC NOT NULL,
        reasoning_tokens NUMERIC NOT NULL,
        cost_pusd NUMERIC NOT NULL,
        price_pusd NUMERIC NOT NULL,
        energy_joules DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (hour, tenant, model, deployment)) WITH (fillfactor = 70)""",
    "CREATE INDEX usage_hourly_tenant ON usage_hourly(tenant, hour)",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in ("usage_hourly", "events", "event_ids", "audit", "admin", "keys", "tenants"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
