"""Through the real gateway (in-process, SQLite ledger): a 401 is reported per endpoint, and the
contract check from the ledger's live traffic (--from-ledger) matches what went through."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from bench_helpers import emulators

from tests.gateway.conftest import gateway, list_dep
from tokenomy.bench.ledger import read_ledger
from tokenomy.bench.run import BenchConfig, run_bench
from tokenomy.bench.spec import parse_endpoints


def _config(good_url: str) -> dict:
    # "dead" is cheaper, so the cost policy tries it first; nothing listens there -> fallback to "good"
    return {"deployments": [list_dep("good", good_url, 0.5, 1.5, model="llama-3-8b"),
                            list_dep("dead", "http://127.0.0.1:1/v1", 0.1, 0.2, model="llama-3-8b")],
            "model_groups": {"m": {"deployments": ["good", "dead"]}}}


async def test_401_reported_and_ledger_compliance(tmp_path, monkeypatch):
    data_dir = tmp_path / "gw"
    terms = tmp_path / "terms.yaml"
    terms.write_text("good:\n  max_usd_per_mtok_input: 0.5\n  max_usd_per_mtok_output: 1.4\n"
                     "  availability_pct: 99\n  ttft_ms: {percentile: 90, max: 60000}\n"
                     "dead:\n  availability_pct: 99\n"
                     "unused:\n  availability_pct: 99\n")
    async with emulators({}) as (url,), gateway(_config(url), data_dir) as g:
        monkeypatch.setenv("TOKENOMY_BENCH_TEST_KEY", g.key("t1"))
        monkeypatch.setenv("TOKENOMY_BENCH_BAD_KEY", "tk-not-a-real-key")
        specs = parse_endpoints([f"gw={g.url}/v1,model=m,api-key-env=TOKENOMY_BENCH_TEST_KEY",
                                 f"nokey={g.url}/v1,model=m,api-key-env=TOKENOMY_BENCH_BAD_KEY"])
        cfg = BenchConfig(endpoints=specs, lengths=[(40, 8), (300, 64)], concurrency=2, max_requests=8)
        res = await run_bench(cfg)
        ok, denied = res.endpoints["gw"].metrics, res.endpoints["nokey"].metrics
        assert ok.requests_ok == 8 and sum(ok.errors.values()) == 0
        assert denied.requests_ok == 0 and denied.errors["http_4xx"] == 8
        assert "HTTP 401" in denied.error_examples["http_4xx"]

        stats = read_ledger(data_dir, since=None)
        good, dead = stats["good"], stats["dead"]
        assert good.successes == 8 and good.failures == 0 and good.availability == 1.0
        assert dead.successes == 0 and dead.failures >= 1 and dead.availability == 0.0
        assert len(good.ttft_ms) == 8 and len(good.tpot_ms) >= 1
        usd_in, usd_out, fit = good.price_fit()
        assert fit == "fit" and usd_in == pytest.approx(0.5, rel=1e-6) and usd_out == pytest.approx(1.5, rel=1e-6)

        env = {k: v for k, v in os.environ.items() if k != "TOKENOMY_ADMIN_KEY"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tokenomy", "bench", "--from-ledger", "--data-dir", str(data_dir),
            "--since", "1h", "--terms", str(terms), "--json", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    eps = json.loads(out)["endpoints"]
    assert eps["good"]["requests_ok"] == 8 and eps["good"]["source"] == "ledger"
    checks = eps["good"]["compliance"]["checks"]
    assert checks["price_input"]["ok"] is True and checks["price_output"]["ok"] is False  # 1.5 > 1.4 committed
    assert checks["availability"]["measured_pct"] == 100.0 and checks["ttft"]["ok"] is True
    assert eps["good"]["compliance"]["compliant"] is False
    assert eps["dead"]["compliance"]["checks"]["availability"]["measured_pct"] == 0.0
    assert eps["unused"]["requests"] == 0 and eps["unused"]["compliance"]["checks"]["availability"]["ok"] is None


def test_from_ledger_missing_dir_is_a_clear_error(tmp_path):
    import subprocess

    terms = tmp_path / "t.yaml"
    terms.write_text("a: {availability_pct: 99}\n")
    res = subprocess.run([sys.executable, "-m", "tokenomy", "bench", "--from-ledger", "--data-dir",
                          str(tmp_path / "none"), "--terms", str(terms)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.startswith("error: no gateway ledger in")
    assert not (tmp_path / "none").exists()  # reading never creates a ledger
