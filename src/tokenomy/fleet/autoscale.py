"""Plans over the day: an autoscaling schedule, checked interval by interval in the simulator.

1. The horizon is cut into intervals (default an hour); each interval's requests are its load
   (a day-long trace, e.g. `diurnal:RATE:86400:conv`, or any trace or ledger window).
2. For every deployment type (accelerator x TP degree x dtype), the fewest replicas of that type
   alone that meet the attainment target on the interval's requests: found in the simulator
   (bisection from a hint, `rightsize.min_passing_count`), the busiest interval first.
3. One MILP over the intervals (`schedule_milp`) picks a reserved base, on-demand and spot
   replicas per interval, with a scale-up lead time and a replica floor; also the peak-sized
   static fleet and the on-demand-only schedule, priced the same way (the baselines).
4. Every schedule is simulated interval by interval, spot replicas interrupted at the given rate
   (the expected number, rounded up, taken out for the whole interval: a replacement arrives
   within the interval); an interval that misses the target raises its need and the MILP is
   solved again (bounded rounds).

Each interval is simulated on its own, starting empty (queues do not carry across intervals);
`check_seconds` simulates only the first seconds of each interval to bound the run time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tokenomy.catalog.price_classes import class_price, check_price_class
from tokenomy.errors import TokenomyError
from tokenomy.fleet.milp import Candidate, PlanRequest, build_candidates, make_buckets, solve_milp
from tokenomy.fleet.rightsize import min_passing_count
from tokenomy.fleet.schedule_milp import Schedule, TypePrices, solve_schedule
from tokenomy.fleet.workload import Trace


@dataclass(frozen=True)
class AutoscaleRequest:
    interval_minutes: float = 60.0
    min_replicas: int = 1  # replicas in service in every interval (spot included)
    lead_minutes: float = 10.0  # assumption: boot + model load of a new GPU replica; billed before it serves
    reserved_class: str | None = None  # "reserved-1y" | "reserved-3y": a reserved base in that class
    spot: bool = False  # spot replicas (price class "spot") on top
    # assumption, not a published figure (AWS's Spot Instance Advisor publishes monthly buckets):
    # interruptions per spot replica-hour
    spot_interruptions_per_hour: float = 0.05
    check_seconds: float = 0.0  # simulate the first N s of each interval (0: all of it)
    max_rounds: int = 4  # re-plan rounds after a failed interval
    max_types: int = 3  # deployment types kept after sizing the busiest interval (cheapest first)

    def validate(self) -> None:
        if not self.interval_minutes > 0:
            raise TokenomyError(f"--interval-minutes must be > 0, got {self.interval_minutes:g}")
        if self.min_replicas < 0:
            raise TokenomyError(f"--min-replicas must be >= 0, got {self.min_replicas}")
        if not 0 <= self.lead_minutes < self.interval_minutes:
            raise TokenomyError(f"--lead-minutes must be in [0, --interval-minutes), got {self.lead_minutes:g}")
        if self.reserved_class is not None and self.reserved_class not in ("reserved-1y", "reserved-3y"):
            check_price_class(self.reserved_class)
            raise TokenomyError(f"--reserved takes reserved-1y or reserved-3y, got '{self.reserved_class}'")
        if not 0 <= self.spot_interruptions_per_hour <= 60:
            raise TokenomyError("--spot-interruptions-per-hour must be in [0, 60]")
        if self.check_seconds < 0:
            raise TokenomyError(f"--check-seconds must be >= 0, got {self.check_seconds:g}")


@dataclass
class _Interval:
    start: float
    requests: int  # in the whole interval
    sample: Trace | None  # the requests simulated (None: empty)


def split_intervals(trace: Trace, interval_s: float, check_s: float = 0.0) -> list[_Interval]:
    """Consecutive intervals covering the trace (a last partial one counts if at least half long)."""
    if len(trace) == 0:
        raise TokenomyError("the trace is empty")
    rel = trace.arrived_at - trace.arrived_at[0]
    span = max(float(rel[-1]), 1e-9)
    n = max(1, int(math.floor(span / interval_s + 0.5)))
    if span < interval_s / 2:
        raise TokenomyError(f"the trace spans {span:.0f} s, shorter than half an interval ({interval_s:g} s): "
                            "lower --interval-minutes or use a longer trace (e.g. diurnal:RATE:86400)")
    out = []
    for h in range(n):
        lo, hi = h * interval_s, (h + 1) * interval_s if h < n - 1 else math.inf
        m = (rel >= lo) & (rel < hi)
        cnt = int(m.sum())
        if check_s > 0:
            m &= rel < lo + check_s
        out.append(_Interval(lo, cnt, trace.select(m, rel[m] - lo) if m.any() else None))
    return out


class _Sims:
    """Cached simulations: (type, interval, replicas, request mask) -> SLO-meeting requests."""

    def __init__(self, req: PlanRequest, intervals: list[_Interval], progress: Callable | None):
        self.req, self.intervals, self.progress = req, intervals, progress
        self.count = 0
        self._cache: dict[tuple, int] = {}

    def need_met(self, h: int) -> int:
        s = self.intervals[h].sample
        return 0 if s is None else int(math.ceil(self.req.attainment_target * len(s) - 1e-9))

    def met(self, cand: Candidate, h: int, replicas: int, mask: np.ndarray | None = None) -> int:
        from tokenomy.fleet.metrics import slo_met
        from tokenomy.fleet.simulator import SchedulerConfig, simulate

        tr = self.intervals[h].sample
        if tr is None or replicas < 1 or (mask is not None and not mask.any()):
            return 0
        key = (cand.key, h, replicas, None if mask is None else mask.tobytes())
        if key not in self._cache:
            sub = tr if mask is None else tr.select(mask)
            cfg = SchedulerConfig(max_num_seqs=self.req.max_num_seqs, max_batched_tokens=self.req.max_batched_tokens,
                                  prefix_caching=self.req.prefix_caching, lb=self.req.routing)
            res = simulate(sub, cand.step_model, replicas=replicas, config=cfg)
            self._cache[key] = int(slo_met(res, slo_ttft_ms=self.req.slo_ttft_ms, slo_tpot_ms=self.req.slo_tpot_ms).sum())
            self.count += 1
            if self.progress is not None:
                self.progress(self.count, None)
        return self._cache[key]

    def passes(self, cand: Candidate, h: int, replicas: int) -> bool:
        return self.met(cand, h, replicas) >= self.need_met(h)


def _type_prices(cands: list[Candidate], req: PlanRequest, ar: AutoscaleRequest) -> tuple[list[TypePrices], dict]:
    """Per deployment type: on-demand (the plan's class), reserved and spot prices per replica-hour;
    and the accelerators each optional class does not offer (reported, never priced otherwise)."""
    out, missing = [], {"reserved": set(), "spot": set()}

    def price(c: Candidate, cls: str, what: str) -> float | None:
        try:
            return class_price(c.accelerator, cls, req.provider).usd_per_hour * c.count
        except TokenomyError:
            missing[what].add(c.accelerator.id)
            return None

    for c in cands:
        out.append(TypePrices(c.key, c.rental_usd_per_hour,
                              price(c, ar.reserved_class, "reserved") if ar.reserved_class else None,
                              price(c, "spot", "spot") if ar.spot else None))
    return out, {k: sorted(v) for k, v in missing.items() if v}


def _sized_needs(sims: _Sims, cands: list[Candidate], req: PlanRequest, intervals: list[_Interval],
                 prices: dict[str, TypePrices], max_types: int) -> tuple[dict[str, list[float]], list[Candidate]]:
    """need[type][h] for the cheapest `max_types` types (by their price at the busiest interval)."""
    peak = max(range(len(intervals)), key=lambda h: intervals[h].requests)
    ptr = intervals[peak].sample
    buckets, _ = make_buckets(ptr)
    peak_need: dict[str, int] = {}
    for c in cands:
        hint = solve_milp(req, buckets, [c], miss_budget_requests=len(ptr))
        h0 = int(hint.x.sum()) if hint is not None else 1
        n = min_passing_count(lambda n, c=c: sims.passes(c, peak, n), max(1, h0), 4 * max(1, h0) + 8)
        if n is not None:
            peak_need[c.key] = n
    if not peak_need:
        raise TokenomyError(f"no deployment type meets the SLO (TPOT {req.slo_tpot_ms:g} ms, TTFT {req.slo_ttft_ms} ms) "
                            f"on the busiest interval ({intervals[peak].requests} requests)")

    def unit(key: str) -> float:
        p = prices[key]
        return min(v for v in (p.on_demand, p.reserved, p.spot) if v is not None)

    kept = sorted(peak_need, key=lambda k: peak_need[k] * unit(k))[:max_types]
    kept_cands = [c for c in cands if c.key in kept]
    need: dict[str, list[float]] = {}
    for c in kept_cands:
        row: list[float] = [0.0] * len(intervals)
        n_peak = peak_need[c.key]
        for h, iv in enumerate(intervals):
            if iv.sample is None:
                continue
            if h == peak:
                row[h] = n_peak
                continue
            hint = max(1, math.ceil(n_peak * iv.requests / max(1, intervals[peak].requests)))
            n = min_passing_count(lambda n, c=c, h=h: sims.passes(c, h, n), hint, 2 * n_peak + 4)
            row[h] = math.inf if n is None else n
        need[c.key] = row
    return need, kept_cands


def _interruptions(spot: int, rate_per_hour: float, interval_hours: float) -> int:
    """Spot replicas taken out in an interval: the expected number, rounded up."""
    p = 1.0 - math.exp(-rate_per_hour * interval_hours)
    return int(math.ceil(spot * p - 1e-9)) if spot > 0 and p > 0 else 0


def _check(sims: _Sims, sched: Schedule, cands: dict[str, Candidate], need: dict[str, list[float]],
           ar: AutoscaleRequest, seed: int) -> list[dict]:
    """Simulate every interval of the schedule (spot interruptions applied): per interval its
    attainment, replicas in service and interruptions."""
    dt = ar.interval_minutes / 60.0
    out = []
    for h, iv in enumerate(sims.intervals):
        live = {}
        lost = {}
        for key in cands:
            total = sched.replicas(h, key)
            k = _interruptions(sched.spot[h].get(key, 0), ar.spot_interruptions_per_hour, dt)
            if total - k > 0:
                live[key] = total - k
            if k:
                lost[key] = k
        if iv.sample is None:
            out.append({"attainment": None, "passes": True, "live": live, "interrupted": lost})
            continue
        n_req = len(iv.sample)
        keys = [k for k in live if math.isfinite(need[k][h]) and need[k][h] > 0]
        if not keys:
            out.append({"attainment": 0.0, "passes": False, "live": live, "interrupted": lost})
            continue
        if len(keys) == 1:
            met = sims.met(cands[keys[0]], h, live[keys[0]])
        else:  # weighted random split by capacity share (a weighted load balancer over the pools)
            w = np.array([live[k] / need[k][h] for k in keys])
            rng = np.random.default_rng(seed + h)
            pick = rng.choice(len(keys), size=n_req, p=w / w.sum())
            met = sum(sims.met(cands[k], h, live[k], pick == i) for i, k in enumerate(keys))
        out.append({"attainment": met / n_req, "passes": met >= sims.need_met(h), "live": live, "interrupted": lost})
    return out


def plan_autoscale(trace: Trace, req: PlanRequest, ar: AutoscaleRequest,
                   progress: Callable[[int, int | None], None] | None = None) -> dict:
    """The autoscaling schedule, its cost per day against the static peak-sized fleet and the
    on-demand-only schedule, every one simulated interval by interval."""
    from tokenomy.fleet.planner import _exclude_overlong

    ar.validate()
    if req.sites:
        raise TokenomyError("--autoscale prices rental only: drop --sites / --power-cap")
    trace, overlong = _exclude_overlong(trace, req)
    interval_s = ar.interval_minutes * 60.0
    intervals = split_intervals(trace, interval_s, min(ar.check_seconds, interval_s) if ar.check_seconds else 0.0)
    buckets, _ = make_buckets(trace)
    cands = [c for c in build_candidates(req, buckets) if c.watts > 0]
    if not cands:
        raise TokenomyError(f"{req.model.id} fits on none of {', '.join(a.id for a in req.accelerators)} under the SLOs")
    all_prices, not_offered = _type_prices(cands, req, ar)
    prices = {p.key: p for p in all_prices}
    sims = _Sims(req, intervals, progress)
    need, kept = _sized_needs(sims, cands, req, intervals, prices, ar.max_types)
    types = [prices[c.key] for c in kept]
    by_key = {c.key: c for c in kept}
    dt = ar.interval_minutes / 60.0
    avail = math.exp(-ar.spot_interruptions_per_hour * dt)
    common = dict(interval_hours=dt, min_replicas=ar.min_replicas, lead_hours=ar.lead_minutes / 60.0,
                  spot_availability=avail)
    variants = {"static": dict(static=True), "autoscale_on_demand": {},
                "autoscale": dict(use_reserved=ar.reserved_class is not None, use_spot=ar.spot)}
    # Each schedule re-plans on its own needs: a spot schedule that fails under interruptions
    # must not make the static baseline dearer.
    needs = {name: {k: list(row) for k, row in need.items()} for name in variants}
    scheds: dict[str, Schedule] = {}
    checks: dict[str, list[dict]] = {}
    rounds = 0
    todo = list(variants)
    while todo:
        for name in todo:
            s = solve_schedule(types, needs[name], **common, **variants[name])
            if s is None:
                raise TokenomyError(f"no feasible {name.replace('_', ' ')} schedule (the MILP is infeasible)")
            scheds[name] = s
            checks[name] = _check(sims, s, by_key, needs[name], ar, req.seed)
        todo = [n for n in todo if any(not r["passes"] for r in checks[n])]
        if not todo or rounds >= ar.max_rounds:
            break
        rounds += 1
        for name in todo:  # re-plan upward: one more replica of any type in each failed interval
            for h, r in enumerate(checks[name]):
                if not r["passes"]:
                    for row in needs[name].values():
                        if math.isfinite(row[h]):
                            row[h] += 1
    horizon_h = len(intervals) * dt
    per_day = 24.0 / horizon_h

    def usd_day(name: str) -> float:
        return round(scheds[name].usd * per_day, 4)

    chosen = scheds["autoscale"]
    rows = []
    for h, iv in enumerate(intervals):
        c = checks["autoscale"][h]
        rows.append({
            "interval": h, "start_hour": round(iv.start / 3600.0, 4), "requests": iv.requests,
            "rate_per_s": round(iv.requests / interval_s, 4),
            "replicas": {k: {"reserved": chosen.reserved.get(k, 0), "on_demand": chosen.on_demand[h].get(k, 0),
                             "spot": chosen.spot[h].get(k, 0)}
                         for k in by_key if chosen.replicas(h, k) > 0},
            "spot_interrupted": c["interrupted"],
            "usd": round(chosen.usd_per_interval[h], 4),
            "slo_attainment": None if c["attainment"] is None else round(c["attainment"], 6),
            "simulated_requests": 0 if iv.sample is None else len(iv.sample),
            "meets_target": c["passes"],
        })
    static = scheds["static"]
    return {
        "kind": "fleet-autoscale",
        "model": req.model.id, "slo_tpot_ms": req.slo_tpot_ms, "slo_ttft_ms": req.slo_ttft_ms,
        "attainment_target": req.attainment_target, "trace": trace.summary(), "excluded_overlong": overlong,
        "interval_minutes": ar.interval_minutes, "intervals": len(intervals), "horizon_hours": round(horizon_h, 4),
        "min_replicas": ar.min_replicas, "lead_minutes": ar.lead_minutes,
        "price_classes": {"on_demand": req.price_class, "reserved": ar.reserved_class, "spot": "spot" if ar.spot else None},
        "provider": req.provider, "not_offered": not_offered,
        "spot_interruptions_per_hour": ar.spot_interruptions_per_hour if ar.spot else None,
        "check_seconds": ar.check_seconds or None,
        "schedule": rows,
        "static_fleet": dict(static.on_demand[0]),
        "usd_per_day_static": usd_day("static"),
        "usd_per_day_autoscale_on_demand": usd_day("autoscale_on_demand"),
        "usd_per_day": usd_day("autoscale"),
        "saving_autoscale_alone": round(1 - scheds["autoscale_on_demand"].usd / static.usd, 6),
        "saving_vs_static": round(1 - chosen.usd / static.usd, 6),
        "reserved_base": dict(chosen.reserved),
        "needs": {k: [None if not math.isfinite(v) else int(v) for v in row] for k, row in need.items()},
        "needs_replanned": {name: {k: [None if not math.isfinite(v) else int(v) for v in row] for k, row in nd.items()}
                            for name, nd in needs.items() if nd != need},
        "types": [{"key": t.key, "usd_per_hour_on_demand": round(t.on_demand, 4),
                   "usd_per_hour_reserved": None if t.reserved is None else round(t.reserved, 4),
                   "usd_per_hour_spot": None if t.spot is None else round(t.spot, 4)} for t in types],
        "meets_target": all(r["passes"] for c in checks.values() for r in c),
        "failing_intervals": {name: [h for h, r in enumerate(c) if not r["passes"]] for name, c in checks.items()
                              if any(not r["passes"] for r in c)},
        "replan_rounds": rounds,
        "simulations": sims.count,
        "solver": "HiGHS MILP over the intervals (scipy.optimize.milp), every interval checked in the simulator",
    }
