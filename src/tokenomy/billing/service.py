"""Billing over a data dir: invoices (open drafts or closed, immutable), closing, adjustments.

Rules:
- An open period's invoice counts events with ts in the period recorded before period end +
  grace (late events within the grace bill in their own period).
- Anything that changes a period's charges afterwards (events recorded after the cutoff, events
  recorded after closing, a corrected plan file) is billed as an `adjustment` line on the first
  period after it that is not closed: re-rated charges - charges billed - adjustments billed.
- Credit balances carry over: closed invoices' draws are final; open ones are re-derived in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from tokenomy.billing.caps import max_window_seconds
from tokenomy.billing.credits import apply_draws, initial_balances
from tokenomy.billing.invoice import Invoice, assemble
from tokenomy.billing.ledger_source import BillingSource, open_ledger_source
from tokenomy.billing.money import usd_str
from tokenomy.billing.periods import Period, iso, parse_period, period_of
from tokenomy.billing.plans import PlanBook
from tokenomy.billing.rating import LineItem, Rated, rate_period
from tokenomy.billing.store import InvoiceStore
from tokenomy.errors import TokenomyError, UnknownNameError

MAX_CREDIT_MONTHS = 240


class Billing:
    def __init__(self, book: PlanBook, source: BillingSource, store: InvoiceStore, *,
                 clock: Callable[[], float] = time.time):
        self.book, self.source, self.store, self.clock = book, source, store, clock
        self._rated: dict[tuple[str, Period, bool], Rated] = {}
        self._balances: dict[tuple[str, Period], dict[str, Decimal]] = {}
        self._lookback_s = max((max_window_seconds(p) for p in book.plans.values()), default=0.0)

    @classmethod
    def open(cls, data_dir: Path | str, book: PlanBook, *, ledger_url: str | None = None, **kw) -> "Billing":
        """Billing over the ledger of data_dir, or the PostgreSQL ledger at ledger_url / env
        TOKENOMY_LEDGER_URL; closed invoices are kept in data_dir/billing.db either way."""
        source = open_ledger_source(data_dir, ledger_url=ledger_url)
        try:
            return cls(book, source, InvoiceStore(data_dir), **kw)
        except BaseException:
            source.close()
            raise

    def close(self) -> None:
        self.source.close()
        self.store.close()

    # look-ups ------------------------------------------------------------------------------
    def tenants(self) -> list[str]:
        return sorted(set(self.source.tenants()) | set(self.book.tenants))

    def check_tenant(self, tenant: str) -> None:
        known = self.tenants()
        if tenant not in known:
            if not known:
                raise TokenomyError(f"unknown tenant '{tenant}': no tenants in the ledger or the plans file")
            raise UnknownNameError("tenant", tenant, known)

    def cutoff(self, period: Period) -> float:
        return period.end + self.book.billing.grace_seconds

    # rating ----------------------------------------------------------------------------------
    def rated(self, tenant: str, period: Period, *, full: bool = False) -> Rated:
        """Charges of the period from its events: those recorded before the cutoff, or all (full)."""
        key = (tenant, period, full)
        if key not in self._rated:
            before = None if full else self.cutoff(period)
            events = self.source.events(tenant, period.start, period.end, before)
            lookback = (self.source.events(tenant, period.start - self._lookback_s, period.start, before)
                        if self._lookback_s else [])
            self._rated[key] = rate_period(self.book, tenant, period, events, lookback)
        return self._rated[key]

    def _is_closed(self, tenant: str, period: Period) -> bool:
        return self.store.get(tenant, period.label) is not None

    def _first_open_after(self, tenant: str, period: Period) -> Period:
        p = period.next()
        while self._is_closed(tenant, p):
            p = p.next()
        return p

    def adjustments(self, tenant: str, period: Period) -> list[LineItem]:
        candidates = {parse_period(p) for p in self.store.closed_periods(tenant)}
        candidates |= self.source.late_periods(tenant, period.start, self.book.billing.grace_seconds)
        out = []
        for q in sorted(c for c in candidates if c < period):
            if self._first_open_after(tenant, q) != period:
                continue
            stored = self.store.get(tenant, q.label)
            billed = stored.charges_usd if stored else self.rated(tenant, q).charges_usd
            p = q.next()
            while p < period:  # closed periods in between may already carry part of the correction
                billed += self.store.get(tenant, p.label).adjustments_for(q.label)
                p = p.next()
            delta = self.rated(tenant, q, full=True).charges_usd - billed
            if delta != 0:
                out.append(LineItem("adjustment", f"correction to {q.label} (re-rated {usd_str(billed + delta)} "
                                                  f"vs billed {usd_str(billed)} USD)", delta, period=q.label))
        return out

    def _balances_before(self, tenant: str, period: Period) -> dict[str, Decimal]:
        grants = self.book.tenant(tenant).credits
        if not grants:
            return {}
        first = min(period_of(g.granted_at) for g in grants)
        balances = initial_balances(grants)
        p = max(first, Period(period.year - MAX_CREDIT_MONTHS // 12, period.month))
        while p < period:
            key = (tenant, p)
            if key not in self._balances:
                inv = self.store.get(tenant, p.label) or self._compute(tenant, p, balances)
                draws = [(li.credit_id, -li.amount_usd) for li in inv.lines if li.kind == "credit"]
                self._balances[key] = apply_draws(balances, draws)
            balances = self._balances[key]
            p = p.next()
        return balances

    def _compute(self, tenant: str, period: Period, balances: dict[str, Decimal]) -> Invoice:
        rated = self.rated(tenant, period)
        late = self.source.count(tenant, period.start, period.end) - rated.usage.requests
        return assemble(tenant, period, rated, self.adjustments(tenant, period), self.book.tenant(tenant).credits,
                        balances, late_events=late)

    # public ----------------------------------------------------------------------------------
    def invoice(self, tenant: str, period: Period) -> Invoice:
        """The stored invoice if the period is closed, else the draft (deterministic)."""
        self.check_tenant(tenant)
        stored = self.store.get(tenant, period.label)
        if stored is not None:
            return stored
        return self._compute(tenant, period, self._balances_before(tenant, period))

    def close_period(self, tenant: str, period: Period, *, force: bool = False) -> Invoice:
        """Store the invoice immutably. Refused before the grace window ends unless force."""
        self.check_tenant(tenant)
        stored = self.store.get(tenant, period.label)
        if stored is not None:
            return stored
        now = self.clock()
        if not force and now < self.cutoff(period):
            raise TokenomyError(f"period {period} of tenant '{tenant}' cannot close before {iso(self.cutoff(period))} "
                                f"(period end + {self.book.billing.grace_hours:g} h grace for late events); "
                                "use --force to close it now")
        return self.store.put(self.invoice(tenant, period), now=now)
