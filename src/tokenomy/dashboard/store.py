"""What the dashboard's read models need from a rollup store (SQLite: rollups.Rollups,
PostgreSQL: pg_rollups.PgRollups). queries.py only talks to this interface, so every page
shows the same numbers on both ledgers.

Buckets are unix seconds at the start of a minute/hour/day (UTC); money is integer pico-USD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tokenomy.dashboard.baselines import Usage
from tokenomy.errors import TokenomyError

PICO = 10**12
# Histogram bins: bin k holds values in [2^(k/8), 2^((k+1)/8)) ms, decided by comparing with the
# same table of float thresholds on both backends (SQLite: bisect in Python; PostgreSQL:
# width_bucket over the same array), so a value on a bin edge lands in the same bin on both.
BINS_PER_OCTAVE = 8
BIN_MIN = -54   # 2^(-54/8) ms ~ 0.0093 ms <= the 0.01 ms floor
BIN_MAX = 320   # 2^40 ms (~35 years): larger values are counted in the last bin
BIN_FLOOR_MS = 0.01
BIN_THRESHOLDS: tuple[float, ...] = tuple(2.0 ** (k / BINS_PER_OCTAVE) for k in range(BIN_MIN, BIN_MAX + 1))


@dataclass(slots=True)
class UsageBucket:
    """Sums of one (bucket, model, deployment), over the tenants asked for."""

    bucket: int
    model: str
    deployment: str
    requests: int
    errors: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_pusd: int
    price_pusd: int
    energy_joules: float
    latency_ms_sum: float
    routed: int
    strong: int
    pq_sum: float
    pq_n: int
    client_errors: int = 0  # errors: upstream failures only; client_errors: 4xx passed back, cancelled

    def usage(self) -> Usage:
        return Usage(self.model, self.deployment, self.requests, self.input_tokens, self.cached_input_tokens,
                     self.output_tokens, self.reasoning_tokens, self.cost_pusd / PICO)


@dataclass(frozen=True, slots=True)
class TenantUsage:
    requests: int
    tokens: int
    cost_pusd: int
    price_pusd: int
    energy_joules: float


class LedgerUnavailable(TokenomyError):
    """The ledger database cannot be reached (the API answers 503)."""


Histograms = dict[str, dict[str, dict[int, int]]]  # deployment -> metric ("latency"|"ttft") -> bin -> count


class RollupStore(Protocol):
    """Incrementally folded rollups of one ledger, plus the few reads the pages make."""

    def maybe_fold(self, wait_s: float = 2.0) -> int: ...

    def fold(self) -> int: ...

    def behind(self) -> int: ...

    def close(self) -> None: ...

    def first_bucket(self) -> int | None:
        """The first day bucket with any event (range=all)."""

    def usage(self, res: str, since: int, until: int, tenant: str | None) -> list[UsageBucket]:
        """Rows of rollup_<res> with since <= bucket < until, summed over tenants."""

    def histograms(self, res: str, since: int, until: int, tenant: str | None) -> Histograms:
        """Latency/TTFT histograms (res: hour | day) with since <= bucket < until."""

    def tenant_usage(self, res: str, since: int, until: int, tenant: str | None) -> dict[str, TenantUsage]: ...

    def spend_pusd(self, kind: str, subject: str, since: int | None) -> int:
        """Price charged to a tenant (kind "tenant") or key (kind "key") in day buckets >= since."""

    def key_peaks(self, since: int) -> dict[str, tuple[int, int]]:
        """key_id -> (max requests, max tokens) in one minute bucket >= since."""

    def feedback(self, since: int, until: int, tenant: str | None) -> list[tuple[str, float | None, float]]:
        """(model, predicted quality or None, observed score) of labelled requests, when the ledger
        has a feedback table (request id + score)."""


def find_feedback_columns(tables: dict[str, set[str]]) -> tuple[str, str, str] | None:
    """(table, id column, score column) of the first table that looks like request feedback."""
    for table in sorted(tables):
        cols = tables[table]
        id_col = next((c for c in ("request_id", "event_id", "id") if c in cols), None)
        score_col = next((c for c in ("score", "quality", "value") if c in cols), None)
        if id_col is not None and score_col is not None:
            return table, id_col, score_col
    return None


__all__ = ["BIN_THRESHOLDS", "Histograms", "LedgerUnavailable", "RollupStore", "TenantUsage", "UsageBucket", "find_feedback_columns"]
