"""Where the ledger lives by default (shared by the CLI and the gateway)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA_DIR = "TOKENOMY_DATA_DIR"


def default_data_dir() -> Path:
    """env TOKENOMY_DATA_DIR, else ./.tokenomy (relative to the current directory)."""
    value = os.environ.get(ENV_DATA_DIR)
    return Path(value).expanduser() if value else Path(".tokenomy")


def ledger_path(data_dir: Path) -> Path:
    return Path(data_dir) / "ledger.db"
