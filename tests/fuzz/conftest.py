"""Fuzz-test fixtures: one real gateway per module (see fuzz_server.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_server import FuzzGateway, running_gateway  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory) -> FuzzGateway:
    with running_gateway(tmp_path_factory.mktemp("fuzz-ledger")) as g:
        yield g
