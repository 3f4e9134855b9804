"""Pricing simulator: what each plan earns against a heavy-tailed population of users.

Vectorised numpy over users (floats: this is a model, not an invoice). Per user and month:
  tokens ~ lognormal(mu, sigma) (or resampled from the ledger's tenant-months), split into
  input / cached input / output by shares; requests = tokens / tokens_per_request.
Rolling-window caps: a user's usage is spread over `active_days` days of `active_hours` each,
  so a window of w seconds sees U x min(1, w / active_hours) / active_days (w < 1 day) or
  U x min(1, w_days / 30.44) (w >= 1 day). The share above the most binding cap is blocked
  (not served), downgraded (served by the cheaper group's cost) or billed as overage.
Serving cost: USD per token of the plan's model group (price map, list price or the cost
  model), with an optional route mix sending shares of traffic to other groups.
Elasticity E: usage scales by ((1 + p / p_ref) / 2) ** -E, p = marginal price per token
  at baseline usage, p_ref = serving cost x (1 + target margin): flat plans (p = 0) see 2**E
  more usage; prices above p_ref see less.
Routing: with --route-mix the headline numbers include it and `routing` shows its effect;
  without, `routing` shows the what-if of sending 30% of traffic to the cheapest group.
Recommended cap: bisection (in log space) on the limit of the flat plan's first cap (or a
  monthly token cap) for the largest limit whose aggregate margin share >= target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tokenomy.billing.plans import CATEGORIES, Cap, CategoryPrice, Plan, PlanBook
from tokenomy.billing.tiers import default_per
from tokenomy.errors import TokenomyError

DAYS_PER_MONTH = 30.436875
CAT_INDEX = {c: i for i, c in enumerate(CATEGORIES)}  # input, cached_input, output
FALLBACK_GROUP = "gpt-4o-mini"
DEFAULT_ROUTE_SHARE = 0.3  # what-if share sent to the cheapest group when no --route-mix is given


@dataclass(frozen=True)
class Population:
    """Per-user monthly usage, shape (N, 3): uncached input, cached input, output tokens; requests (N,)."""

    tokens: np.ndarray
    requests: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.tokens.sum(axis=1)

    def scaled(self, factor: np.ndarray | float) -> "Population":
        f = np.asarray(factor, dtype=float)
        return Population(self.tokens * (f[:, None] if f.ndim else f), self.requests * f)


@dataclass(frozen=True)
class Assumptions:
    output_share: float = 0.25
    cached_share: float = 0.2  # of input
    tokens_per_request: float = 2000.0
    active_days: float = 22.0
    active_hours: float = 6.0
    elasticity: float = 0.0
    target_margin: float = 0.2


def parse_usage(spec: str) -> tuple[float, float]:
    kind, _, args = spec.partition(":")
    try:
        mu, sigma = (float(x) for x in args.split(","))
    except ValueError:
        raise TokenomyError(f"--usage '{spec}' must look like lognormal:MU,SIGMA (natural log of monthly tokens)") from None
    if kind != "lognormal" or sigma < 0:
        raise TokenomyError(f"--usage '{spec}' must look like lognormal:MU,SIGMA with SIGMA >= 0")
    return mu, sigma


def lognormal_population(n: int, mu: float, sigma: float, a: Assumptions, rng: np.random.Generator) -> Population:
    total = rng.lognormal(mu, sigma, size=n)
    out = total * a.output_share
    inp = total - out
    cached = inp * a.cached_share
    tokens = np.stack([inp - cached, cached, out], axis=1)
    return Population(tokens, total / a.tokens_per_request)


def resampled_population(n: int, samples: np.ndarray, rng: np.random.Generator) -> Population:
    """samples: (M, 4) tenant-months of uncached input, cached input, output tokens, requests."""
    if len(samples) == 0:
        raise TokenomyError("--usage-from-ledger: the ledger has no billable events")
    pick = samples[rng.integers(0, len(samples), size=n)]
    return Population(pick[:, :3].astype(float), pick[:, 3].astype(float))


def ledger_samples(source) -> np.ndarray:
    """Tenant-month usage rows from a LedgerSource."""
    rows = []
    for p in source.months():
        for _tenant, events in sorted(source.events_by_tenant(p.start, p.end).items()):
            c = np.array([[e.categories["input"], e.categories["cached_input"], e.categories["output"], 1]
                          for e in events], dtype=float)
            rows.append(c.sum(axis=0))
    return np.array(rows, dtype=float).reshape(-1, 4)


# serving cost ------------------------------------------------------------------------------
def group_costs(book: PlanBook) -> dict[str, np.ndarray]:
    """USD per token (input, cached input, output) of each model group."""
    from tokenomy.catalog.prices import default_price_map

    out = {}
    for name, p in book.model_groups.items():
        if p.list_ is not None:
            lp = p.list_
            cached = lp.cached_input if lp.cached_input is not None else lp.input
            out[name] = np.array([lp.input, cached, lp.output]) / 1e6
        elif p.price_map is not None:
            tp = default_price_map().get(p.price_map).prices(p.tier)
            out[name] = np.array([tp.usd_per_token("input"), tp.usd_per_token("cached_input"),
                                  tp.usd_per_token("output")])
        else:
            from tokenomy.catalog import load_catalog
            from tokenomy.economics import self_hosted_unit_cost

            sh, cat = p.self_hosted, load_catalog()
            uc = self_hosted_unit_cost(cat.model(sh.model), cat.accelerator(sh.accelerator), cat.site(sh.site),
                                       count=sh.count, dtype=sh.dtype, slo_tpot_ms=sh.slo_tpot_ms,
                                       context=sh.context, utilization=sh.utilization)
            out[name] = np.array([uc.usd_per_mtok_input, uc.usd_per_mtok_input, uc.usd_per_mtok_output]) / 1e6
    return out


def _plan_group(book: PlanBook, plan: Plan, costs: dict[str, np.ndarray]) -> np.ndarray:
    if plan.model_group and plan.model_group in costs:
        return costs[plan.model_group]
    if costs:
        return next(iter(costs.values()))
    from tokenomy.catalog.prices import default_price_map

    tp = default_price_map().get(FALLBACK_GROUP).prices()
    return np.array([tp.usd_per_token("input"), tp.usd_per_token("cached_input"), tp.usd_per_token("output")])


# prices, vectorised ------------------------------------------------------------------------
def charge_np(price: CategoryPrice, q: np.ndarray, category: str) -> np.ndarray:
    per = float(price.per or default_per(category))
    q = np.maximum(q, 0.0)
    if price.scheme == "unit":
        return q * float(price.usd) / per
    if price.scheme == "package":
        return np.ceil(q / per - 1e-9) * float(price.usd)
    tiers = price.tiers or []
    bounds = [math.inf if t.up_to is None else float(t.up_to) for t in tiers]
    rates = [float(t.usd) / per for t in tiers]
    if price.scheme == "volume":
        idx = np.minimum(np.searchsorted(np.array(bounds), q, side="left"), len(rates) - 1)
        return q * np.array(rates)[idx]
    total, lower = np.zeros_like(q), 0.0
    for b, r in zip(bounds, rates):
        total += np.clip(q - lower, 0.0, b - lower) * r
        lower = b
    if not math.isinf(lower):
        total += np.maximum(q - lower, 0.0) * rates[-1]
    return total


def marginal_np(price: CategoryPrice, q: np.ndarray, category: str) -> np.ndarray:
    per = float(price.per or default_per(category))
    if price.scheme in ("unit", "package"):
        return np.full_like(q, float(price.usd) / per)
    tiers = price.tiers or []
    bounds = np.array([math.inf if t.up_to is None else float(t.up_to) for t in tiers])
    rates = np.array([float(t.usd) / per for t in tiers])
    return rates[np.minimum(np.searchsorted(bounds, q, side="right"), len(rates) - 1)]


def _quantity(pop: Population, category: str) -> np.ndarray:
    return pop.requests if category == "requests" else pop.tokens[:, CAT_INDEX[category]]


def usage_charges(prices: dict, pop: Population, free: dict | None = None) -> np.ndarray:
    total = np.zeros(len(pop.requests))
    for category, price in (prices or {}).items():
        q = _quantity(pop, category) - float((free or {}).get(category, 0))
        total += charge_np(price, q, category)
    return total


# caps --------------------------------------------------------------------------------------
def window_fraction(window_seconds: float, a: Assumptions) -> float:
    """Share of a month's usage that falls in one rolling window at the user's busiest."""
    if window_seconds < 86400:
        return min(1.0, window_seconds / (a.active_hours * 3600.0)) / a.active_days
    return min(1.0, (window_seconds / 86400.0) / DAYS_PER_MONTH)


def cap_share(cap: Cap, pop: Population, a: Assumptions) -> np.ndarray:
    """Share of each user's usage that stays within the cap."""
    used = (pop.requests if cap.unit == "requests" else pop.total) * window_fraction(cap.window_seconds, a)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(used > cap.limit, cap.limit / np.where(used > 0, used, 1.0), 1.0)


@dataclass
class Outcome:
    revenue: np.ndarray
    cost: np.ndarray
    served_tokens: np.ndarray
    capped: dict[int, np.ndarray]  # cap index -> share of usage above it (where it binds)

    @property
    def margin(self) -> np.ndarray:
        return self.revenue - self.cost


def evaluate(plan: Plan, pop: Population, cost_per_token: np.ndarray, costs: dict[str, np.ndarray],
             a: Assumptions, route_mix: dict[str, float] | None = None) -> Outcome:
    """Per-user revenue and serving cost of `plan` for population `pop`."""
    n = len(pop.requests)
    mix = route_mix or {}
    own_share = 1.0 - sum(mix.values())
    blended = own_share * cost_per_token + sum(s * costs[g] for g, s in mix.items())
    within = np.ones(n)
    binding = np.full(n, -1)
    for i, cap in enumerate(plan.caps):
        s = cap_share(cap, pop, a)
        tighter = s < within
        within = np.where(tighter, s, within)
        binding = np.where(tighter, i, binding)
    excess = 1.0 - within
    inside = pop.scaled(within)
    revenue = np.full(n, float(plan.subscription_usd or 0))
    cost = inside.tokens @ blended
    served = inside.total.copy()
    capped: dict[int, np.ndarray] = {}
    for i, cap in enumerate(plan.caps):
        share = np.where(binding == i, excess, 0.0)
        capped[i] = share
        if cap.at_cap == "block" or not share.any():
            continue
        over = pop.scaled(share)
        served += over.total
        if cap.at_cap == "downgrade":
            cost += over.tokens @ costs.get(cap.downgrade_group, cost_per_token)
        else:
            cost += over.tokens @ blended
            revenue += usage_charges(cap.overage, over)
    usage_rev = np.zeros(n)
    if plan.usage:
        usage_rev += usage_charges(plan.usage, inside, plan.free)
    if plan.cost_plus:
        markups = np.array([float(plan.cost_plus.markup_for(c)) for c in CATEGORIES])
        usage_rev += (inside.tokens * blended) @ (1.0 + markups)
    if plan.list_price:
        usage_rev += inside.tokens @ cost_per_token
    if plan.minimum_commitment_usd is not None:
        overage_rev = revenue - float(plan.subscription_usd or 0)
        usage_rev = np.maximum(usage_rev, float(plan.minimum_commitment_usd) - overage_rev)
    return Outcome(revenue + usage_rev, cost, served, capped)


def marginal_price(plan: Plan, pop: Population, cost_per_token: np.ndarray) -> np.ndarray:
    """Blended USD per token of the next token each user would use (before caps bind)."""
    n = len(pop.requests)
    total = np.maximum(pop.total, 1.0)
    p = np.zeros(n)
    for category in CATEGORIES:
        w = _quantity(pop, category) / total
        if plan.usage and category in plan.usage:
            q = _quantity(pop, category) - float(plan.free.get(category, 0))
            p += w * np.where(q > 0, marginal_np(plan.usage[category], q, category), 0.0)
        if plan.cost_plus:
            p += w * cost_per_token[CAT_INDEX[category]] * (1 + float(plan.cost_plus.markup_for(category)))
        if plan.list_price:
            p += w * cost_per_token[CAT_INDEX[category]]
    return p


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else 0.0


def _summary(o: Outcome, plan: Plan) -> dict:
    margin = o.margin
    revenue, cost = float(o.revenue.sum()), float(o.cost.sum())
    return {
        "kind": plan.kind, "users": len(margin),
        "revenue_usd": round(revenue, 2), "cost_usd": round(cost, 2), "margin_usd": round(revenue - cost, 2),
        "margin_share": round((revenue - cost) / revenue, 6) if revenue else None,
        "unprofitable_share": round(float((margin < 0).mean()), 6) if len(margin) else 0.0,
        "margin_per_user_usd": {"p10": round(_pct(margin, 10), 4), "p50": round(_pct(margin, 50), 4),
                                "p90": round(_pct(margin, 90), 4), "mean": round(float(margin.mean()), 4)},
        "cost_per_user_usd": {"p50": round(_pct(o.cost, 50), 4), "p90": round(_pct(o.cost, 90), 4),
                              "p99": round(_pct(o.cost, 99), 4)},
        "served_tokens": int(o.served_tokens.sum()),
    }


def _margin_share(o: Outcome) -> float:
    r = float(o.revenue.sum())
    return (r - float(o.cost.sum())) / r if r else -math.inf


def recommend_cap(plan: Plan, pop: Population, cpt: np.ndarray, costs, a: Assumptions, mix) -> dict | None:
    """Largest limit of the flat plan's first cap (default: monthly tokens, block) whose margin share
    reaches the target. Margin falls as the limit rises, so bisection on log(limit) finds it."""
    if plan.subscription_usd is None or plan.usage or plan.cost_plus or plan.list_price:
        return None
    base = plan.caps[0] if plan.caps else Cap(window="30d", limit=1, unit="tokens", at_cap="block")
    rest = list(plan.caps[1:])

    def with_limit(limit: float) -> Outcome:
        cap = base.model_copy(update={"limit": max(1, int(limit))})
        return evaluate(plan.model_copy(update={"caps": [cap, *rest]}), pop, cpt, costs, a, mix)

    used = (pop.requests if base.unit == "requests" else pop.total) * window_fraction(base.window_seconds, a)
    hi = max(2.0, float(used.max()) * 1.01)
    out = {"window": base.window, "unit": base.unit, "at_cap": base.at_cap, "target_margin": a.target_margin}
    if _margin_share(with_limit(hi)) >= a.target_margin:
        return {**out, "limit": None, "note": "the target is met with no binding cap",
                "margin_share": round(_margin_share(with_limit(hi)), 6)}
    if _margin_share(with_limit(1)) < a.target_margin:
        return {**out, "limit": None, "note": "no cap reaches the target: the fee does not cover the cost"}
    lo_l, hi_l = 0.0, math.log(hi)
    for _ in range(60):
        mid = (lo_l + hi_l) / 2
        if _margin_share(with_limit(math.exp(mid))) >= a.target_margin:
            lo_l = mid
        else:
            hi_l = mid
    limit = max(1, int(math.exp(lo_l)))
    o = with_limit(limit)
    share = _margin_share(o)
    bound = float((used > limit).mean())
    return {**out, "limit": limit, "margin_share": round(share, 6), "users_at_cap_share": round(bound, 6)}


def simulate_plan(plan: Plan, pop: Population, costs: dict[str, np.ndarray], book: PlanBook, a: Assumptions,
                  route_mix: dict[str, float] | None = None, collect: dict | None = None) -> dict:
    cpt = _plan_group(book, plan, costs)
    if a.elasticity:
        p_ref = float(pop.tokens.sum(axis=0) @ cpt / max(pop.total.sum(), 1.0)) * (1 + a.target_margin)
        mult = ((1 + marginal_price(plan, pop, cpt) / p_ref) / 2) ** (-a.elasticity)
        pop = pop.scaled(mult)
    o = evaluate(plan, pop, cpt, costs, a, route_mix)
    if collect is not None:
        collect[plan.name] = o.margin
    out = _summary(o, plan)
    out["model_group"] = plan.model_group
    out["serving_usd_per_mtok"] = {c: round(float(cpt[i]) * 1e6, 6) for c, i in CAT_INDEX.items()}
    out["caps"] = []
    for i, cap in enumerate(plan.caps):
        without = evaluate(plan.model_copy(update={"caps": [c for j, c in enumerate(plan.caps) if j != i]}),
                           pop, cpt, costs, a, route_mix)
        out["caps"].append({
            "cap": cap.label, "users_at_cap_share": round(float((o.capped[i] > 0).mean()), 6),
            "usage_over_cap_share": round(float((o.capped[i] * pop.total).sum() / max(pop.total.sum(), 1.0)), 6),
            "margin_effect_usd": round(float(o.margin.sum() - without.margin.sum()), 2)})
    out["tiers"] = _tier_effects(plan, pop, o)
    out["routing"] = _routing_effect(plan, pop, cpt, costs, a, route_mix, o)
    if a.elasticity:
        out["elasticity"] = {"elasticity": a.elasticity, "demand_multiplier_mean": round(float(mult.mean()), 6)}
    out["recommended_cap"] = recommend_cap(plan, pop, cpt, costs, a, route_mix)
    return out


def _routing_effect(plan: Plan, pop: Population, cpt: np.ndarray, costs: dict[str, np.ndarray], a: Assumptions,
                    route_mix: dict[str, float] | None, o: Outcome) -> dict | None:
    """Margin effect of the route mix; without one, of sending 30% of traffic to the cheapest group."""
    if route_mix:
        routed, unrouted, mix = o, evaluate(plan, pop, cpt, costs, a, None), route_mix
    else:
        blended = {g: float(pop.tokens.sum(axis=0) @ c) for g, c in costs.items()}
        cheapest = min(blended, key=blended.get, default=None)
        if cheapest is None or blended[cheapest] >= float(pop.tokens.sum(axis=0) @ cpt):
            return None
        mix = {cheapest: DEFAULT_ROUTE_SHARE}
        routed, unrouted = evaluate(plan, pop, cpt, costs, a, mix), o
    return {"mix": mix, "applied": bool(route_mix), "cost_usd_unrouted": round(float(unrouted.cost.sum()), 2),
            "cost_usd_routed": round(float(routed.cost.sum()), 2),
            "margin_effect_usd": round(float(routed.margin.sum() - unrouted.margin.sum()), 2),
            "unprofitable_share_routed": round(float((routed.margin < 0).mean()), 6)}


def _tier_effects(plan: Plan, pop: Population, o: Outcome) -> list[dict]:
    """Revenue each tier brings and the share of users who reach it; forgone revenue of the free tier."""
    rows = []
    for category, price in (plan.usage or {}).items():
        q = _quantity(pop, category) - float(plan.free.get(category, 0))
        if category in plan.free:
            forgone = charge_np(price, _quantity(pop, category), category).sum() - charge_np(price, q, category).sum()
            rows.append({"category": category, "tier": "free", "up_to": plan.free[category],
                         "revenue_usd": round(-float(forgone), 2)})
        if price.scheme not in ("graduated", "volume"):
            continue
        lower = 0.0
        for j, t in enumerate(price.tiers or []):
            upper = math.inf if t.up_to is None else float(t.up_to)
            one = CategoryPrice(scheme="unit", usd=t.usd, per=price.per)
            if price.scheme == "graduated":
                rev = charge_np(one, np.clip(q - lower, 0.0, upper - lower), category)
                reach = q > lower
            else:
                reach = (q > lower) & (q <= upper)
                rev = np.where(reach, charge_np(one, q, category), 0.0)
            rows.append({"category": category, "tier": j, "up_to": t.up_to, "users_share": round(float(reach.mean()), 6),
                         "revenue_usd": round(float(rev.sum()), 2)})
            lower = upper
    return rows


def simulate(book: PlanBook, pop: Population, a: Assumptions, route_mix: dict[str, float] | None = None,
             collect: dict | None = None) -> dict:
    costs = group_costs(book)
    for g in route_mix or {}:
        if g not in costs:
            from tokenomy.errors import UnknownNameError

            raise UnknownNameError("model group", g, list(costs))
    if not book.plans:
        raise TokenomyError("the plans file defines no plans to simulate")
    plans = {name: simulate_plan(plan, pop, costs, book, a, route_mix, collect) for name, plan in book.plans.items()}
    tot = pop.total
    return {"plans": plans, "users": len(tot),
            "usage": {"tokens_per_user": {"p50": round(_pct(tot, 50)), "p90": round(_pct(tot, 90)),
                                          "p99": round(_pct(tot, 99)), "mean": round(float(tot.mean()))}},
            "assumptions": {k: getattr(a, k) for k in a.__dataclass_fields__}}


def parse_route_mix(items: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        for part in item.replace(" ", ",").split(","):
            if not part:
                continue
            name, eq, share = part.partition("=")
            try:
                value = float(share)
            except ValueError:
                value = -1.0
            if not eq or not name or not 0 <= value <= 1:
                raise TokenomyError(f"--route-mix '{part}' must look like GROUP=SHARE with SHARE in [0, 1]")
            out[name] = value
    if sum(out.values()) > 1 + 1e-9:
        raise TokenomyError(f"--route-mix shares add up to {sum(out.values()):g} > 1")
    return out


def plot(result: dict, pops: dict[str, np.ndarray], path: str) -> None:
    """Small multiples: one histogram per plan on its own x range (a $500 plan no longer flattens
    a free tier's), the zero line, and the share of users below it."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(pops)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows + 0.6), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        margin = np.asarray(pops[name], dtype=float)
        lo, hi = np.percentile(margin, [1, 99]) if margin.size else (0.0, 0.0)
        if hi - lo < 1e-9:  # a plan whose every user has the same margin (e.g. cost-plus at 0 usage)
            lo, hi = lo - 1, hi + 1
        below = float(np.mean(margin < 0)) if margin.size else 0.0
        ax.hist(np.clip(margin, lo, hi), bins=40, color="tab:blue", alpha=0.8)
        ax.axvline(0, color="tab:red", lw=1)
        ax.set_title(f"{name}: {below:.0%} of users below 0", fontsize=10)
        ax.set_xlabel("margin per user per month (USD)", fontsize=8)
        ax.set_ylabel("users", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Margin per user by plan (each on its own scale, clipped to p1-p99)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
