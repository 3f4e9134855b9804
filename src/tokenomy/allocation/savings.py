"""What committed-first saved against `cost` routing on list prices, on the same traffic.

Actual = the bill of the committed (owned / reserved) deployments over the window (rent + the
energy they drew: tokenomy costs) + what committed-first requests cost on the other deployments
(the ledger's cost of pay-per-token / on-demand requests).

Counterfactual = the same requests where `cost` would have sent them: each committed-first event
records (`extra.counterfactual`, written at decision time) the deployment `cost` ranks first on list
prices and its USD/Mtok. A request `cost` would send elsewhere is re-priced there with its own
tokens; the committed deployments still cost their rent and idle power for the window, plus the
energy above idle of the tokens they would still have served (the window's energy above idle x the
share of their tokens that stay: a linear-in-tokens approximation of the power curve).
"""

from __future__ import annotations

import json
from decimal import Decimal

from tokenomy.allocation.report import compute, usd
from tokenomy.allocation.spec import CostSpec, rates_of
from tokenomy.allocation.store import CapacityStore
from tokenomy.routing.savings import reprice_usd

_PICO = Decimal("1e-12")


def _events(store: CapacityStore, since: float, until: float) -> list[tuple]:
    pg = store.db.url is not None
    cf = "extra->>'counterfactual'" if pg else "json_extract(extra, '$.counterfactual')"
    return store.db.run(
        "SELECT id, deployment, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, cost_pusd, "
        f"{cf} FROM events WHERE ts >= ? AND ts < ? AND {cf} IS NOT NULL", (since, until))


def committed_savings(store: CapacityStore, since: float, until: float) -> dict:
    """Totals over [since, until) (epoch s); money as exact decimal strings."""
    costs, served, specs = compute(store, since, until)
    committed = {d for d, key in specs.items() if CostSpec.from_key(d, key).committed}
    bill = {d: 0 for d in committed}
    rent = dict(bill)
    above_idle = dict(bill)  # energy above the idle draw, pico-USD
    for c in costs:
        if c.deployment in committed:
            rates = rates_of(specs[c.deployment])
            idle_energy = round(rates.idle_watts * c.interval_s * rates.energy_pusd_per_j)
            bill[c.deployment] += c.bill_pusd
            rent[c.deployment] += c.rent_pusd
            above_idle[c.deployment] += max(0, c.energy_pusd - idle_energy)
    tokens = {d: 0 for d in committed}
    for r in served:
        if r.deployment in committed and since <= r.end_s < until:
            tokens[r.deployment] += r.input_tokens + r.output_tokens
    moved = {d: 0 for d in committed}  # tokens a committed deployment served that `cost` would have sent away
    api = cf_api = Decimal(0)
    n = on_committed = spilled = 0
    for _rid, dep, inp, cached, out, reasoning, cost_pusd, raw in _events(store, since, until):
        try:
            cf = json.loads(raw)
            cf_dep, cf_prices = str(cf["deployment"]), list(cf["usd_per_mtok"])
            cf_committed = cf_dep in set(cf.get("committed") or ())
        except (ValueError, TypeError, KeyError):
            continue  # not written by this gateway: skipped, not guessed
        n += 1
        if dep in committed:
            on_committed += 1
            if not cf_committed:
                moved[dep] += int(inp) + int(out)
        else:
            spilled += 1
            api += Decimal(int(cost_pusd)) * _PICO
        if not cf_committed:
            cf_api += reprice_usd(cf_prices, int(inp), int(cached), int(out), int(reasoning))
    committed_bill = Decimal(sum(bill.values())) * _PICO
    cf_committed_pusd = 0
    for d in committed:
        kept = 1.0 - moved[d] / tokens[d] if tokens[d] else 1.0
        cf_committed_pusd += bill[d] - above_idle[d] + round(above_idle[d] * max(0.0, kept))
    cf_committed_bill = Decimal(cf_committed_pusd) * _PICO
    actual = committed_bill + api
    counterfactual = cf_committed_bill + cf_api
    saved = counterfactual - actual
    return {
        "since": since, "until": until, "requests": n, "on_committed": on_committed, "spilled": spilled,
        "committed_bill_usd": usd(sum(bill.values())), "api_usd": _money(api), "actual_usd": _money(actual),
        "cost_routing_committed_bill_usd": usd(cf_committed_pusd), "cost_routing_api_usd": _money(cf_api),
        "cost_routing_usd": _money(counterfactual), "saved_usd": _money(saved),
        "saved_pct": round(float(saved / counterfactual) * 100.0, 4) if counterfactual else None,
        "deployments": {d: {"bill_usd": usd(bill[d]), "rent_usd": usd(rent[d]), "tokens": tokens[d],
                            "tokens_cost_routing_moves": moved[d]} for d in sorted(committed)},
        "definition": "actual = committed deployments' bill (rent + energy drawn) + committed-first requests' "
                      "spend elsewhere; cost routing = each request where `cost` ranked first on list prices "
                      "(re-priced with its tokens), committed deployments at rent + idle power + the energy "
                      "above idle of the tokens they keep"}


def _money(x: Decimal) -> str:
    return format(x.normalize(), "f") if x else "0"


def format_committed(s: dict) -> str:
    if not s["requests"]:
        return "no committed-first requests in this period"
    pct = f" ({s['saved_pct']:.1f}%)" if s["saved_pct"] is not None else ""
    return "\n".join([
        f"committed-first requests: {s['requests']}   on committed capacity: {s['on_committed']}   "
        f"spilled: {s['spilled']}",
        f"actual:        ${s['actual_usd']} = committed bill ${s['committed_bill_usd']} + elsewhere ${s['api_usd']}",
        f"cost routing:  ${s['cost_routing_usd']} = committed ${s['cost_routing_committed_bill_usd']} + "
        f"elsewhere ${s['cost_routing_api_usd']}",
        f"saved:         ${s['saved_usd']}{pct}"])
