"""The Mélange-style MILP: request size buckets x replica types (x sites) -> cheapest counts.

Requests are grouped into size buckets (prompt x output tokens); for each candidate replica
type g (accelerator, TP count, dtype) the perf model gives the rate T[g, b] it sustains for
bucket b under the SLOs (`capacity.operating_point`). One MILP (HiGHS via scipy.optimize.milp)
picks integer replica counts x[g, s] per site s and the share y[b, g, s] of each bucket:

    min   sum_gs cost[g, s] x[g, s]           cost = rental x count + IT watts x PUE x $/kWh
    s.t.  sum_gs y[b, g, s] = 1                                   for every bucket b
          sum_b  rate[b] / (u T[g, b]) y[b, g, s] <= x[g, s]      for every (g, s); u = max utilisation
          sum_g  x[g, s] facility_watts[g, s] <= cap[s]           for every capped site s
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from tokenomy.catalog.types import Accelerator, ModelArch, Site
from tokenomy.errors import TokenomyError
from tokenomy.fleet.capacity import Infeasible, OperatingPoint, operating_point
from tokenomy.fleet.costing import energy_usd_per_hour, facility_watts
from tokenomy.fleet.workload import Trace

PROMPT_EDGES = (0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, math.inf)
OUTPUT_EDGES = (0, 32, 64, 128, 256, 512, 1024, 2048, math.inf)


@dataclass(frozen=True)
class PlanRequest:
    model: ModelArch
    accelerators: tuple[Accelerator, ...]
    slo_tpot_ms: float
    slo_ttft_ms: float | None = 2000.0
    sites: tuple[Site, ...] = ()  # () = rental cost only, no site
    power_caps_mw: dict[str, float] = field(default_factory=dict)  # facility MW per site id
    dtypes: tuple[str, ...] = ("bf16",)  # weight formats to choose among (bf16 | fp8 | int4-awq)
    kv_dtypes: tuple[str, ...] = ("bf16",)  # KV-cache formats to choose among (bf16 | fp8)
    counts: tuple[int, ...] = (1, 2, 4, 8)
    provider: str | None = None  # price only at this provider's rates (an error where it lists none)
    price_class: str = "hyperscaler-on-demand"  # tokenomy.catalog.price_classes; never mixed
    usd_per_hour_overrides: dict[str, float] = field(default_factory=dict)  # accelerator id -> $/device-hour
    attainment_target: float = 0.99
    max_num_seqs: int = 256
    max_batched_tokens: int = 2048
    engine_efficiency: float = 1.0
    max_rounds: int = 6
    peak_window_seconds: float = 60.0  # plan for the busiest window of this length (0: the mean rate)
    max_utilization: float = 0.9  # plan replicas to at most this share of their SLO capacity (queueing headroom)
    seed: int = 0
    overlong: str = "exclude"  # requests beyond the model's context: "exclude" (reported) | "fail"
    prefix_caching: bool = True  # verification simulations keep prompt KV blocks (traces with hash_ids)
    routing: str = "least-loaded"  # verification simulations' replica choice (simulate --routing)


@dataclass(frozen=True)
class Bucket:
    prompt_tokens: float  # mean in the bucket
    output_tokens: float
    rate_per_s: float
    requests: int


@dataclass
class Candidate:
    accelerator: Accelerator
    count: int
    dtype: str
    step_model: object
    rental_usd_per_hour: float
    points: list[OperatingPoint | Infeasible]  # per bucket
    watts: float  # IT watts of a replica at full load (max over its feasible buckets)
    kv_dtype: str = "bf16"

    @property
    def key(self) -> str:
        kv = f"/kv-{self.kv_dtype}" if self.kv_dtype != "bf16" else ""
        return f"{self.accelerator.id}x{self.count}/{self.dtype}{kv}"


def peak_factor(trace: Trace, window_seconds: float) -> float:
    """Busiest window's arrival rate over the mean rate (>= 1; 1 for short traces)."""
    d = trace.duration_seconds
    if window_seconds <= 0 or d < 2 * window_seconds or len(trace) < 2:
        return 1.0
    rel = trace.arrived_at - trace.arrived_at[0]
    counts = np.bincount((rel // window_seconds).astype(np.int64))[: int(d // window_seconds)]
    return max(1.0, float(counts.max() / window_seconds) / (len(trace) / d))


def make_buckets(trace: Trace, rate_multiplier: float = 1.0) -> tuple[list[Bucket], np.ndarray]:
    """Size buckets with their arrival rates (x rate_multiplier); also each request's bucket index."""
    pi = np.searchsorted(PROMPT_EDGES, trace.prompt_tokens, side="right") - 1
    oi = np.searchsorted(OUTPUT_EDGES, trace.output_tokens, side="right") - 1
    cell = pi * len(OUTPUT_EDGES) + oi
    duration = max(trace.duration_seconds, 1e-9)
    buckets: list[Bucket] = []
    index = np.full(len(trace), -1, dtype=np.int64)
    for c in np.unique(cell):
        m = cell == c
        index[m] = len(buckets)
        buckets.append(Bucket(float(trace.prompt_tokens[m].mean()), float(trace.output_tokens[m].mean()),
                              float(m.sum()) / duration * rate_multiplier, int(m.sum())))
    return buckets, index


def build_candidates(req: PlanRequest, buckets: list[Bucket]) -> list[Candidate]:
    from tokenomy.perf import make_step_model

    out: list[Candidate] = []
    rents = plan_rents(req)
    for acc in req.accelerators:
        rent = rents[acc.id]
        for dtype, kv_dtype, count in ((d, k, c) for d in req.dtypes for k in req.kv_dtypes for c in req.counts):
            if count > acc.max_count:
                continue
            try:
                sm = make_step_model(req.model, acc, count=count, dtype=dtype, kv_dtype=kv_dtype,
                                     engine_efficiency=req.engine_efficiency)
            except (TokenomyError, ValueError):
                continue  # e.g. fp8 on a chip without an fp8 path
            if int(sm.max_kv_tokens) < 1:
                continue  # weights do not fit
            pts = [
                operating_point(sm, prompt_tokens=b.prompt_tokens, output_tokens=b.output_tokens,
                                slo_tpot_ms=req.slo_tpot_ms, slo_ttft_ms=req.slo_ttft_ms,
                                max_num_seqs=req.max_num_seqs, max_batched_tokens=req.max_batched_tokens)
                for b in buckets
            ]
            feasible = [p.watts for p in pts if isinstance(p, OperatingPoint)]
            out.append(Candidate(acc, count, dtype, sm, rent * count, pts, max(feasible) if feasible else 0.0,
                                 kv_dtype))
    return out


def plan_rents(req: PlanRequest) -> dict[str, float]:
    """USD per device-hour of every accelerator of the request: --price overrides, else its price
    in req.price_class (of req.provider when named); one error names every accelerator without one."""
    from tokenomy.catalog.price_classes import require_class_prices

    priced = [a for a in req.accelerators if not req.usd_per_hour_overrides.get(a.id)]
    found = require_class_prices(priced, req.price_class, req.provider) if priced else {}
    return {a.id: req.usd_per_hour_overrides.get(a.id) or found[a.id].usd_per_hour for a in req.accelerators}


def _explain_uncovered(req: PlanRequest, buckets: list[Bucket], cands: list[Candidate], b: int) -> str:
    bk = buckets[b]
    what = f"requests of ~{bk.prompt_tokens:.0f} prompt / {bk.output_tokens:.0f} output tokens ({bk.requests} in the trace)"
    pts = [(c, c.points[b]) for c in cands]
    if not pts:
        return f"no candidate configuration of {req.model.id} fits on {', '.join(a.id for a in req.accelerators)}"
    tpot = [(p.needed_ms, c.key) for c, p in pts if isinstance(p, Infeasible) and p.reason == "tpot"]
    ttft = [(p.needed_ms, c.key) for c, p in pts if isinstance(p, Infeasible) and p.reason == "ttft"]
    if tpot and len(tpot) == len(pts):
        ms, key = min(tpot)
        return (f"TPOT SLO {req.slo_tpot_ms:g} ms is below the batch-1 step time of every candidate for {what}: "
                f"fastest is {key} at {ms:.1f} ms")
    if ttft and len(ttft) + len(tpot) == len(pts):
        ms, key = min(ttft)
        return (f"TTFT SLO {req.slo_ttft_ms:g} ms is below the prefill time of every candidate for {what}: "
                f"fastest is {key} at {ms:.1f} ms")
    return f"{what} fit in no candidate's KV cache under the SLOs (TPOT {req.slo_tpot_ms:g} ms, TTFT {req.slo_ttft_ms} ms)"


@dataclass
class _Milp:
    columns: list[tuple[int, int]]  # (candidate index, site index) per x column
    x: np.ndarray  # replicas per column
    y: np.ndarray  # [bucket, column] share
    usd_per_hour: float
    load: np.ndarray  # planned busy replicas per column


@contextmanager
def _quiet_stdout():
    """HiGHS prints solver chatter to the C stdout; keep --json output clean."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _site_list(req: PlanRequest) -> list[Site | None]:
    return list(req.sites) if req.sites else [None]


def _col_cost(c: Candidate, site: Site | None) -> float:
    return c.rental_usd_per_hour + energy_usd_per_hour(c.watts, site)


def solve_milp(
    req: PlanRequest,
    buckets: list[Bucket],
    cands: list[Candidate],
    derate: dict[str, float] | None = None,
    *,
    allowed: Callable[[Candidate], bool] | None = None,
    rate_scale: float = 1.0,
    ignore_caps: bool = False,
    miss_budget_requests: int = 0,
) -> _Milp | None:
    """Solve the MILP; None when infeasible. Buckets no allowed candidate can serve are left out
    (their requests count as SLO misses) while they hold at most `miss_budget_requests` requests."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    derate = derate or {}
    sites = _site_list(req)
    columns = [(ci, si) for ci, c in enumerate(cands) if (allowed is None or allowed(c)) and c.watts > 0
               for si in range(len(sites))]
    if not columns:
        return None
    nb, nc = len(buckets), len(columns)
    # y index: b * nc + j ; x index: nb * nc + j
    ny = nb * nc
    nvar = ny + nc
    cost = np.zeros(nvar)
    for j, (ci, si) in enumerate(columns):
        cost[ny + j] = _col_cost(cands[ci], sites[si])
    rows = nb + nc
    caps = {} if ignore_caps else {s.id: req.power_caps_mw[s.id] for s in req.sites if s.id in req.power_caps_mw}
    cap_sites = [si for si, s in enumerate(sites) if s is not None and s.id in caps]
    a = lil_matrix((rows + len(cap_sites), nvar))
    lb = np.zeros(rows + len(cap_sites))
    ub = np.zeros(rows + len(cap_sites))
    yub = np.zeros(ny)
    for b, bk in enumerate(buckets):
        for j, (ci, si) in enumerate(columns):
            p = cands[ci].points[b]
            if isinstance(p, OperatingPoint) and p.rate_per_s > 0:
                a[b, b * nc + j] = 1.0
                yub[b * nc + j] = 1.0
                rate = p.rate_per_s * derate.get(cands[ci].key, 1.0) * req.max_utilization
                a[nb + j, b * nc + j] = bk.rate_per_s * rate_scale / rate
        lb[b] = ub[b] = 1.0
    for j in range(nc):
        a[nb + j, ny + j] = -1.0
        lb[nb + j], ub[nb + j] = -np.inf, 0.0
    for k, si in enumerate(cap_sites):
        s = sites[si]
        for j, (ci, sj) in enumerate(columns):
            if sj == si:
                a[rows + k, ny + j] = facility_watts(cands[ci].watts, s) / 1e6
        lb[rows + k], ub[rows + k] = -np.inf, caps[s.id]
    uncovered = [b for b in range(nb) if yub[b * nc:(b + 1) * nc].sum() == 0]
    if sum(buckets[b].requests for b in uncovered) > miss_budget_requests:
        return None
    for b in uncovered:
        lb[b] = ub[b] = 0.0
    integrality = np.concatenate([np.zeros(ny), np.ones(nc)])
    bounds = Bounds(np.zeros(nvar), np.concatenate([yub, np.full(nc, np.inf)]))
    with _quiet_stdout():
        res = milp(cost, constraints=LinearConstraint(a.tocsr(), lb, ub), integrality=integrality, bounds=bounds,
                   options={"time_limit": 60.0, "mip_rel_gap": 1e-4})
    if res.x is None or res.status not in (0, 1):
        return None
    x = np.rint(res.x[ny:]).astype(np.int64)
    y = res.x[:ny].reshape(nb, nc)
    load = np.zeros(nc)
    for b, bk in enumerate(buckets):
        for j, (ci, _) in enumerate(columns):
            p = cands[ci].points[b]
            if y[b, j] > 1e-9 and isinstance(p, OperatingPoint):
                load[j] += bk.rate_per_s * rate_scale / (p.rate_per_s * derate.get(cands[ci].key, 1.0)) * y[b, j]
    return _Milp(columns, x, y, float(cost[ny:] @ x), load)



def _min_power_message(req: PlanRequest, buckets, cands) -> str:
    """Explain a power-cap infeasibility: the least facility power the workload needs."""
    sites = _site_list(req)
    best_mw = math.inf
    # Power needed if every bucket is served by the most power-efficient feasible type (LP bound).
    for si, s in enumerate(sites):
        total = 0.0
        for b, bk in enumerate(buckets):
            per = [facility_watts(c.watts, s) / 1e6 * bk.rate_per_s / c.points[b].rate_per_s
                   for c in cands if isinstance(c.points[b], OperatingPoint) and c.watts > 0]
            total += min(per) if per else math.inf
        best_mw = min(best_mw, total)
    caps = ", ".join(f"{k}={v:g} MW" for k, v in req.power_caps_mw.items())
    return (f"power cap too low: serving the workload under the SLOs needs at least {best_mw:.4f} MW of facility "
            f"power (with whole replicas, more), but the caps allow {caps}")
