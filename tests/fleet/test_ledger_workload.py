"""Workloads and growth fits from a real SQLite metering ledger seeded through the Metering API."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest

from tokenomy.errors import TokenomyError
from tokenomy.fleet.ledger import (
    DAYS_PER_MONTH,
    fit_log_linear_growth,
    ledger_growth,
    load_ledger_workload,
    read_ledger_rows,
)

DAY = 86_400.0
T0 = datetime(2026, 10, 1, tzinfo=timezone.utc).timestamp()  # a fixed past midnight (UTC)


def test_trace_from_ok_events(tmp_path, seed):
    seed(tmp_path, [
        (T0 + 10.0, 100, 20, 1000.0),       # started at T0 + 9
        (T0 + 12.5, 300, 40, 500.0),        # started at T0 + 12
        (T0 + 11.0, 50, 0, 0.0),            # 0 output tokens -> 1 (every request yields a token)
        (T0 + 13.0, 999, 9, 0.0, "error"),  # not ok: skipped
        (T0 + 20.0, 7, 3, 4000.0),          # started at T0 + 16
    ])
    seed(tmp_path, [(T0 + 5.0, 11, 1), (T0 + 15.0, 22, 2)], tenant="other")
    tr = load_ledger_workload(tmp_path, tenant="acme")
    assert tr.name == "ledger-acme" and len(tr) == 4
    assert tr.arrived_at.tolist() == [0.0, 2.0, 3.0, 7.0]
    assert tr.prompt_tokens.tolist() == [100, 50, 300, 7]
    assert tr.output_tokens.tolist() == [20, 1, 40, 3]
    commit = load_ledger_workload(tmp_path, tenant="acme", arrival="commit")
    assert commit.arrived_at.tolist() == [0.0, 1.0, 2.5, 10.0] and commit.prompt_tokens.tolist() == [100, 50, 300, 7]
    everyone = load_ledger_workload(tmp_path)  # both tenants, starting at other's T0 + 5
    assert len(everyone) == 6 and everyone.arrived_at.tolist() == [0.0, 4.0, 6.0, 7.0, 10.0, 11.0]
    assert everyone.prompt_tokens.tolist() == [11, 100, 50, 300, 22, 7]
    window = load_ledger_workload(tmp_path, since=T0 + 11.0, until=T0 + 20.0)  # on ts, [since, until)
    assert window.prompt_tokens.tolist() == [50, 300, 22]


def test_paging_keeps_every_event_once_across_tied_timestamps(tmp_path, seed):
    # 7 events share one ts: pages of 3 must neither split nor repeat them
    ts = [T0 + 1.0] * 2 + [T0 + 2.0] * 7 + [T0 + 3.0 + k for k in range(6)]
    seed(tmp_path, [(t, 10 + i, 1) for i, t in enumerate(ts)])
    for page in (3, 4, 100):
        rows = read_ledger_rows(tmp_path, page_events=page)
        assert sorted(rows.input_tokens.tolist()) == [10 + i for i in range(len(ts))]
        assert rows.ts.tolist() == sorted(ts)


def test_ledger_errors(tmp_path, seed):
    with pytest.raises(TokenomyError, match="no metering ledger at"):
        load_ledger_workload(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()  # reading must not create a ledger
    seed(tmp_path, [(T0, 10, 1, 0.0, "error")])
    with pytest.raises(TokenomyError, match="has no ok events"):
        load_ledger_workload(tmp_path)
    with pytest.raises(TokenomyError, match=r"unknown tenant 'ghost'.*known: acme"):
        load_ledger_workload(tmp_path, tenant="ghost")


def test_fit_recovers_exact_exponential_growth():
    days = np.arange(10)
    fit = fit_log_linear_growth(days, 1e6 * 1.05**days)
    assert fit.daily_growth == pytest.approx(0.05, rel=1e-9)
    assert fit.monthly_growth == pytest.approx(1.05**DAYS_PER_MONTH - 1, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0) and fit.days == 10
    with pytest.raises(TokenomyError, match=">= 3 days"):
        fit_log_linear_growth(np.arange(3), np.array([5.0, 0.0, 7.0]))  # zero days do not count


def test_growth_fitted_to_the_ledgers_daily_tokens(tmp_path, seed):
    # 6 days, 2 events a day, daily tokens 1000 * 1.1^d (split 3:1 input/output, 1 token rounding aside)
    rows = []
    for d in range(6):
        total = round(1000 * 1.1**d)
        rows += [(T0 + d * DAY + 3600, total // 2 - total // 8, total // 8),
                 (T0 + d * DAY + 7200, total - total // 2, 0)]
    seed(tmp_path, rows)
    g = ledger_growth(tmp_path, now=T0 + 40 * DAY)
    assert g["days"] == 6 and g["first_day"] == "2026-10-01" and g["last_day"] == "2026-10-06"
    assert [d["tokens"] for d in g["daily_tokens"]] == [round(1000 * 1.1**d) for d in range(6)]
    # rounding to whole tokens moves the fit by < 1e-3
    assert g["daily_growth"] == pytest.approx(0.10, abs=1e-3)
    assert g["monthly_growth"] == pytest.approx(1.1**DAYS_PER_MONTH - 1, rel=1e-2)
    assert g["r2"] > 0.9999
    # the day in progress is dropped (a partial day would read as a fall in traffic)
    g_now = ledger_growth(tmp_path, now=T0 + 5 * DAY + 7300)
    assert g_now["days"] == 5 and g_now["dropped_days_in_progress"] == ["2026-10-06"]
    assert g_now["daily_growth"] == pytest.approx(0.10, abs=1e-3)
    # windows: since the 4th day leaves 3 days, since the 5th too few
    assert ledger_growth(tmp_path, since=T0 + 3 * DAY, now=T0 + 40 * DAY)["days"] == 3
    with pytest.raises(TokenomyError, match=r"has 2 complete day\(s\).*needs >= 3"):
        ledger_growth(tmp_path, since=T0 + 4 * DAY, now=T0 + 40 * DAY)


def test_growth_falls_with_shrinking_traffic(tmp_path, seed):
    seed(tmp_path, [(T0 + d * DAY, int(10_000 * 0.8**d), 1) for d in range(5)])
    g = ledger_growth(tmp_path, now=T0 + 40 * DAY)
    assert g["daily_growth"] == pytest.approx(-0.2, abs=1e-3) and g["monthly_growth"] < -0.99
    assert math.isclose(g["monthly_growth"], math.expm1(math.log(1 + g["daily_growth"]) * DAYS_PER_MONTH),
                        rel_tol=1e-3)
