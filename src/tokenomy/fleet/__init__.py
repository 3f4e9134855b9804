"""tokenomy.fleet: workloads and traces, a continuous-batching fleet simulator, a MILP fleet planner.

    from tokenomy.fleet import load_trace, simulate, SchedulerConfig, summarize, make_deployment
    tr = load_trace("conv")                                  # or a CSV path
    dep = make_deployment("llama-3-8b", "h100", count=1, dtype="bf16")
    res = simulate(tr, dep.step_model, replicas=4)
    report = summarize(res, slo_ttft_ms=2000, slo_tpot_ms=40, replica_usd_per_hour=dep.usd_per_hour)

    from tokenomy.fleet import PlanRequest, plan_fleet     # cheapest mix under SLOs (Mélange-style MILP)
    from tokenomy.fleet import load_ledger_workload, ledger_growth   # workloads/growth from the metering ledger
"""

from tokenomy.fleet.deployment import Deployment, KVCapped, make_deployment
from tokenomy.fleet.ledger import GrowthFit, fit_log_linear_growth, ledger_growth, load_ledger_workload
from tokenomy.fleet.metrics import latency_cdf_plot, slo_met, summarize
from tokenomy.fleet.planner import PlanRequest, cost_vs_rate, cost_vs_slo, plan_fleet, plan_growth
from tokenomy.fleet.saved import save_result
from tokenomy.fleet.simulator import SchedulerConfig, SimResult, simulate
from tokenomy.fleet.workload import (
    LengthFit,
    Trace,
    fit_lengths,
    head,
    load_trace,
    scale_rate,
    synthetic,
    window,
)

__all__ = [
    "Deployment",
    "GrowthFit",
    "KVCapped",
    "LengthFit",
    "PlanRequest",
    "SchedulerConfig",
    "SimResult",
    "Trace",
    "cost_vs_rate",
    "cost_vs_slo",
    "fit_lengths",
    "fit_log_linear_growth",
    "head",
    "latency_cdf_plot",
    "ledger_growth",
    "load_ledger_workload",
    "load_trace",
    "make_deployment",
    "plan_fleet",
    "plan_growth",
    "save_result",
    "scale_rate",
    "simulate",
    "slo_met",
    "summarize",
    "synthetic",
    "window",
]
