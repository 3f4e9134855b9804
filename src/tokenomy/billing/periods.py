"""Billing periods: UTC calendar months, labelled '2026-11'."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from tokenomy.errors import TokenomyError

_LABEL = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, slots=True, order=True)
class Period:
    year: int
    month: int

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> float:
        return datetime(self.year, self.month, 1, tzinfo=timezone.utc).timestamp()

    @property
    def end(self) -> float:
        return self.next().start

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def next(self) -> "Period":
        return Period(self.year + 1, 1) if self.month == 12 else Period(self.year, self.month + 1)

    def prev(self) -> "Period":
        return Period(self.year - 1, 12) if self.month == 1 else Period(self.year, self.month - 1)

    def __str__(self) -> str:
        return self.label


def parse_period(text: str) -> Period:
    m = _LABEL.match(text.strip())
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
        raise TokenomyError(f"period '{text}' is not a month: use YYYY-MM, e.g. 2026-11")
    return Period(int(m.group(1)), int(m.group(2)))


def period_of(ts: float) -> Period:
    d = datetime.fromtimestamp(ts, timezone.utc)
    return Period(d.year, d.month)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
