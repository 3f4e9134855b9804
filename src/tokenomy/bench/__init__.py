"""tokenomy.bench: benchmark OpenAI-compatible endpoints side by side, priced per token.

    from tokenomy.bench import BenchConfig, run_bench, parse_endpoints, Slo, write_report
    cfg = BenchConfig(endpoints=parse_endpoints(["a=http://127.0.0.1:9001/v1,price=h100x1@us-va"]),
                      lengths=[(512, 128)], rates=[1.0, 2.0, 4.0], max_requests=50, slo=Slo(500, 50))
    result = await run_bench(cfg)          # BenchResult; result.to_dict() is the CLI's --json
    write_report(result, "bench.html")

Modules: spec (CLI parsing), prompts (sized prompts), client (one timed streaming request),
load (open/closed-loop load), metrics (vLLM benchmark_serving definitions), pricing,
judge (LLM-judged quality), terms (contract compliance), ledger (compliance from the
gateway's usage events), run (orchestration), report (HTML).
"""

from .metrics import Metrics, Slo, compute_metrics
from .run import BenchConfig, BenchResult, EndpointResult, run_bench, run_bench_sync
from .spec import EndpointSpec, PriceSpec, parse_endpoint, parse_endpoints, parse_price


def write_report(result: BenchResult, path):  # type: ignore[no-untyped-def]
    """Write the self-contained HTML report (imports matplotlib only when called)."""
    from .report import write_report as _write

    return _write(result, path)


__all__ = [
    "BenchConfig", "BenchResult", "EndpointResult", "EndpointSpec", "Metrics", "PriceSpec", "Slo", "compute_metrics",
    "parse_endpoint", "parse_endpoints", "parse_price", "run_bench", "run_bench_sync", "write_report",
]
