"""Router feedback on PostgreSQL: the outcome labels of POST /v1/feedback and the prompts kept
for `tokenomy route train --from-ledger` (routing.store_prompts), shared by every replica.
Same columns as the SQLite tables of routing/feedback.py.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""CREATE TABLE route_feedback (
        request_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        score DOUBLE PRECISION NOT NULL CHECK (score >= 0 AND score <= 1),
        ts DOUBLE PRECISION NOT NULL,
        prompt_sha256 TEXT)""")
    op.execute("""CREATE TABLE route_prompts (
        request_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        prompt_sha256 TEXT NOT NULL,
        prompt TEXT NOT NULL)""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS route_prompts")
    op.execute("DROP TABLE IF EXISTS route_feedback")
