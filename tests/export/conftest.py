"""The export suite runs on the billing suite's real ledgers (SQLite and PostgreSQL)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (to reuse billing's ledgers)

from billing.conftest import Ledger, ledger, pg_billing_url  # noqa: E402,F401
