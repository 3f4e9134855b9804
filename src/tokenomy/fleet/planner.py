"""Fleet planner: the cheapest accelerator mix (and sites) for a workload under SLOs.

In the manner of Mélange (Griggs et al., 2024), around the MILP in `fleet.milp`, with the
simulator as the judge: the MILP proposes (derated while its plan misses the attainment
target), `fleet.rightsize` corrects downwards (pooled single deployments bisected on the
replica count; mixes trimmed column by column). The plan is the cheapest passing fleet among
those and any incumbents (plans that passed a tighter SLO or a higher rate), so cost is
monotone in the SLO and rate, and adding options never makes it dearer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from tokenomy.errors import TokenomyError
from tokenomy.fleet.capacity import OperatingPoint
from tokenomy.fleet.costing import facility_watts
from tokenomy.fleet.milp import (  # noqa: F401  (re-exported)
    OUTPUT_EDGES,
    PROMPT_EDGES,
    Bucket,
    Candidate,
    PlanRequest,
    _col_cost,
    _explain_uncovered,
    _Milp,
    _min_power_message,
    _site_list,
    build_candidates,
    make_buckets,
    peak_factor,
    solve_milp,
)
from tokenomy.fleet.rightsize import min_passing_count, trim_counts
from tokenomy.fleet.workload import Trace
from tokenomy.perf.quant import DTYPES, QUALITY_NOTE


def _describe(req: PlanRequest, trace: Trace, buckets: list[Bucket], cands: list[Candidate], sol: _Milp,
              rate_scale: float = 1.0) -> dict:
    sites = _site_list(req)
    assignments = []
    site_mw: dict[str, float] = {}
    for j, (ci, si) in enumerate(sol.columns):
        if sol.x[j] <= 0:
            continue
        c, s = cands[ci], sites[si]
        assigned_rate = float(sum(sol.y[b, j] * bk.rate_per_s for b, bk in enumerate(buckets)))
        mw = facility_watts(c.watts, s) * int(sol.x[j]) / 1e6
        if s is not None:
            site_mw[s.id] = site_mw.get(s.id, 0.0) + mw
        assignments.append({
            "accelerator": c.accelerator.id, "count": c.count, "dtype": c.dtype, "kv_dtype": c.kv_dtype,
            "site": s.id if s else None,
            "replicas": int(sol.x[j]), "devices": int(sol.x[j]) * c.count,
            "usd_per_hour": round(_col_cost(c, s) * int(sol.x[j]), 4),
            "replica_usd_per_hour": round(_col_cost(c, s), 4),
            "rate_per_s": round(assigned_rate * rate_scale, 4),
            "utilization_planned": round(float(sol.load[j] / sol.x[j]), 4),
            "it_watts_per_replica": round(c.watts, 1),
            "facility_mw": round(mw, 6),
        })
    assignments.sort(key=lambda a: -a["usd_per_hour"])
    tokens_per_hour = trace.total_tokens / max(trace.duration_seconds, 1e-9) * 3600.0 * rate_scale
    return {
        "usd_per_hour": round(sol.usd_per_hour, 4),
        "usd_per_mtok": round(sol.usd_per_hour / (tokens_per_hour / 1e6), 6) if tokens_per_hour else None,
        "assignments": assignments,
        "site_mw": {k: round(v, 6) for k, v in site_mw.items()},
    }


def route_requests(trace: Trace, req: PlanRequest, bucket_of: np.ndarray, cands: list[Candidate],
                   sol: _Milp) -> np.ndarray:
    """Column of each request: drawn with probability y[bucket, column] among columns in use.
    Requests of a bucket the plan leaves out (within the miss budget) still arrive: they go to
    the used column with the largest KV cache, where they take capacity like any other."""
    rng = np.random.default_rng(req.seed)
    nc = len(sol.columns)
    share = sol.y * (sol.x > 0)[None, :]
    used = [j for j in range(nc) if sol.x[j] > 0]
    if used:
        spill = max(used, key=lambda j: int(cands[sol.columns[j][0]].step_model.max_kv_tokens))
        share[share.sum(axis=1) <= 1e-12, spill] = 1.0
    share = share / np.maximum(share.sum(axis=1, keepdims=True), 1e-12)
    u = rng.uniform(size=len(trace))
    cum = np.cumsum(share, axis=1)
    return np.minimum((cum[bucket_of] < u[:, None]).sum(axis=1), nc - 1)


class _Judge:
    """The simulator as the judge of plans on one trace under one request: caches each
    (deployment, requests, replicas) simulation and counts them for the progress display."""

    def __init__(self, trace: Trace, req: PlanRequest, bucket_of: np.ndarray,
                 progress: Callable[[int, int | None], None] | None = None):
        self.trace, self.req, self.bucket_of, self.progress = trace, req, bucket_of, progress
        self.need = int(math.ceil(req.attainment_target * len(trace) - 1e-9))
        self.simulations = 0
        self._cache: dict[tuple, tuple[int, float]] = {}

    def run(self, cand: Candidate, mask: np.ndarray | None, replicas: int) -> tuple[int, float]:
        """(SLO-meeting requests, energy J) of `replicas` of `cand` serving the masked requests."""
        from tokenomy.fleet.metrics import slo_met
        from tokenomy.fleet.simulator import SchedulerConfig, simulate

        key = (id(cand.step_model), cand.key, None if mask is None else mask.tobytes(), replicas)
        if key not in self._cache:
            tr = self.trace
            if mask is not None:
                if not mask.any():
                    return 0, 0.0
                tr = tr.select(mask)  # block hashes included: the simulation counts prefix-cache hits
            cfg = SchedulerConfig(max_num_seqs=self.req.max_num_seqs, max_batched_tokens=self.req.max_batched_tokens,
                                  prefix_caching=self.req.prefix_caching, lb=self.req.routing)
            res = simulate(tr, cand.step_model, replicas=replicas, config=cfg)
            ok = slo_met(res, slo_ttft_ms=self.req.slo_ttft_ms, slo_tpot_ms=self.req.slo_tpot_ms)
            self._cache[key] = (int(ok.sum()), float(res.energy_joules.sum()))
            self.simulations += 1
            if self.progress is not None:
                self.progress(self.simulations, None)
        return self._cache[key]

    def plan(self, cands: list[Candidate], sol: _Milp) -> tuple[float, dict[str, float]]:
        """(attainment, attainment per candidate key) of a plan."""
        col = route_requests(self.trace, self.req, self.bucket_of, cands, sol)
        met_total = 0
        per_key: dict[str, list[int]] = {}
        for j in range(len(sol.columns)):
            m = col == j
            if sol.x[j] <= 0 or not m.any():
                continue
            c = cands[sol.columns[j][0]]
            met, _ = self.run(c, m, int(sol.x[j]))
            met_total += met
            s = per_key.setdefault(c.key, [0, 0])
            s[0] += met
            s[1] += int(m.sum())
        att = met_total / len(self.trace) if len(self.trace) else 1.0
        return att, {k: v[0] / v[1] for k, v in per_key.items()}

    def passes(self, att: float | None) -> bool:
        return att is not None and att >= self.req.attainment_target


def simulate_plan(trace: Trace, req: PlanRequest, bucket_of: np.ndarray, cands: list[Candidate], sol: _Milp,
                  progress: Callable[[int, int], None] | None = None) -> tuple[float, dict[str, float], dict]:
    """Simulate the plan on the trace; returns (attainment, attainment per candidate key, totals)."""
    judge = _Judge(trace, req, bucket_of)
    att, per_key = judge.plan(cands, sol)
    col = route_requests(trace, req, bucket_of, cands, sol)
    energy = sum(judge.run(cands[ci], col == j, int(sol.x[j]))[1]
                 for j, (ci, _) in enumerate(sol.columns) if sol.x[j] > 0)
    return att, per_key, {"energy_joules": energy, "unrouted": 0}


@dataclass
class _Fleet:
    """A plan: MILP-shaped solution, the candidates its columns index, its simulated attainment."""
    sol: _Milp
    cands: list[Candidate]
    attainment: float | None
    how: str

    @property
    def usd_per_hour(self) -> float:
        return self.sol.usd_per_hour

    @property
    def types(self) -> set[str]:
        return {self.cands[ci].accelerator.id for j, (ci, _) in enumerate(self.sol.columns) if self.sol.x[j] > 0}


def _pooled(req: PlanRequest, buckets: list[Bucket], cands: list[Candidate], ci: int, si: int, n: int) -> _Milp:
    """One pooled deployment of n replicas serving every bucket, in the MILP's shape."""
    c, site = cands[ci], _site_list(req)[si]
    load = sum(b.rate_per_s / p.rate_per_s for b, p in zip(buckets, c.points)
               if isinstance(p, OperatingPoint) and p.rate_per_s > 0)
    return _Milp([(ci, si)], np.array([n], dtype=np.int64), np.ones((len(buckets), 1)),
                 _col_cost(c, site) * n, np.array([load]))


def _with_counts(sol: _Milp, cands: list[Candidate], sites, counts: list[int]) -> _Milp:
    x = np.array(counts, dtype=np.int64)
    cost = float(sum(_col_cost(cands[ci], sites[si]) * int(n) for (ci, si), n in zip(sol.columns, x)))
    return _Milp(sol.columns, x, sol.y, cost, sol.load)


def _pooled_search(judge: _Judge, req: PlanRequest, buckets: list[Bucket], cands: list[Candidate],
                   budget: int, bound_usd: float = math.inf) -> list[_Fleet]:
    """The fewest replicas of each single deployment (accelerator, TP degree, dtype; at its cheapest
    site) that pass the simulation, cheapest-looking first; a deployment that cannot beat the best
    found so far (or `bound_usd`) is cut off at that cost. Returns the passing fleets found."""
    sites = _site_list(req)
    caps = req.power_caps_mw
    options = []
    for ci, c in enumerate(cands):
        if c.watts <= 0:
            continue
        hint = solve_milp(req, buckets, cands, allowed=lambda k, key=c.key: k.key == key,
                          miss_budget_requests=budget)
        if hint is None:
            # The analytic capacity rules it out (it ignores how the simulated scheduler batches):
            # still simulated, after the others, from one replica (the planner audit found
            # 3 x A10G passing where the analytic model saw no feasible plan).
            si = min(range(len(sites)), key=lambda si: _col_cost(c, sites[si]))
            options.append((1, _col_cost(c, sites[si]), ci, si, 1))
            continue
        j = int(np.argmax(hint.x))
        options.append((0, hint.usd_per_hour, ci, hint.columns[j][1], int(hint.x.sum())))
    options.sort()
    found: list[_Fleet] = []
    best = bound_usd
    for _, _, ci, si, hint_n in options:
        unit = _col_cost(cands[ci], sites[si])
        n_max = 4 * hint_n + 8
        if math.isfinite(best):
            n_max = min(n_max, int(math.floor((best - 1e-9) / unit)))
        site = sites[si]
        if site is not None and site.id in caps:
            n_max = min(n_max, int(caps[site.id] / (facility_watts(cands[ci].watts, site) / 1e6)))
        if n_max < 1:
            continue
        n = min_passing_count(lambda n: judge.run(cands[ci], None, n)[0] >= judge.need, hint_n, n_max)
        if n is None:
            continue
        sol = _pooled(req, buckets, cands, ci, si, n)
        found.append(_Fleet(sol, cands, judge.run(cands[ci], None, n)[0] / max(1, len(judge.trace)),
                            f"pooled {cands[ci].key}"))
        best = min(best, sol.usd_per_hour)
    return found


def _trim(judge: _Judge, req: PlanRequest, fleet: _Fleet) -> _Fleet:
    """Remove replicas column by column while the whole plan still passes (routing held fixed)."""
    sol, cands = fleet.sol, fleet.cands
    sites = _site_list(req)
    col = route_requests(judge.trace, req, judge.bucket_of, cands, sol)
    masks = [col == j for j in range(len(sol.columns))]
    unit = [_col_cost(cands[ci], sites[si]) for ci, si in sol.columns]
    counts = trim_counts([int(v) for v in sol.x], unit,
                         lambda j, n: judge.run(cands[sol.columns[j][0]], masks[j], n)[0], judge.need)
    if counts == [int(v) for v in sol.x]:
        return fleet
    new = _with_counts(sol, cands, sites, counts)
    att, _ = judge.plan(cands, new)
    return _Fleet(new, cands, att, fleet.how + ", trimmed")


def _verified(judge: _Judge, req, buckets, cands, *, budget: int, allowed=None, rounds: list[dict]):
    """Solve, simulate; while attainment < target, lower every type's planned utilisation and
    re-solve (one factor for all types keeps the cost ranking of the types intact); then
    bisect the factor between the last miss and the first pass for a cheaper passing plan.
    Returns the last passing fleet, else the last one tried (None: the MILP is infeasible)."""
    def solve(d: float):
        return solve_milp(req, buckets, cands, {c.key: d for c in cands}, allowed=allowed,
                          miss_budget_requests=budget)

    def check(sol, d: float) -> float:
        att, _ = judge.plan(cands, sol)
        rounds.append({"usd_per_hour": round(sol.usd_per_hour, 4), "slo_attainment": round(att, 6),
                       "utilization_cap": round(req.max_utilization * d, 4)})
        return att

    n_rounds = 0
    derate = 1.0
    sol = solve(derate)
    if sol is None:
        return None
    att = check(sol, derate)
    n_rounds += 1
    fail_d = None
    while att < req.attainment_target and n_rounds < req.max_rounds:
        fail_d = derate
        derate *= min(0.95, max(0.7, att / req.attainment_target))
        new = solve(derate)
        if new is None:
            break
        sol = new
        att = check(sol, derate)
        n_rounds += 1
    if att < req.attainment_target:
        return _Fleet(sol, cands, att, "MILP (best effort)")
    best = (sol, att, derate)
    while fail_d is not None and n_rounds < req.max_rounds and fail_d - best[2] > 0.02:
        mid = (fail_d + best[2]) / 2
        cand = solve(mid)
        if cand is None or cand.usd_per_hour >= best[0].usd_per_hour - 1e-9:
            if cand is None:
                fail_d = mid
            else:
                best = (best[0], best[1], mid)
            continue
        a = check(cand, mid)
        n_rounds += 1
        if a >= req.attainment_target:
            best = (cand, a, mid)
        else:
            fail_d = mid
    return _Fleet(best[0], cands, best[1], "MILP")


def _exclude_overlong(trace: Trace, req: PlanRequest) -> tuple[Trace, dict | None]:
    """Requests longer than the model's context window are rejected by every engine: report and
    drop them (req.overlong == "exclude") or fail naming how many (== "fail")."""
    limit = int(req.model.context_length or 0)
    if limit <= 0 or len(trace) == 0:
        return trace, None
    over = (trace.prompt_tokens + trace.output_tokens) > limit
    n = int(over.sum())
    if n == 0:
        return trace, None
    what = (f"{n} of {len(trace)} requests ({n / len(trace):.1%}) exceed {req.model.id}'s context length "
            f"of {limit} tokens (prompt + output)")
    if req.overlong == "fail":
        raise TokenomyError(what + "; drop them with --overlong exclude or pick a longer-context model")
    keep = ~over
    if not keep.any():
        raise TokenomyError(what + ": nothing left to plan for")
    return (trace.select(keep),
            {"requests": n, "share": round(n / len(trace), 6), "context_length_tokens": limit, "note": what})


def _check_formats(req: PlanRequest) -> None:
    """Unknown weight / KV formats are an input error, not a silently empty option."""
    from tokenomy.perf.quant import check_kv_dtype

    for d in req.dtypes:
        if d not in DTYPES:
            raise TokenomyError(f"unknown dtype '{d}' in --dtype/--quant; use some of: {', '.join(DTYPES)}")
    if not req.dtypes or not req.kv_dtypes:
        raise TokenomyError("--dtype and --kv-dtype need at least one format each")
    for k in req.kv_dtypes:
        check_kv_dtype(k)


def _plan(trace: Trace, req: PlanRequest, *, verify: bool = True,
          progress: Callable[[int, int | None], None] | None = None,
          incumbents: list[_Fleet] = ()) -> tuple[dict, _Fleet]:
    if req.slo_tpot_ms <= 0 or (req.slo_ttft_ms is not None and req.slo_ttft_ms <= 0):
        raise TokenomyError("SLOs must be > 0 ms")
    if not req.accelerators:
        raise TokenomyError("no accelerators to plan with")
    if not 0 < req.attainment_target <= 1:
        raise TokenomyError(f"--attainment must be in (0, 1], got {req.attainment_target:g}")
    _check_formats(req)
    unknown_caps = set(req.power_caps_mw) - {s.id for s in req.sites}
    if unknown_caps:
        raise TokenomyError(f"--power-cap for site(s) not in --sites: {', '.join(sorted(unknown_caps))}")
    trace, overlong = _exclude_overlong(trace, req)
    peak = peak_factor(trace, req.peak_window_seconds)
    buckets, bucket_of = make_buckets(trace, peak)
    cands = build_candidates(req, buckets)
    if not cands:
        raise TokenomyError(
            f"{req.model.id} fits on none of {', '.join(a.id for a in req.accelerators)} with counts "
            f"{', '.join(map(str, req.counts))} and dtypes {', '.join(req.dtypes)}"
        )
    # SLO misses the target allows: buckets no candidate can serve may use them.
    budget = int(math.floor((1.0 - req.attainment_target) * len(trace) + 1e-9)) if verify else 0
    uncovered = [b for b in range(len(buckets)) if not any(isinstance(c.points[b], OperatingPoint) for c in cands)]
    if sum(buckets[b].requests for b in uncovered) > budget:
        raise TokenomyError(_explain_uncovered(req, buckets, cands, max(uncovered, key=lambda b: buckets[b].requests)))
    judge = _Judge(trace, req, bucket_of, progress)
    rounds: list[dict] = []
    if not verify:
        sol = solve_milp(req, buckets, cands)
        if sol is None:
            if req.power_caps_mw and solve_milp(req, buckets, cands, ignore_caps=True) is not None:
                raise TokenomyError(_min_power_message(req, buckets, cands))
            raise TokenomyError("no feasible plan (the MILP is infeasible)")
        plan = _Fleet(sol, cands, None, "MILP (not simulated)")
        single = None
        singles = [solve_milp(req, buckets, cands, allowed=lambda c, a=acc.id: c.accelerator.id == a)
                   for acc in req.accelerators]
        singles = [s for s in singles if s is not None]
        if singles:
            s = min(singles, key=lambda s: s.usd_per_hour)
            single = _Fleet(s, cands, None, "MILP single type (not simulated)")
        if single is not None and single.usd_per_hour < plan.usd_per_hour:
            plan = single
        return _result(trace, req, buckets, plan, single, rounds, peak, overlong, judge), plan
    # 1. Incumbents: plans that passed a tighter SLO or a higher rate, re-checked here.
    pool: list[_Fleet] = []
    for inc in incumbents:
        att, _ = judge.plan(inc.cands, inc.sol)
        pool.append(_Fleet(inc.sol, inc.cands, att, inc.how + " (incumbent)"))
    # 2. Single deployments, pooled and right-sized by bisection: the honest baseline, and
    #    the incumbents that make more options never dearer.
    single_bound = min((f.usd_per_hour for f in pool if judge.passes(f.attainment) and len(f.types) == 1),
                       default=math.inf)
    pool += _pooled_search(judge, req, buckets, cands, budget, single_bound)
    # 3. Mixed plans: every option together, and each TP degree alone; each trimmed.
    subsets: list[tuple[str, Callable | None]] = [("all options", None)]
    if len(req.counts) > 1:
        subsets += [(f"TP {k} only", lambda c, k=k: c.count == k) for k in req.counts]
    tried = []
    for label, allowed in subsets:
        f = _verified(judge, req, buckets, cands, budget=budget, allowed=allowed, rounds=rounds)
        if f is None:
            continue
        f.how = f"{f.how} over {label}"
        if judge.passes(f.attainment):
            f = _trim(judge, req, f)
        tried.append(f)
    pool += tried
    passing = [f for f in pool if judge.passes(f.attainment)]
    if not passing and not tried:
        if req.power_caps_mw and solve_milp(req, buckets, cands, ignore_caps=True) is not None:
            raise TokenomyError(_min_power_message(req, buckets, cands))
        raise TokenomyError("no feasible plan (the MILP is infeasible)")
    if passing:
        plan = min(passing, key=lambda f: (f.usd_per_hour, -f.attainment))
    else:  # best effort: report the shortfall
        plan = max(pool, key=lambda f: f.attainment or 0.0)
    singles = [f for f in passing if len(f.types) == 1]
    single = min(singles, key=lambda f: f.usd_per_hour) if singles else None
    rounds.append({"usd_per_hour": round(plan.usd_per_hour, 4), "slo_attainment": round(plan.attainment or 0.0, 6),
                   "note": f"chosen: {plan.how}"})
    return _result(trace, req, buckets, plan, single, rounds, peak, overlong, judge), plan


def _result(trace, req, buckets, plan: _Fleet, single: _Fleet | None, rounds, peak, overlong, judge) -> dict:
    result = {
        "model": req.model.id,
        "slo_tpot_ms": req.slo_tpot_ms,
        "slo_ttft_ms": req.slo_ttft_ms,
        "attainment_target": req.attainment_target,
        "price_class": req.price_class,
        "provider": req.provider,
        "trace": trace.summary(),
        "excluded_overlong": overlong,
        "planning_rate_per_s": round(sum(b.rate_per_s for b in buckets), 4),
        "peak_factor": round(peak, 4),
        **_describe(req, trace, buckets, plan.cands, plan.sol),
        "slo_attainment": None if plan.attainment is None else round(plan.attainment, 6),
        "meets_target": None if plan.attainment is None else judge.passes(plan.attainment),
        "found_by": plan.how,
        "simulations": judge.simulations,
        "verification": rounds,
    }
    if single is None:
        result["best_single"] = None
        result["saving_fraction"] = 0.0
    else:
        bd = _describe(req, trace, buckets, single.cands, single.sol)
        result["best_single"] = {"accelerator": sorted(single.types)[0], "usd_per_hour": round(single.usd_per_hour, 4),
                                 "usd_per_mtok": bd["usd_per_mtok"], "assignments": bd["assignments"],
                                 "slo_attainment": None if single.attainment is None else round(single.attainment, 6),
                                 "found_by": single.how}
        result["saving_fraction"] = round(max(0.0, 1.0 - plan.usd_per_hour / single.usd_per_hour), 6)
    cands = plan.cands
    result["candidates"] = [
        {"key": c.key, "rental_usd_per_hour": round(c.rental_usd_per_hour, 4), "it_watts": round(c.watts, 1),
         "buckets_feasible": sum(isinstance(p, OperatingPoint) for p in c.points)}
        for c in cands
    ]
    result["buckets"] = [
        {"prompt_tokens": round(b.prompt_tokens, 1), "output_tokens": round(b.output_tokens, 1),
         "rate_per_s": round(b.rate_per_s, 5), "requests": b.requests}
        for b in buckets
    ]
    result["solver"] = "HiGHS MILP (scipy.optimize.milp), right-sized in the simulator"
    if set(req.dtypes) - {"bf16"} or set(req.kv_dtypes) - {"bf16"}:
        result["quantization_quality"] = QUALITY_NOTE
    return result


def plan_fleet(trace: Trace, req: PlanRequest, *, verify: bool = True,
               progress: Callable[[int, int | None], None] | None = None) -> dict:
    """Plan the fleet; raises TokenomyError naming the binding constraint when infeasible.

    The plan is the cheapest fleet found that passes the simulation: pooled single deployments
    right-sized by bisection, and MILP mixes (all options, and each TP degree alone) trimmed
    replica by replica. `best_single` (the baseline of `saving_fraction`) is the cheapest passing
    fleet of one accelerator type found by the same search."""
    return _plan(trace, req, verify=verify, progress=progress)[0]


def plan_growth(trace: Trace, req: PlanRequest, *, monthly_growth: float, months: int) -> dict:
    """Month-by-month plan as traffic grows (rate x (1+g)^m): $/h, $/Mtok, MW per site, caps that bind.

    Uses the perf-model capacities (no per-month simulation). Stops at the first month no plan
    fits under the power caps, and says so. Returns {"monthly_growth", "months": [...],
    "caps_first_binding": {site: month}, "infeasible_from_month": month | None}.
    """
    if months < 0 or monthly_growth <= -1:
        raise TokenomyError("--months must be >= 0 and growth > -100%")
    buckets, _ = make_buckets(trace, peak_factor(trace, req.peak_window_seconds))
    cands = build_candidates(req, buckets)
    smallest_mw = {s.id: min((facility_watts(c.watts, s) / 1e6 for c in cands if c.watts > 0), default=0.0)
                   for s in req.sites}
    out = []
    for m in range(months + 1):
        scale = (1.0 + monthly_growth) ** m
        sol = solve_milp(req, buckets, cands, rate_scale=scale)
        if sol is None:
            out.append({"month": m, "rate_scale": round(scale, 4), "feasible": False,
                        "binding": "power cap" if req.power_caps_mw else "SLO"})
            break
        d = _describe(req, trace, buckets, cands, sol, rate_scale=scale)
        # A cap binds when no further replica of any candidate fits under it.
        binding = [s.id for s in req.sites if s.id in req.power_caps_mw and
                   req.power_caps_mw[s.id] - d["site_mw"].get(s.id, 0.0) < smallest_mw[s.id]]
        out.append({"month": m, "rate_scale": round(scale, 4), "feasible": True, "usd_per_hour": d["usd_per_hour"],
                    "usd_per_mtok": d["usd_per_mtok"], "site_mw": d["site_mw"], "caps_binding": binding,
                    "replicas": {_mix_key(a): a["replicas"] for a in d["assignments"]}})
    first_bind: dict[str, int] = {}
    for m in out:
        for site in m.get("caps_binding", []):
            first_bind.setdefault(site, m["month"])
    return {"monthly_growth": monthly_growth, "months": out, "caps_first_binding": first_bind,
            "infeasible_from_month": next((m["month"] for m in out if not m["feasible"]), None)}


def cost_vs_slo(trace: Trace, req: PlanRequest, slos_tpot_ms: list[float], *, verify: bool = False,
                progress: Callable[[int, int | None], None] | None = None) -> list[dict]:
    """The plan's and the best single type's $/h at each TPOT SLO (infeasible SLOs are marked).

    A plan that meets a tighter TPOT SLO meets every looser one (the simulation does not depend
    on the SLO), so SLOs are planned tightest first and every earlier plan is an incumbent of the
    later searches: cost never rises as the SLO loosens (`found_by` says where a plan came from).
    """
    return [p for p, _ in _slo_points(trace, req, slos_tpot_ms, verify=verify, progress=progress)]


def plan_with_slo_sweep(trace: Trace, req: PlanRequest, slos_tpot_ms: list[float], *, verify: bool = True,
                        progress: Callable[[int, int | None], None] | None = None) -> tuple[dict, list[dict]]:
    """The plan at req.slo_tpot_ms and the cost_vs_slo points, from one tightest-first search over
    the sweep and the plan's own SLO (so the plan is its sweep point, and never dearer than a
    tighter sweep point)."""
    wanted = sorted(set(float(v) for v in slos_tpot_ms))
    results: dict[float, dict] = {}
    pts = _slo_points(trace, req, wanted + [float(req.slo_tpot_ms)], verify=verify, progress=progress,
                      results=results)
    if float(req.slo_tpot_ms) not in results:
        plan_fleet(trace, req, verify=verify)  # raises the reason
    return results[float(req.slo_tpot_ms)], [p for p, _ in pts if p["slo_tpot_ms"] in wanted]


def _slo_points(trace, req, slos_tpot_ms, *, verify, progress=None,
                results: dict | None = None) -> list[tuple[dict, _Fleet | None]]:
    out: list[tuple[dict, _Fleet | None]] = []
    fleets: list[_Fleet] = []
    prev_single: dict | None = None
    for slo in sorted(set(float(v) for v in slos_tpot_ms)):
        try:
            r, fleet = _plan(trace, replace(req, slo_tpot_ms=slo), verify=verify, progress=progress,
                             incumbents=fleets[-1:] if verify else [])
        except TokenomyError as exc:
            out.append(({"slo_tpot_ms": slo, "feasible": False, "reason": str(exc)}, None))
            continue
        if results is not None:
            results[slo] = r
        point = _point(r)
        point["slo_tpot_ms"] = slo
        if not verify and out and out[-1][0]["feasible"] and out[-1][0]["usd_per_hour"] < point["usd_per_hour"]:
            # Unsimulated: the tighter plan still serves this SLO; carry it.
            for k in ("usd_per_hour", "usd_per_mtok", "mix", "slo_attainment", "found_by"):
                point[k] = out[-1][0][k]
            point["carried_from_ms"] = out[-1][0].get("carried_from_ms", out[-1][0]["slo_tpot_ms"])
        if prev_single is not None and prev_single["best_single_usd_per_hour"] is not None and (
                point["best_single_usd_per_hour"] is None
                or prev_single["best_single_usd_per_hour"] < point["best_single_usd_per_hour"]):
            point["best_single_usd_per_hour"] = prev_single["best_single_usd_per_hour"]
            point["best_single_accelerator"] = prev_single["best_single_accelerator"]
        b = point["best_single_usd_per_hour"]
        point["saving_fraction"] = round(max(0.0, 1 - point["usd_per_hour"] / b), 6) if b else 0.0
        out.append((point, fleet))
        fleets.append(fleet)
        prev_single = point
    return out


def _mix_key(a: dict) -> str:
    kv = f"/kv-{a['kv_dtype']}" if a.get("kv_dtype", "bf16") != "bf16" else ""
    return f"{a['accelerator']}x{a['count']}/{a['dtype']}{kv}" + (f"@{a['site']}" if a.get("site") else "")


def _point(r: dict) -> dict:
    b = r["best_single"]
    return {
        "feasible": True, "usd_per_hour": r["usd_per_hour"], "usd_per_mtok": r["usd_per_mtok"],
        "slo_attainment": r["slo_attainment"], "found_by": r.get("found_by"),
        "best_single_accelerator": b["accelerator"] if b else None,
        "best_single_usd_per_hour": b["usd_per_hour"] if b else None,
        "best_single_usd_per_mtok": b["usd_per_mtok"] if b else None,
        "saving_fraction": r["saving_fraction"],
        "mix": {_mix_key(a): a["replicas"] for a in r["assignments"]},
    }


def cost_vs_rate(trace: Trace, req: PlanRequest, rate_scales: list[float], *, verify: bool = False,
                 base_rate_scale: float = 1.0, progress: Callable[[int, int | None], None] | None = None) -> list[dict]:
    """The plan's and the best single type's $/h and $/Mtok with the trace's arrival rate scaled
    by each factor (same requests, time compressed); infeasible scales are marked with the reason.

    Planned from the highest rate down, each plan an incumbent of the next (a fleet that serves
    more load usually serves less: it is re-checked, not assumed), so cost does not fall as the
    rate rises. `rate_scale_total` is the factor against the original trace when `trace` was
    already scaled by `base_rate_scale` (--rate-scale)."""
    from tokenomy.fleet.workload import scale_rate

    xs = sorted(set(float(v) for v in rate_scales), reverse=True)
    for x in xs:
        if not x > 0:
            raise TokenomyError(f"rate scales must be > 0, got {x:g}")
    points: list[dict] = []
    prev: _Fleet | None = None
    for x in xs:
        scaled = scale_rate(trace, x)
        base = {"rate_scale": x, "rate_scale_total": round(x * base_rate_scale, 6),
                "rate_per_s": round(scaled.rate_per_s, 4)}
        try:
            r, fleet = _plan(scaled, req, verify=verify, progress=progress,
                             incumbents=[prev] if (verify and prev is not None) else [])
        except TokenomyError as exc:
            points.append({**base, "feasible": False, "reason": str(exc)})
            continue
        points.append({**base, **_point(r)})
        prev = fleet
    points.reverse()
    return points
