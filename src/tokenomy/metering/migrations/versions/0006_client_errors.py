"""Client errors apart from upstream failures (issue 20): `errors` in the rollups counted every
event whose status was not ok, so a healthy deployment showed a 5 % error rate from clients'
bad requests (400) and abandoned ones (499). From now on `errors` counts upstream failures
only (status upstream_error) and `client_errors` counts the rest (error, cancelled).
The rollups are derived from `events`, so they are emptied and refolded from scratch (the
fold's snapshot is cleared: the next fold takes every row), as the SQLite ledger does when
its ROLLUP_SCHEMA changes.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_USAGE = tuple(f"rollup_{res}" for res in ("minute", "hour", "day"))
_DERIVED = (*_USAGE, "rollup_key_minute", "rollup_key_day", "rollup_hist_hour", "rollup_hist_day")


def _refold() -> None:
    op.execute(f"TRUNCATE {', '.join(_DERIVED)}")
    op.execute("UPDATE rollup_state SET snap_xmin = NULL, snap_xmax = NULL, snap_xip = NULL, folded = 0 "
               "WHERE name = 'events'")


def upgrade() -> None:
    for table in _USAGE:
        op.execute(f"ALTER TABLE {table} ADD COLUMN client_errors NUMERIC NOT NULL DEFAULT 0")
    _refold()


def downgrade() -> None:
    for table in _USAGE:
        op.execute(f"ALTER TABLE {table} DROP COLUMN client_errors")
    _refold()
