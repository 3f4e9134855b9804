"""Measured figures of gateway deployments from the metering ledger's usage events.

Per deployment over [since, until):
- availability = successes / (successes + upstream failures). A failed attempt that the
  gateway then retried on another deployment is in the final event's `extra["attempts"]`
  and counts against the deployment that failed; an `upstream_error` event counts against
  its deployment unless that attempt is already listed; client errors (status "error",
  a 4xx passed through) and cancellations do not count.
- TTFT from `ttft_ms` (streamed requests); TPOT = (latency_ms - ttft_ms) / (output - 1).
  Latency is measured at the gateway, so it includes the gateway's own (small) overhead.
- $/Mtok input and output: a non-negative least-squares fit of each successful event's
  upstream `cost_usd` on its input and output tokens (exact for per-token pricing); when
  the events do not separate the two (all with one input/output ratio), one blended
  $/Mtok of all tokens is given for both (`price_fit: "blended"`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokenomy.errors import TokenomyError

from .terms import Measured

PAGE_EVENTS = 20_000


@dataclass
class DeploymentStats:
    deployment: str
    successes: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    ttft_ms: list[float] = field(default_factory=list)
    tpot_ms: list[float] = field(default_factory=list)
    rows: list[tuple[int, int, float]] = field(default_factory=list)  # (input, output, cost) of successes

    @property
    def availability(self) -> float | None:
        n = self.successes + self.failures
        return self.successes / n if n else None

    def price_fit(self) -> tuple[float | None, float | None, str | None]:
        """($/Mtok input, $/Mtok output, "fit" | "blended") from the successful events."""
        if not self.rows:
            return None, None, None
        a = np.array([[r[0], r[1]] for r in self.rows], dtype=np.float64)
        b = np.array([r[2] for r in self.rows], dtype=np.float64)
        if np.linalg.matrix_rank(a) >= 2:
            from scipy.optimize import nnls

            coef, _ = nnls(a, b)
            return float(coef[0] * 1e6), float(coef[1] * 1e6), "fit"
        tokens = float(a.sum())
        blended = float(b.sum()) / tokens * 1e6 if tokens else None
        return blended, blended, "blended"

    def measured(self) -> Measured:
        usd_in, usd_out, _ = self.price_fit()
        return Measured(usd_in, usd_out, self.ttft_ms, self.tpot_ms, self.availability,
                        self.successes + self.failures)

    def to_dict(self) -> dict:
        from .metrics import distribution_ms

        usd_in, usd_out, fit = self.price_fit()
        return {"source": "ledger", "requests": self.successes + self.failures, "requests_ok": self.successes,
                "upstream_failures": self.failures, "availability": self.availability,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "cost_usd": self.cost_usd,
                "ttft_ms": distribution_ms(self.ttft_ms), "tpot_ms": distribution_ms(self.tpot_ms),
                "usd_per_mtok_input": usd_in, "usd_per_mtok_output": usd_out, "price_fit": fit}


def stats_from_events(events: Iterable, deployments: Iterable[str] | None = None) -> dict[str, DeploymentStats]:
    """Aggregate UsageEvent-like objects (attributes as in tokenomy.metering.UsageEvent)."""
    wanted = set(deployments) if deployments is not None else None
    stats: dict[str, DeploymentStats] = {}

    def get(name: str) -> DeploymentStats | None:
        if not name or (wanted is not None and name not in wanted):
            return None
        return stats.setdefault(name, DeploymentStats(name))

    for ev in events:
        failed_here: set[str] = set()
        attempts = (ev.extra or {}).get("attempts") or [] if isinstance(ev.extra, dict) else []
        for attempt in attempts:
            if isinstance(attempt, dict) and (s := get(str(attempt.get("deployment") or ""))) is not None:
                s.failures += 1
                failed_here.add(s.deployment)
        s = get(ev.deployment)
        if s is None:
            continue
        if ev.status == "ok":
            s.successes += 1
            s.input_tokens += ev.input_tokens
            s.output_tokens += ev.output_tokens
            cost = float(ev.cost_usd)
            s.cost_usd += cost
            s.rows.append((ev.input_tokens, ev.output_tokens, cost))
            if ev.ttft_ms is not None:
                s.ttft_ms.append(float(ev.ttft_ms))
                if ev.output_tokens > 1:
                    s.tpot_ms.append((float(ev.latency_ms) - float(ev.ttft_ms)) / (ev.output_tokens - 1))
        elif ev.status == "upstream_error" and ev.deployment not in failed_here:
            s.failures += 1
    return stats


def read_ledger(data_dir: Path | str, since: float | None, until: float | None = None,
                deployments: Iterable[str] | None = None) -> dict[str, DeploymentStats]:
    """Open the gateway's ledger in `data_dir` (must exist) and aggregate its events."""
    from tokenomy.metering.backends import ledger_present, open_metering
    from tokenomy.metering.paths import ledger_path

    data_dir = Path(data_dir).expanduser()
    if not ledger_present(data_dir):  # opening would create an empty SQLite ledger
        raise TokenomyError(f"no gateway ledger in {data_dir} (expected {ledger_path(data_dir)})")
    m = open_metering(data_dir, ensure_admin=False)
    try:
        return stats_from_events(iter_events(m, since, until), deployments)
    finally:
        m.shutdown()


def iter_events(m, since: float | None, until: float | None, page: int = PAGE_EVENTS):  # type: ignore[no-untyped-def]
    """All events in [since, until), newest first, a page at a time (bounded memory).

    `Metering.events` has no cursor: the next page ends just after the oldest timestamp seen
    (inclusive), skipping the ids already yielded at that timestamp; a page made only of
    already-yielded ties (more events at one timestamp than a page) is fetched again, larger."""
    cur = until
    seen: set[str] = set()  # ids yielded at the timestamp the current page boundary includes
    size = page
    while True:
        batch = m.events(None, since, cur, limit=size)
        fresh = [e for e in batch if e.id not in seen]
        if len(batch) == size and not fresh:
            size *= 2
            continue
        yield from fresh
        if len(batch) < size:
            return
        oldest = batch[-1].ts
        boundary = math.nextafter(oldest, math.inf)
        at_edge = {e.id for e in batch if e.ts == oldest}
        seen = at_edge | seen if cur == boundary else at_edge
        cur, size = boundary, page
