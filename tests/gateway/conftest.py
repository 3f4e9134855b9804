"""Gateway test fixtures. Helpers live in gw_helpers.py (re-exported here for other areas' tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Other areas import these helpers as `tests.gateway.conftest` (then this directory may not be
# on sys.path yet).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from gw_helpers import (  # noqa: E402,F401  (re-exported)
    ADMIN_KEY,
    FAST_TIMEOUTS,
    GatewayHandle,
    Stub,
    gateway,
    list_dep,
    serve,
    stubs,
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "ledger"
