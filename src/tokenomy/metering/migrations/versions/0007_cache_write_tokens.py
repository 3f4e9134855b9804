"""Cache-write tokens (Anthropic cache_creation_input_tokens) per event: a token category priced
of its own (the price map's cache_creation_input_token_cost). Existing events wrote none.

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On the partitioned parent: every monthly partition gets the column too.
    op.execute("ALTER TABLE events ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE events DROP COLUMN cache_write_tokens")
