"""Budget periods on the UTC calendar: daily, monthly, or total (never resets)."""

from __future__ import annotations

from datetime import datetime, timezone

PERIODS = ("total", "daily", "monthly")


def check_period(period: str) -> str:
    if period not in PERIODS:
        from tokenomy.metering.errors import InvalidInput

        raise InvalidInput(f"budget period must be one of {', '.join(PERIODS)}, not '{period}'")
    return period


def period_key(period: str, ts: float) -> str:
    """Label of the period containing ts: '2026-11-27', '2026-11' or 'all'."""
    if period == "total":
        return "all"
    day = datetime.fromtimestamp(ts, timezone.utc)
    return day.strftime("%Y-%m-%d") if period == "daily" else day.strftime("%Y-%m")


def period_bounds(period: str, ts: float) -> tuple[float | None, float | None]:
    """[start, end) of the period containing ts as epoch seconds; (None, None) for total."""
    if period == "total":
        return None, None
    day = datetime.fromtimestamp(ts, timezone.utc)
    if period == "daily":
        start = day.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start.timestamp() + 86400.0
        return start.timestamp(), end
    start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.timestamp(), nxt.timestamp()
