"""Price of ONE usage event to its tenant, at request time (pure, cheap: the gateway's hot path).

The gateway records it as the event's `price_usd`, so budgets, usage and dashboards see tenant
prices as requests happen. The invoice (rating.py) stays authoritative. Per plan component,
mirroring `rate_period`:
  list_price           the gateway's price (the deployment cost), whatever else the plan has
  subscription only    0: the flat fee is billed on the invoice, not per event
  usage                the plan's per-category prices for this event's tokens (and 1 request)
  cost_plus            serving cost x (1 + markup), cost apportioned per category by cost_weights
  over an overage cap  only the cap's overage prices (rating bills such events only as overage)
Exact for unit prices and for cost-plus with one markup. Tiered and package schemes and free
allowances depend on the whole period's usage, which one event does not see: they are priced at
the first tier's rate (package: pro rata) without free allowance; the invoice settles the rest.
"""

from __future__ import annotations

from decimal import Decimal

from tokenomy.billing.plans import CATEGORIES, CategoryPrice, Cap, CostPlus, Plan
from tokenomy.billing.tiers import default_per

_ZERO = Decimal(0)


def unit_rate_usd(price: CategoryPrice, category: str) -> Decimal:
    """USD per unit (token or request) of one event under `price` (see the module note)."""
    per = Decimal(price.per or default_per(category))
    if price.scheme in ("unit", "package"):
        return price.usd / per  # type: ignore[operator]
    return (price.tiers or [])[0].usd / per


def usage_price_usd(prices: dict, categories: dict[str, int], requests: int = 1) -> Decimal:
    total = _ZERO
    for category, price in prices.items():
        quantity = requests if category == "requests" else categories.get(category, 0)
        if quantity:
            total += quantity * unit_rate_usd(price, category)
    return total


def cost_plus_price_usd(cp: CostPlus, categories: dict[str, int], cost_usd: Decimal) -> Decimal:
    if not isinstance(cp.markup, dict):
        return cost_usd * (1 + cp.markup)  # exact: no apportioning needed
    weights = {c: Decimal(categories.get(c, 0)) * cp.cost_weights.get(c, _ZERO) for c in CATEGORIES}
    wsum = sum(weights.values(), _ZERO)
    if wsum == 0:  # no weighted tokens: all cost on output (as rating does)
        return cost_usd * (1 + cp.markup_for("output"))
    return sum((cost_usd * weights[c] / wsum * (1 + cp.markup_for(c)) for c in CATEGORIES), _ZERO)


def event_price_usd(plan: Plan, categories: dict[str, int], cost_usd: Decimal, *,
                    overage_cap: Cap | None = None) -> Decimal:
    """Tenant price of one event. `categories`: tokens by input (uncached) / cached_input / output
    (as BillableEvent.categories); `overage_cap`: the overage cap that decided this request, if any."""
    if overage_cap is not None and overage_cap.overage:
        return usage_price_usd(overage_cap.overage, categories)
    if plan.list_price:
        # The invoice's list line sums the ledger's price_usd, so it must stay the gateway's price
        # (other components of such a plan are billed on the invoice only).
        return cost_usd
    total = _ZERO
    if plan.usage:
        total += usage_price_usd(plan.usage, categories)
    if plan.cost_plus is not None:
        total += cost_plus_price_usd(plan.cost_plus, categories, cost_usd)
    return total


def max_price_multiplier(plan: Plan) -> Decimal:
    """Upper bound of price / cost for the cost-proportional components (budget reservations)."""
    if plan.list_price:
        return Decimal(1)
    if plan.cost_plus is not None:
        cp = plan.cost_plus
        return 1 + (max(cp.markup.values(), default=_ZERO) if isinstance(cp.markup, dict) else cp.markup)
    return _ZERO
