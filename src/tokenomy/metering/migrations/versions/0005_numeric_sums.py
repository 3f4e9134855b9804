"""Overflow-safe sums (issue 14 §1): every counter of the rollups is NUMERIC. Four events of
10^18 tokens overflowed a BIGINT rollup column, the fold failed on every read and every
dashboard read returned 500 for every tenant, even after a restart. Per-event columns stay
BIGINT (one event's counts are bounded before they are recorded); sums never are.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COUNTERS = {
    **{f"rollup_{res}": ("requests", "errors", "input_tokens", "cached_input_tokens", "output_tokens",
                         "reasoning_tokens", "ttft_n", "routed", "strong", "pq_n") for res in ("minute", "hour", "day")},
    **{f"rollup_key_{res}": ("requests", "tokens") for res in ("minute", "day")},
    **{f"rollup_hist_{res}": ("n",) for res in ("hour", "day")},
    "usage_hourly": ("requests", "errors"),
}


def upgrade() -> None:
    for table, cols in _COUNTERS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {c} TYPE NUMERIC" for c in cols))


def downgrade() -> None:
    for table, cols in _COUNTERS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {c} TYPE BIGINT" for c in cols))
