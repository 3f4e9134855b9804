"""Dedup retention: event_ids gets the event's ts, so ids older than the retention window can
be pruned (PostgresLedger.prune_event_ids). A BRIN index on ts: ids arrive nearly in ts order,
so it is tiny and nearly free on insert. Existing ids take their event's ts.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE event_ids ADD COLUMN ts DOUBLE PRECISION")
    op.execute("UPDATE event_ids i SET ts = e.ts FROM events e WHERE e.id = i.id")
    op.execute("CREATE INDEX event_ids_ts ON event_ids USING brin (ts) WITH (autosummarize = on)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS event_ids_ts")
    op.execute("ALTER TABLE event_ids DROP COLUMN IF EXISTS ts")
