"""Routed-alias gateway tests: reuse the gateway test helpers (real servers on 127.0.0.1)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_GW = Path(__file__).resolve().parent.parent / "gateway"
if str(_GW) not in sys.path:
    sys.path.insert(0, str(_GW))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "ledger"
