"""`tokenomy perf step` and `tokenomy cost` (and `cost compare`): JSON shapes, numbers, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tokenomy.cli import app

runner = CliRunner()


def run_json(*args: str) -> dict:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, (res.output, res.exception)
    return json.loads(res.stdout)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenomy", *args], capture_output=True, text=True, timeout=60)


def test_perf_step_decode_json_shape():
    out = run_json("perf", "step", "--model", "llama-3-8b", "--accelerator", "h200", "--batch", "32", "--context", "2048")
    for key in ("seconds", "tokens_per_s", "joules_per_token", "watts", "source", "model", "accelerator", "max_batch"):
        assert key in out
    assert out["source"] == "datasheet" and out["model"] == "llama-3-8b" and out["accelerator"] == "h200"
    assert out["tokens_per_s"] == pytest.approx(32 / out["seconds"])
    assert out["joules_per_token"] == pytest.approx(out["watts"] * out["seconds"] / 32)


def test_perf_step_decode_matches_measured_h100_step():
    out = run_json("perf", "step", "--model", "llama-3-8b", "--accelerator", "h100", "--batch", "1", "--context", "512")
    assert out["source"] == "profile"
    assert out["seconds"] == pytest.approx(0.00727, rel=0.08)  # measured 7.27 ms
    assert out["joules_per_token"] == pytest.approx(2.896, rel=0.15)  # measured 2.9 J/token


def test_perf_step_prefill_matches_measured():
    out = run_json("perf", "step", "--phase", "prefill", "--model", "llama-3-8b", "--accelerator", "h100",
                   "--tokens", "2048")
    assert out["phase"] == "prefill" and out["tokens"] == 2048
    assert out["seconds"] == pytest.approx(0.05825, rel=0.08)  # measured 58.3 ms
    assert out["tokens_per_s"] == pytest.approx(2048 / out["seconds"])


def test_perf_step_fp8_and_count():
    bf16 = run_json("perf", "step", "--model", "llama-3-70b", "--accelerator", "h100", "--count", "4")
    fp8 = run_json("perf", "step", "--model", "llama-3-70b", "--accelerator", "h100", "--count", "4", "--dtype", "fp8")
    assert fp8["seconds"] < bf16["seconds"] and fp8["dtype"] == "fp8" and bf16["count"] == 4


def test_perf_step_weight_and_kv_formats():
    bf16 = run_json("perf", "step", "--model", "llama-3-8b", "--accelerator", "l4", "--batch", "8")
    q = run_json("perf", "step", "--model", "llama-3-8b", "--accelerator", "l4", "--batch", "8", "--quant", "int4-awq",
                 "--kv-dtype", "fp8")
    assert (q["dtype"], q["kv_dtype"]) == ("int4-awq", "fp8")
    assert q["weight_bytes"] == pytest.approx(bf16["weight_bytes"] * 0.5195 / 2, rel=1e-3)
    assert q["kv_bytes_per_token"] == bf16["kv_bytes_per_token"] / 2
    assert q["seconds"] < 0.5 * bf16["seconds"] and q["max_batch"] > 3 * bf16["max_batch"]


def test_cost_json_shape_and_numbers():
    out = run_json("cost", "--model", "llama-3-70b", "--accelerator", "h100", "--count", "4", "--site", "us-va",
                   "--slo-tpot-ms", "50")
    for key in ("usd_per_mtok_input", "usd_per_mtok_output", "joules_per_token", "tokens_per_s", "max_batch",
                "usd_per_hour", "source", "price_provider", "price_date"):
        assert out[key] is not None, key
    assert out["tpot_ms"] <= 50 and out["max_batch"] >= 1
    assert 0 < out["usd_per_mtok_input"] < out["usd_per_mtok_output"]
    # $/Mtok output = replica $/h / (tokens/s * 3600) * 1e6
    assert out["usd_per_mtok_output"] == pytest.approx(out["usd_per_hour"] / (out["tokens_per_s"] * 3600) * 1e6)


def test_cost_compare_json_sorted_and_plot(tmp_path):
    png = tmp_path / "cmp.png"
    out = run_json("cost", "compare", "--model", "llama-3-8b", "--slo-tpot-ms", "40", "--sites", "us-va,de",
                   "--all-sites", "--plot", str(png))
    rows = out["rows"]
    assert len(rows) >= 10
    assert [r["usd_per_mtok_output"] for r in rows] == sorted(r["usd_per_mtok_output"] for r in rows)
    assert {r["site"] for r in rows} == {"us-va", "de"}
    assert all(r["tpot_ms"] <= 40 for r in rows)
    assert out["api"] and all(r["source"] == "api" for r in out["api"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cost_compare_defaults_to_the_best_site_per_accelerator_with_api_offers_ranked_in():
    out = run_json("cost", "compare", "--model", "llama-3-8b", "--slo-tpot-ms", "40")
    accs = [(r["accelerator"], r["count"]) for r in out["rows"]]
    assert len(accs) == len(set(accs)) >= 10  # one row per accelerator, not one per site (154 before)
    every = run_json("cost", "compare", "--model", "llama-3-8b", "--slo-tpot-ms", "40", "--all-sites")["rows"]
    for r in out["rows"]:  # the shown site is that accelerator's cheapest
        same = [x["usd_per_mtok_output"] for x in every if (x["accelerator"], x["count"]) == (r["accelerator"], r["count"])]
        assert r["usd_per_mtok_output"] == min(same)
    res = runner.invoke(app, ["cost", "compare", "--model", "llama-3-8b", "--slo-tpot-ms", "40"], env={"COLUMNS": "200"})
    ranks = [c for c in (line.split("│")[1].strip() for line in res.output.splitlines() if line.startswith("│")) if c]
    cheapest_api = min(a["usd_per_mtok_output"] for a in out["api"])
    # on the shipped price map an API offer is cheaper than the best deployment: it is ranked above it
    assert cheapest_api < out["rows"][0]["usd_per_mtok_output"]
    first = next(line for line in res.output.splitlines() if line.startswith("│  1 "))
    assert "API" in first and ranks[:3] == ["1", "2", "3"]


def test_cost_compare_table():
    res = runner.invoke(app, ["cost", "compare", "--model", "llama-3-8b", "--slo-tpot-ms", "40", "--sites", "us-va"])
    assert res.exit_code == 0, res.output
    assert "h100" in res.output and "$/Mtok out" in res.output


@pytest.mark.parametrize("args,needle", [
    (["perf", "step", "--model", "llama-3-8b", "--accelerator", "h10", "--json"], "h100"),
    (["perf", "step", "--model", "lama-3-8b", "--accelerator", "h100", "--json"], "llama-3-8b"),
    (["cost", "--model", "llama-3-8b", "--accelerator", "h100", "--site", "us-vaa", "--json"], "us-va"),
])
def test_unknown_names_exit_2_with_close_matches(args, needle):
    res = run_cli(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown") and needle in lines[0]
    assert res.stdout == ""


@pytest.mark.parametrize("args,needle", [
    (["cost", "--model", "llama-3-70b", "--accelerator", "h100", "--json"], "does not fit"),
    (["cost", "--model", "llama-3-8b", "--accelerator", "l4", "--slo-tpot-ms", "10", "--json"], "SLO"),
    (["perf", "step", "--model", "llama-3-8b", "--accelerator", "a100-80g", "--dtype", "fp8"], "fp8"),
])
def test_infeasible_requests_exit_2_with_one_line(args, needle):
    res = run_cli(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr
