"""`tokenomy costs` and the dashboard's cost figures: per self-hosted deployment over a window,
its bill, what was allocated to requests, its idle cost, the tokens it served and its actual
$/Mtok next to the cost model's at the same utilisation."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from tokenomy.allocation.allocate import IntervalCost, allocate
from tokenomy.allocation.spec import PUSD_PER_USD, modelled_usd_per_mtok_output, rates_of
from tokenomy.allocation.store import CapacityStore, Served


def usd(pusd: int) -> str:
    return format(Decimal(int(pusd)).scaleb(-12).normalize(), "f") if pusd else "0"


def compute(store: CapacityStore, since: float, until: float) -> tuple[list[IntervalCost], list[Served], dict]:
    intervals = store.intervals(since, until)
    specs = {iv.deployment: iv.spec for iv in intervals}
    served = store.served(sorted(specs), since, until)
    costs = allocate(intervals, served, rates_of, since, until)
    return costs, served, specs


def costs_report(store: CapacityStore, since: float, until: float, *, series_step_s: int | None = None) -> dict:
    costs, served, specs = compute(store, since, until)
    out: dict[str, dict] = {}
    series: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for c in costs:
        d = out.setdefault(c.deployment, {"bill": 0, "rent": 0, "energy": 0, "allocated": 0, "idle": 0,
                                          "busy_s": 0.0, "provisioned_s": 0})
        d["bill"] += c.bill_pusd
        d["rent"] += c.rent_pusd
        d["energy"] += c.energy_pusd
        d["allocated"] += c.allocated_pusd
        d["idle"] += c.idle_pusd
        d["busy_s"] += c.busy_s
        d["provisioned_s"] += c.interval_s
        if series_step_s:
            b = c.start // series_step_s * series_step_s
            point = series[(b, c.deployment)]
            point[0] += c.bill_pusd
            point[1] += c.allocated_pusd
            point[2] += c.idle_pusd
    deployments = {}
    for name, d in sorted(out.items()):
        rates = rates_of(specs[name])
        # tokens of the requests that ended in the window (a request is counted where it ends),
        # also those whose interval a gateway has not recorded yet (the bill catches up then)
        reqs = [r for r in served if r.deployment == name and since <= r.end_s < until]
        inp = sum(r.input_tokens for r in reqs)
        outp = sum(r.output_tokens for r in reqs)
        capacity = rates.capacity_output_tokens_per_s * d["provisioned_s"]
        util = outp / capacity if capacity else None
        bill_usd = d["bill"] / PUSD_PER_USD
        deployments[name] = {
            "hourly_usd": rates.hourly_usd, "bill_usd": usd(d["bill"]), "rent_usd": usd(d["rent"]),
            "energy_usd": usd(d["energy"]), "allocated_usd": usd(d["allocated"]), "idle_usd": usd(d["idle"]),
            "provisional_cost_usd": usd(sum(r.cost_pusd for r in reqs)),
            "requests": len(reqs), "tokens": inp + outp, "input_tokens": inp, "output_tokens": outp,
            "usd_per_mtok_actual": bill_usd / (inp + outp) * 1e6 if inp + outp else None,
            "usd_per_mtok_output_actual": bill_usd / outp * 1e6 if outp else None,
            "usd_per_mtok_output_modelled": modelled_usd_per_mtok_output(specs[name], min(util, 1.0)) if util else None,
            "utilization": util, "busy_share": d["busy_s"] / d["provisioned_s"] if d["provisioned_s"] else None,
            "provisioned_s": d["provisioned_s"], "spec": specs[name]}
    total_bill = sum(d["bill"] for d in out.values())
    total = {"bill_usd": usd(total_bill), "allocated_usd": usd(sum(d["allocated"] for d in out.values())),
             "idle_usd": usd(sum(d["idle"] for d in out.values())),
             "tokens": sum(d["tokens"] for d in deployments.values())}
    report = {"since": since, "until": until, "deployments": deployments, "total": total,
              "rule": "rental + energy (perf-model power at the batch in flight) per interval; each instant's cost "
                      "split equally among the requests in flight; time with none in flight is idle"}
    if series_step_s:
        report["series"] = [{"ts": b, "deployment": dep, "bill_usd": v[0] / PUSD_PER_USD,
                             "allocated_usd": v[1] / PUSD_PER_USD, "idle_usd": v[2] / PUSD_PER_USD}
                            for (b, dep), v in sorted(series.items())]
    return report


def allocated_by_request(store: CapacityStore, since: float, until: float) -> tuple[dict[str, int], dict[str, int]]:
    """(request id -> allocated pico-USD, deployment -> idle pico-USD) over the window: the serving
    cost margins use for self-hosted requests."""
    costs, _, _ = compute(store, since, until)
    alloc: dict[str, int] = defaultdict(int)
    idle: dict[str, int] = defaultdict(int)
    for c in costs:
        for rid, v in c.allocations.items():
            alloc[rid] += v
        idle[c.deployment] += c.idle_pusd
    return dict(alloc), dict(idle)
