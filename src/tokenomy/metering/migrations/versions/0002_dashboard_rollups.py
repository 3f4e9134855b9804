"""Dashboard rollups on PostgreSQL: the same tables as the SQLite ledger's `rollup_*`, folded on
read from `events` (tokenomy.dashboard.pg_rollups), never in the insert transaction.

The fold needs to know which events it has already seen although concurrent writers commit
out of order: each event now records its writing transaction (`events.txid`, a column default,
so the insert statement is unchanged) and the fold keeps the snapshot it last read
(xmin, xmax, in-progress xids). An event is new iff its transaction was not visible in that
snapshot. Existing rows keep txid NULL (adding the column rewrites nothing); the first fold,
which has no snapshot yet, takes every row. BRIN on txid: rows arrive in txid order, so the
index is tiny and nearly free to maintain, and a fold reads only the recent block ranges.

Money sums are NUMERIC (exact past 2^63 pUSD), like usage_hourly.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SUMS = """
        requests BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL,
        cached_input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cost_pusd NUMERIC NOT NULL,
        price_pusd NUMERIC NOT NULL,
        energy_joules DOUBLE PRECISION NOT NULL,
        latency_ms_sum DOUBLE PRECISION NOT NULL,
        ttft_ms_sum DOUBLE PRECISION NOT NULL,
        ttft_n BIGINT NOT NULL,
        routed BIGINT NOT NULL,
        strong BIGINT NOT NULL,
        pq_sum DOUBLE PRECISION NOT NULL,
        pq_n BIGINT NOT NULL"""

STATEMENTS = [
    "ALTER TABLE events ADD COLUMN txid BIGINT",
    "ALTER TABLE events ALTER COLUMN txid SET DEFAULT (pg_current_xact_id()::text::bigint)",
    "CREATE INDEX events_txid ON events USING brin (txid) WITH (autosummarize = on)",
    """CREATE TABLE rollup_state (
        name TEXT PRIMARY KEY,
        snap_xmin BIGINT,
        snap_xmax BIGINT,
        snap_xip BIGINT[],
        folded BIGINT NOT NULL DEFAULT 0,
        updated DOUBLE PRECISION NOT NULL DEFAULT 0)""",
    "INSERT INTO rollup_state (name) VALUES ('events')",
    *(f"""CREATE TABLE rollup_{res} (
        bucket BIGINT NOT NULL,
        tenant TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT NOT NULL,{_SUMS},
        PRIMARY KEY (bucket, tenant, model, deployment))""" for res in ("minute", "hour", "day")),
    *(f"""CREATE TABLE rollup_key_{res} (
        bucket BIGINT NOT NULL,
        tenant TEXT NOT NULL,
        key_id TEXT NOT NULL,
        requests BIGINT NOT NULL,
        tokens BIGINT NOT NULL,
        price_pusd NUMERIC NOT NULL,
        PRIMARY KEY (bucket, tenant, key_id))""" for res in ("minute", "day")),
    "CREATE INDEX rollup_key_day_key ON rollup_key_day (key_id, bucket)",
    "CREATE INDEX rollup_key_minute_bucket ON rollup_key_minute (bucket)",
    "CREATE INDEX rollup_day_tenant ON rollup_day (tenant, bucket)",
    *(f"""CREATE TABLE rollup_hist_{res} (
        bucket BIGINT NOT NULL,
        tenant TEXT NOT NULL,
        deployment TEXT NOT NULL,
        metric TEXT NOT NULL,
        bin INTEGER NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (bucket, tenant, deployment, metric, bin))""" for res in ("hour", "day")),
]

TABLES = ("rollup_hist_day", "rollup_hist_hour", "rollup_key_day", "rollup_key_minute", "rollup_day", "rollup_hour",
          "rollup_minute", "rollup_state")


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("DROP INDEX IF EXISTS events_txid")
    op.execute("ALTER TABLE events DROP COLUMN IF EXISTS txid")
