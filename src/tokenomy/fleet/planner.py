"""Fleet planner: the cheapest accelerator mix (and sites) for a workload under SLOs.

In the manner of Mélange (Griggs et al., 2024), around the MILP in `fleet.milp`. Every plan
is then simulated on the trace (requests of bucket b routed to (g, s) in proportion y);
while the SLO attainment is below the target, every type's planned utilisation is lowered
and the MILP re-solved (then bisected back for a cheaper passing plan); plans sized for
tighter TPOT SLOs are tried too, and the best verified single-type plan bounds the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

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
from tokenomy.fleet.workload import Trace


def simulate_plan(trace: Trace, req: PlanRequest, bucket_of: np.ndarray, cands: list[Candidate], sol: _Milp,
                  progress: Callable[[int, int], None] | None = None) -> tuple[float, dict[str, float], dict]:
    """Simulate the plan on the trace; returns (attainment, attainment per candidate key, totals)."""
    from tokenomy.fleet.metrics import slo_met
    from tokenomy.fleet.simulator import SchedulerConfig, simulate

    rng = np.random.default_rng(req.seed)
    nc = len(sol.columns)
    # Route each request to a column with probability y[bucket, column] among columns in use.
    share = sol.y * (sol.x > 0)[None, :]
    share = share / np.maximum(share.sum(axis=1, keepdims=True), 1e-12)
    u = rng.uniform(size=len(trace))
    cum = np.cumsum(share, axis=1)
    col = np.minimum((cum[bucket_of] < u[:, None]).sum(axis=1), nc - 1)
    met_total = 0
    per_key_met: dict[str, list[int]] = {}
    energy_j = 0.0
    cfg = SchedulerConfig(max_num_seqs=req.max_num_seqs, max_batched_tokens=req.max_batched_tokens)
    used = [j for j in range(nc) if sol.x[j] > 0]
    for k, j in enumerate(used):
        m = col == j
        if not m.any():
            continue
        sub = Trace(trace.arrived_at[m], trace.prompt_tokens[m], trace.output_tokens[m], trace.name)
        ci, _ = sol.columns[j]
        res = simulate(sub, cands[ci].step_model, replicas=int(sol.x[j]), config=cfg)
        ok = slo_met(res, slo_ttft_ms=req.slo_ttft_ms, slo_tpot_ms=req.slo_tpot_ms)
        met_total += int(ok.sum())
        s = per_key_met.setdefault(cands[ci].key, [0, 0])
        s[0] += int(ok.sum())
        s[1] += len(ok)
        energy_j += float(res.energy_joules.sum())
        if progress is not None:
            progress(k + 1, len(used))
    unrouted = int(sum((col == j).sum() for j in range(nc) if sol.x[j] == 0))
    attainment = met_total / len(trace) if len(trace) else 1.0
    return attainment, {k: v[0] / v[1] for k, v in per_key_met.items()}, {"energy_joules": energy_j, "unrouted": unrouted}


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
            "accelerator": c.accelerator.id, "count": c.count, "dtype": c.dtype, "site": s.id if s else None,
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


def _verified(trace, req, buckets, bucket_of, cands, *, allowed=None, verify=True, progress=None, start=1.0):
    """Solve, simulate; while attainment < target, lower every type's planned utilisation and
    re-solve (one factor for all types keeps the cost ranking of the types intact); then
    bisect the factor between the last miss and the first pass for a cheaper passing plan.
    Returns (solution, attainment, rounds, utilisation factor)."""
    rounds: list[dict] = []

    def solve(d: float):
        return solve_milp(req, buckets, cands, {c.key: d for c in cands}, allowed=allowed)

    def check(sol, d: float) -> float:
        att, _, _ = simulate_plan(trace, req, bucket_of, cands, sol)
        rounds.append({"usd_per_hour": round(sol.usd_per_hour, 4), "slo_attainment": round(att, 6),
                       "utilization_cap": round(req.max_utilization * d, 4)})
        if progress is not None:
            progress(len(rounds), req.max_rounds)
        return att

    derate = start
    sol = solve(derate)
    if sol is None or not verify:
        return sol, None, rounds, derate
    best = None  # (sol, attainment, derate) that passed
    fail_d = None
    att = check(sol, derate)
    while att < req.attainment_target and len(rounds) < req.max_rounds:
        fail_d = derate
        derate *= min(0.95, max(0.7, att / req.attainment_target))
        new = solve(derate)
        if new is None:
            break
        sol = new
        att = check(sol, derate)
    if att < req.attainment_target:
        return sol, att, rounds, derate  # best effort: report the shortfall
    best = (sol, att, derate)
    # Bisect between the miss and the pass: a cheaper plan may pass too.
    while fail_d is not None and len(rounds) < req.max_rounds and fail_d - best[2] > 0.02:
        mid = (fail_d + best[2]) / 2
        cand = solve(mid)
        if cand is None or cand.usd_per_hour >= best[0].usd_per_hour - 1e-9:
            fail_d = mid if cand is None else fail_d
            if cand is not None:
                best = (best[0], best[1], mid)  # same cost at a looser cap: keep the looser cap
            continue
        a = check(cand, mid)
        if a >= req.attainment_target:
            best = (cand, a, mid)
        else:
            fail_d = mid
    return best[0], best[1], rounds, best[2]


def _search(trace, req, buckets, bucket_of, cands, *, allowed=None, verify=True, progress=None):
    """The verified plan (see _verified), then plans sized for tighter TPOT SLOs: they run smaller
    batches (less queueing, more KV headroom) and may pass this SLO for less than the derated
    search found. Returns (solution, attainment, rounds, the candidates it was solved with)."""
    sol, att, rounds, _ = _verified(trace, req, buckets, bucket_of, cands, allowed=allowed, verify=verify,
                                    progress=progress)
    used = cands
    if sol is None or not verify:
        return sol, att, rounds, used
    for tighter in (0.5, 0.3):
        alt_req = replace(req, slo_tpot_ms=req.slo_tpot_ms * tighter)
        alt_cands = build_candidates(alt_req, buckets)
        alt = solve_milp(req, buckets, alt_cands, allowed=allowed)
        if alt is None:
            break
        if alt.usd_per_hour >= sol.usd_per_hour - 1e-9 and att is not None and att >= req.attainment_target:
            continue
        a_att, _, _ = simulate_plan(trace, req, bucket_of, alt_cands, alt)
        rounds.append({"usd_per_hour": round(alt.usd_per_hour, 4), "slo_attainment": round(a_att, 6),
                       "utilization_cap": req.max_utilization, "note": f"sized for TPOT {alt_req.slo_tpot_ms:g} ms"})
        passed = att is not None and att >= req.attainment_target
        if a_att >= req.attainment_target and (not passed or alt.usd_per_hour < sol.usd_per_hour):
            sol, att, used = alt, a_att, alt_cands
    return sol, att, rounds, used


def plan_fleet(trace: Trace, req: PlanRequest, *, verify: bool = True,
               progress: Callable[[int, int], None] | None = None) -> dict:
    """Plan the fleet; raises TokenomyError naming the binding constraint when infeasible."""
    if req.slo_tpot_ms <= 0 or (req.slo_ttft_ms is not None and req.slo_ttft_ms <= 0):
        raise TokenomyError("SLOs must be > 0 ms")
    if not req.accelerators:
        raise TokenomyError("no accelerators to plan with")
    unknown_caps = set(req.power_caps_mw) - {s.id for s in req.sites}
    if unknown_caps:
        raise TokenomyError(f"--power-cap for site(s) not in --sites: {', '.join(sorted(unknown_caps))}")
    peak = peak_factor(trace, req.peak_window_seconds)
    buckets, bucket_of = make_buckets(trace, peak)
    cands = build_candidates(req, buckets)
    if not cands:
        raise TokenomyError(
            f"{req.model.id} fits on none of {', '.join(a.id for a in req.accelerators)} with counts "
            f"{', '.join(map(str, req.counts))} and dtypes {', '.join(req.dtypes)}"
        )
    for b in range(len(buckets)):
        if not any(isinstance(c.points[b], OperatingPoint) for c in cands):
            raise TokenomyError(_explain_uncovered(req, buckets, cands, b))
    target = req.attainment_target
    sol, attainment, rounds, sol_cands = _search(trace, req, buckets, bucket_of, cands, verify=verify,
                                                 progress=progress)
    if sol is None:
        if req.power_caps_mw and solve_milp(req, buckets, cands, ignore_caps=True) is not None:
            raise TokenomyError(_min_power_message(req, buckets, cands))
        raise TokenomyError("no feasible plan (the MILP is infeasible)")
    # Best single accelerator type (any count, dtype, site), searched and verified the same way.
    singles = []
    for acc in req.accelerators:
        s = solve_milp(req, buckets, cands, allowed=lambda c, a=acc.id: c.accelerator.id == a)
        if s is not None:
            singles.append((s.usd_per_hour, acc.id))
    singles.sort()
    best = None  # (usd/h, accelerator, attainment, solution, candidates)
    for cost, acc_id in singles:
        if best is not None and cost >= best[0]:
            break
        s_sol, s_att, _, s_cands = _search(trace, req, buckets, bucket_of, cands, verify=verify,
                                           allowed=lambda c, a=acc_id: c.accelerator.id == a)
        if s_sol is not None and (best is None or s_sol.usd_per_hour < best[0]):
            best = (s_sol.usd_per_hour, acc_id, s_att, s_sol, s_cands)

    def passes(att):
        return att is None or att >= target

    if best is not None and passes(best[2]) and (not passes(attainment) or best[0] < sol.usd_per_hour - 1e-9):
        # Verification is noisy and path-dependent; a verified single-type plan is also a
        # feasible mix, so the plan is never worse than it.
        sol, attainment, sol_cands = best[3], best[2], best[4]
        rounds.append({"usd_per_hour": round(sol.usd_per_hour, 4),
                       "slo_attainment": None if attainment is None else round(attainment, 6),
                       "note": f"the verified single-type plan ({best[1]}) is cheaper: taken"})
    cands = sol_cands
    plan_types = {cands[ci].accelerator.id for j, (ci, _) in enumerate(sol.columns) if sol.x[j] > 0}
    if len(plan_types) == 1 and passes(attainment) and (best is None or sol.usd_per_hour < best[0] - 1e-9):
        # The plan itself uses one accelerator type: it is the best single-type plan found.
        best = (sol.usd_per_hour, plan_types.pop(), attainment, sol, cands)
    result = {
        "model": req.model.id,
        "slo_tpot_ms": req.slo_tpot_ms,
        "slo_ttft_ms": req.slo_ttft_ms,
        "trace": trace.summary(),
        "planning_rate_per_s": round(sum(b.rate_per_s for b in buckets), 4),
        "peak_factor": round(peak, 4),
        **_describe(req, trace, buckets, cands, sol),
        "slo_attainment": None if attainment is None else round(attainment, 6),
        "verification": rounds,
    }
    if best is None:
        result["best_single"] = None
        result["saving_fraction"] = 0.0
    else:
        bd = _describe(req, trace, buckets, best[4], best[3])
        result["best_single"] = {"accelerator": best[1], "usd_per_hour": round(best[0], 4),
                                 "usd_per_mtok": bd["usd_per_mtok"], "assignments": bd["assignments"],
                                 "slo_attainment": None if best[2] is None else round(best[2], 6)}
        result["saving_fraction"] = round(max(0.0, 1.0 - sol.usd_per_hour / best[0]), 6)
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
    result["solver"] = "HiGHS MILP (scipy.optimize.milp)"
    return result


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
                    "replicas": {f"{a['accelerator']}x{a['count']}/{a['dtype']}" + (f"@{a['site']}" if a["site"] else ""): a["replicas"]
                                 for a in d["assignments"]}})
    first_bind: dict[str, int] = {}
    for m in out:
        for site in m.get("caps_binding", []):
            first_bind.setdefault(site, m["month"])
    return {"monthly_growth": monthly_growth, "months": out, "caps_first_binding": first_bind,
            "infeasible_from_month": next((m["month"] for m in out if not m["feasible"]), None)}


def cost_vs_slo(trace: Trace, req: PlanRequest, slos_tpot_ms: list[float], *, verify: bool = False) -> list[dict]:
    """The plan's and the best single type's $/h at each TPOT SLO (infeasible SLOs are marked).

    A plan that meets a tighter TPOT SLO meets every looser one (the simulation does not depend
    on the SLO), so each point is at most the previous (tighter) point's cost: when the search
    at a looser SLO ends costlier, the tighter plan is carried forward (`carried_from_ms`).
    """
    points: list[dict] = []
    prev: dict | None = None
    for slo in sorted(float(v) for v in slos_tpot_ms):
        try:
            r = plan_fleet(trace, replace(req, slo_tpot_ms=slo), verify=verify)
        except TokenomyError as exc:
            points.append({"slo_tpot_ms": slo, "feasible": False, "reason": str(exc)})
            continue
        point = {
            "slo_tpot_ms": slo, "feasible": True, "usd_per_hour": r["usd_per_hour"],
            "usd_per_mtok": r["usd_per_mtok"], "slo_attainment": r["slo_attainment"],
            "best_single_accelerator": r["best_single"]["accelerator"] if r["best_single"] else None,
            "best_single_usd_per_hour": r["best_single"]["usd_per_hour"] if r["best_single"] else None,
            "mix": {f"{a['accelerator']}x{a['count']}/{a['dtype']}": a["replicas"] for a in r["assignments"]},
        }
        if prev is not None:
            if prev["usd_per_hour"] < point["usd_per_hour"]:
                for k in ("usd_per_hour", "usd_per_mtok", "mix", "slo_attainment"):
                    point[k] = prev[k]
                point["carried_from_ms"] = prev.get("carried_from_ms", prev["slo_tpot_ms"])
            if prev["best_single_usd_per_hour"] is not None and (
                    point["best_single_usd_per_hour"] is None
                    or prev["best_single_usd_per_hour"] < point["best_single_usd_per_hour"]):
                point["best_single_usd_per_hour"] = prev["best_single_usd_per_hour"]
                point["best_single_accelerator"] = prev["best_single_accelerator"]
        b = point["best_single_usd_per_hour"]
        point["saving_fraction"] = round(max(0.0, 1 - point["usd_per_hour"] / b), 6) if b else 0.0
        points.append(point)
        prev = point
    return points


def cost_vs_rate(trace: Trace, req: PlanRequest, rate_scales: list[float], *, verify: bool = False) -> list[dict]:
    """The plan's and the best single type's $/h and $/Mtok with the trace's arrival rate scaled
    by each factor (same requests, time compressed); infeasible scales are marked with the reason."""
    from tokenomy.fleet.workload import scale_rate

    points: list[dict] = []
    for x in sorted(float(v) for v in rate_scales):
        if not x > 0:
            raise TokenomyError(f"rate scales must be > 0, got {x:g}")
        scaled = scale_rate(trace, x)
        try:
            r = plan_fleet(scaled, req, verify=verify)
        except TokenomyError as exc:
            points.append({"rate_scale": x, "rate_per_s": round(scaled.rate_per_s, 4), "feasible": False,
                           "reason": str(exc)})
            continue
        b = r["best_single"]
        points.append({
            "rate_scale": x, "rate_per_s": round(scaled.rate_per_s, 4), "feasible": True,
            "usd_per_hour": r["usd_per_hour"], "usd_per_mtok": r["usd_per_mtok"],
            "slo_attainment": r["slo_attainment"],
            "best_single_accelerator": b["accelerator"] if b else None,
            "best_single_usd_per_hour": b["usd_per_hour"] if b else None,
            "best_single_usd_per_mtok": b["usd_per_mtok"] if b else None,
            "saving_fraction": r["saving_fraction"],
            "mix": {f"{a['accelerator']}x{a['count']}/{a['dtype']}" + (f"@{a['site']}" if a["site"] else ""):
                    a["replicas"] for a in r["assignments"]},
        })
    return points
