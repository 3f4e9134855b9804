"""A benchmark against the REAL llama-cpp-python server (tiny random-weight GGUF) from
tests/engine: streaming, SSE parsing and counting without usage in the stream."""

from __future__ import annotations

import pytest

from tokenomy.bench.run import BenchConfig, run_bench
from tokenomy.bench.spec import parse_endpoints

pytestmark = pytest.mark.engine


async def test_bench_real_llama_server(llama_server: str):
    specs = parse_endpoints([f"llama={llama_server},price=in:0.5/out:1.5",
                             f"wrongmodel={llama_server},model=no-such-model"])
    cfg = BenchConfig(endpoints=specs, lengths=[(48, 8)], concurrency=1, max_requests=3, timeout_s=60)
    res = await run_bench(cfg)
    e = res.endpoints["llama"]
    m = e.metrics
    assert e.model == "tiny-llama"  # discovered from GET /v1/models
    assert m.requests_ok == 3 and sum(m.errors.values()) == 0, m.error_examples
    assert all(1 <= r.output_tokens <= 8 for r in e.results)
    assert m.ttft_ms["p50"] > 0 and m.e2e_ms["p50"] >= m.ttft_ms["p50"]
    # llama.cpp sends no usage chunk in streams: output tokens are the text chunks (one per token)
    assert not m.usage_reported and m.to_dict()["output_tokens_source"] == "counted_chunks"
    assert all(len(r.itl_s) == r.output_tokens - 1 for r in e.results)
    assert m.input_tokens == 3 * 48  # our sizing (no usage to replace it)
    assert e.pricing is not None and e.pricing.usd_per_1k_requests == pytest.approx(
        1000 * (m.mean_input_tokens * 0.5 + m.mean_output_tokens * 1.5) / 1e6)
    # llama-cpp-python's server with one model answers whatever model name is asked for
    other = res.endpoints["wrongmodel"].metrics
    assert other.requests == 3 and other.requests_ok == 3
