"""Workloads and growth forecasts from the gateway's metering ledger (<data_dir>/ledger.db).

Each `ok` usage event becomes one request of a `Trace`: arrival = the request's start
(event ts - latency, relative to the first), prompt tokens = input_tokens, decode tokens =
output_tokens. Daily token totals (UTC days) fit a log-linear growth rate for `plan --growth ledger`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tokenomy.errors import TokenomyError
from tokenomy.fleet.workload import Trace

DAYS_PER_MONTH = 365.25 / 12
MIN_GROWTH_DAYS = 3
PAGE_EVENTS = 50_000


@dataclass(frozen=True)
class LedgerRows:
    """Columns of the ok events in a window, oldest first (epoch seconds, tokens)."""

    ts: np.ndarray  # float64, when the event was recorded (request end)
    latency_seconds: np.ndarray  # float64
    input_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64


def _window_text(tenant: str | None, since: float | None, until: float | None) -> str:
    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    parts = [f"tenant '{tenant}'"] if tenant else []
    if since is not None:
        parts.append(f"since {iso(since)}")
    if until is not None:
        parts.append(f"until {iso(until)}")
    return f" ({', '.join(parts)})" if parts else ""


def read_ledger_rows(data_dir: Path | str, *, since: float | None = None, until: float | None = None,
                     tenant: str | None = None, page_events: int = PAGE_EVENTS) -> LedgerRows:
    """The ok events of the ledger in [since, until) (epoch s), optionally of one tenant.

    Reads through `Metering.events` (newest first) in pages of `page_events`, keeping only four
    columns, so a large ledger never sits in memory as event objects.
    """
    from tokenomy.metering.backends import ledger_present, open_metering
    from tokenomy.metering.paths import ledger_path

    data_dir = Path(data_dir)
    if not ledger_present(data_dir):  # opening would create an empty SQLite ledger
        raise TokenomyError(f"no metering ledger at {ledger_path(data_dir)} (set --data-dir or TOKENOMY_DATA_DIR)")
    cols: list[tuple[float, float, int, int]] = []
    with open_metering(data_dir, ensure_admin=False) as m:
        if tenant is not None and m.ledger.get_tenant(tenant) is None:
            known = ", ".join(t.name for t in m.ledger.list_tenants()) or "none"
            raise TokenomyError(f"unknown tenant '{tenant}' in the ledger at {data_dir} (known: {known})")
        cursor, size = until, page_events
        while True:
            page = m.events(tenant, since, cursor, size)
            if len(page) < size:
                cols.extend((e.ts, e.latency_ms, e.input_tokens, e.output_tokens) for e in page if e.status == "ok")
                break
            oldest = page[-1].ts
            if page[0].ts == oldest:  # one timestamp fills the page: widen it, as ties cannot be split
                size *= 4
                continue
            # Events at the oldest ts may continue on the next page: take them there, whole.
            cols.extend((e.ts, e.latency_ms, e.input_tokens, e.output_tokens)
                        for e in page if e.ts > oldest and e.status == "ok")
            cursor = math.nextafter(oldest, math.inf)  # until is exclusive: ts <= oldest
    if not cols:
        raise TokenomyError(f"the ledger at {data_dir} has no ok events{_window_text(tenant, since, until)}")
    arr = np.array(cols[::-1], dtype=np.float64)
    order = np.argsort(arr[:, 0], kind="stable")
    arr = arr[order]
    return LedgerRows(arr[:, 0], arr[:, 1] / 1000.0, arr[:, 2].astype(np.int64), arr[:, 3].astype(np.int64))


def load_ledger_workload(data_dir: Path | str, *, since: float | None = None, until: float | None = None,
                         tenant: str | None = None, arrival: str = "start") -> Trace:
    """A trace of the ledger's ok events in [since, until): one request per event.

    arrival="start" (default) times each request at ts - latency, its start: the ledger records
    events on completion, and completion times depend on how loaded the old fleet was.
    arrival="commit" uses ts itself. Lengths below 1 token are raised to 1 (as in `load_trace`).
    """
    if arrival not in ("start", "commit"):
        raise TokenomyError(f"unknown arrival '{arrival}' (start or commit)")
    rows = read_ledger_rows(data_dir, since=since, until=until, tenant=tenant)
    t = rows.ts - rows.latency_seconds if arrival == "start" else rows.ts
    order = np.argsort(t, kind="stable")
    t = t[order]
    name = "ledger" + (f"-{tenant}" if tenant else "")
    return Trace(t - t[0], np.maximum(rows.input_tokens[order], 1), np.maximum(rows.output_tokens[order], 1), name)


def daily_tokens(rows: LedgerRows) -> tuple[list[str], np.ndarray]:
    """UTC day labels (YYYY-MM-DD, ascending) and input + output tokens recorded on each."""
    days = (rows.ts // 86_400).astype(np.int64)
    uniq, inv = np.unique(days, return_inverse=True)
    totals = np.bincount(inv, weights=(rows.input_tokens + rows.output_tokens).astype(np.float64))
    labels = [datetime.fromtimestamp(int(d) * 86_400, timezone.utc).strftime("%Y-%m-%d") for d in uniq]
    return labels, totals


@dataclass(frozen=True)
class GrowthFit:
    """tokens/day ~ exp(intercept + daily_log_slope * day): growth per day and per month."""

    daily_log_slope: float
    intercept: float
    days: int
    r2: float

    @property
    def daily_growth(self) -> float:
        return math.expm1(self.daily_log_slope)

    @property
    def monthly_growth(self) -> float:
        return math.expm1(self.daily_log_slope * DAYS_PER_MONTH)


def fit_log_linear_growth(day_index: np.ndarray, tokens: np.ndarray) -> GrowthFit:
    """Least-squares line through log(tokens) vs day (numpy polyfit); days with 0 tokens are skipped."""
    x = np.asarray(day_index, dtype=np.float64)
    y = np.asarray(tokens, dtype=np.float64)
    keep = y > 0
    x, y = x[keep], y[keep]
    if len(x) < MIN_GROWTH_DAYS:
        raise TokenomyError(f"a growth fit needs >= {MIN_GROWTH_DAYS} days with tokens, got {len(x)}")
    logy = np.log(y)
    slope, intercept = np.polyfit(x, logy, 1)
    resid = logy - (slope * x + intercept)
    ss_tot = float(((logy - logy.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return GrowthFit(float(slope), float(intercept), len(x), r2)


def ledger_growth(data_dir: Path | str, *, since: float | None = None, until: float | None = None,
                  tenant: str | None = None, now: float | None = None) -> dict:
    """Fit the monthly growth of the ledger's daily tokens (ok events, UTC days).

    The day holding `now` (default: the clock) is dropped while it is still in progress: a
    partial day would read as a fall in traffic. Raises TokenomyError with fewer than 3 days.
    """
    rows = read_ledger_rows(data_dir, since=since, until=until, tenant=tenant)
    labels, totals = daily_tokens(rows)
    day_index = np.array([int(datetime.fromisoformat(d).replace(tzinfo=timezone.utc).timestamp()) // 86_400
                          for d in labels], dtype=np.int64)
    today = int((time.time() if now is None else now) // 86_400)
    if until is None or until > today * 86_400:
        keep = day_index != today
        dropped = [d for d, k in zip(labels, keep) if not k]
        labels, totals, day_index = [d for d, k in zip(labels, keep) if k], totals[keep], day_index[keep]
    else:
        dropped = []
    if int((totals > 0).sum()) < MIN_GROWTH_DAYS:
        raise TokenomyError(
            f"the ledger at {data_dir} has {int((totals > 0).sum())} complete day(s) of token data"
            f"{_window_text(tenant, since, until)}; a growth forecast needs >= {MIN_GROWTH_DAYS} "
            "(use a fixed rate such as --growth 8%/month)")
    fit = fit_log_linear_growth(day_index - day_index[0], totals)
    return {
        "source": "ledger",
        "data_dir": str(data_dir),
        "tenant": tenant,
        "days": fit.days,
        "first_day": labels[0],
        "last_day": labels[-1],
        "dropped_days_in_progress": dropped,
        "daily_growth": round(fit.daily_growth, 6),
        "monthly_growth": round(fit.monthly_growth, 6),
        "r2": round(fit.r2, 6),
        "daily_tokens": [{"day": d, "tokens": int(v)} for d, v in zip(labels, totals)],
    }
