"""The reconciliation goal through the real gateway (benchmarks/cost_reconciliation.py, short): an
emulated self-hosted H100 under a light, then a heavy load. The same figures on an injected clock
(synthetic spans, SQLite and PostgreSQL): tests/allocation/test_allocation.py."""

from __future__ import annotations

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("cost_reconciliation_bench", ROOT / "benchmarks" / "cost_reconciliation.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


async def test_light_then_heavy_load_reconciles_and_matches_the_cost_model(tmp_path):
    bench = _bench()
    light, heavy = [bench.figures(p) for p in await bench.run(tmp_path / "data", seconds=3.0, heavy=8)]
    for f in (light, heavy):
        assert f["requests"] >= 1 and f["provisioned_s"] == f["elapsed_s"]  # every interval billed, once
        assert f["allocated_plus_idle_usd"] == f["bill_usd"]  # exactly (Decimal)
        # hourly price x elapsed + the energy drawn, within 0.1 %
        assert f["reconcile_error"] < 1e-3
        assert f["allocated_usd"] > 0 and f["idle_usd"] >= 0
        # the cost model's output $/Mtok at the observed utilisation, within 10 %
        assert f["usd_per_mtok_output_actual"] == pytest.approx(f["usd_per_mtok_output_modelled"], rel=0.10)
    assert heavy["utilization"] > 5 * light["utilization"]
    assert heavy["usd_per_mtok_actual"] < light["usd_per_mtok_actual"]  # unit cost falls as load rises
    assert heavy["idle_usd"] / heavy["bill_usd"] < light["idle_usd"] / light["bill_usd"]
    assert isinstance(heavy["bill_usd"], Decimal)
