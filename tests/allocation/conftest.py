"""Fixtures of the allocation tests: a real ledger (SQLite file or a private PostgreSQL schema)
with the capacity store on the same database."""

from __future__ import annotations

import sys

import pytest

from tokenomy.allocation.store import CapacityStore


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    from tokenomy.metering import Metering

    if request.param == "sqlite":
        m = Metering.open(tmp_path / "data", ensure_admin=False)
        yield m, CapacityStore(path=tmp_path / "data" / "ledger.db")
    else:
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
        from dashboard.pgschema import drop_schema, new_schema_url

        from tokenomy.metering.backends import open_metering

        url = new_schema_url("alloc")
        m = open_metering(tmp_path / "data", ledger_url=url, ensure_admin=False)
        yield m, CapacityStore(url=url)
        m.shutdown()
        drop_schema(url)
        return
    m.shutdown()
