"""tokenomy.billing: plans, rating, invoices, margins, pricing simulation.

    from tokenomy.billing import load_plans, Billing, check_caps, RollingCounter, CapDecision
    book = load_plans("examples/plans.yaml")
    inv = Billing.open(data_dir, book).invoice("acme", parse_period("2026-11"))   # deterministic
    decision = check_caps(book.plan(book.plan_at(tenant, now)), counter.window(now))   # gateway hook
"""

from tokenomy.billing.caps import CapDecision, RollingCounter, UsageWindow, check_caps, max_window_seconds
from tokenomy.billing.invoice import Invoice
from tokenomy.billing.periods import Period, parse_period
from tokenomy.billing.plans import Plan, PlanBook, load_plans, parse_plans
from tokenomy.billing.rating import LineItem, rate_period
from tokenomy.billing.service import Billing

__all__ = [
    "Billing", "CapDecision", "Invoice", "LineItem", "Period", "Plan", "PlanBook", "RollingCounter", "UsageWindow",
    "check_caps", "load_plans", "max_window_seconds", "parse_period", "parse_plans", "rate_period",
]
