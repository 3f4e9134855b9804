"""CLI: workloads and growth from the ledger, the cost-vs-rate sweep and plot, --save for the dashboard."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from tokenomy.dashboard.plans import kind_of, list_plans, load_plan
from tokenomy.fleet.ledger import ledger_growth, load_ledger_workload
from tokenomy.fleet.workload import head, load_trace

DAY = 86_400.0
T0 = datetime(2026, 10, 1, tzinfo=timezone.utc).timestamp()  # a fixed past midnight (UTC)


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tokenomy", *args], capture_output=True, text=True, timeout=180,
                          cwd=cwd)


@pytest.fixture(scope="module")
def ledger_dir(tmp_path_factory, seed):
    """4 days of conv requests (60 a day, each day's output 25% longer) for tenant acme, plus 5 of beta."""
    d = tmp_path_factory.mktemp("ledger")
    tr = head(load_trace("conv"), 240)
    rows = [(T0 + (i // 60) * DAY + float(tr.arrived_at[i] - tr.arrived_at[(i // 60) * 60]),
             int(tr.prompt_tokens[i]), int(round(tr.output_tokens[i] * 1.25 ** (i // 60))))
            for i in range(len(tr))]
    seed(d, rows)
    seed(d, [(T0 + 100.0 + k, 50, 5) for k in range(5)], tenant="beta")
    return d


def test_simulate_ledger_workload_and_save(ledger_dir, tmp_path):
    p = _run("simulate", "--trace", f"ledger:{ledger_dir}", "--tenant", "acme", "--since", "2026-10-04",
             "--replicas", "1", "--slo-tpot-ms", "60", "--save", "sim-acme", "--data-dir", str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    expected = load_ledger_workload(ledger_dir, tenant="acme", since=T0 + 3 * DAY)
    assert r["requests_completed"] == len(expected) == 60
    assert r["input_tokens"] == int(expected.prompt_tokens.sum())
    assert r["trace"]["duration_seconds"] == pytest.approx(expected.duration_seconds, abs=1e-3)
    # ledger:DIR names the ledger; --data-dir, when given, is where the result is saved
    saved = tmp_path / "plans" / "sim-acme.json"
    assert r["saved"] == str(saved.resolve()) and not (ledger_dir / "plans" / "sim-acme.json").exists()
    doc = json.loads(saved.read_text())
    assert doc["kind"] == "fleet-simulation" and doc["requests_completed"] == 60 and "saved" not in doc
    listed = list_plans(tmp_path / "plans")
    assert [i["name"] for i in listed] == ["sim-acme"] and listed[0]["summary"]["slo_attainment"] == r["slo_attainment"]


def test_plan_from_ledger_with_fitted_growth_rate_sweep_and_save(ledger_dir, tmp_path):
    png = tmp_path / "rate.png"
    p = _run("plan", "--from-ledger", "--data-dir", str(ledger_dir), "--tenant", "acme", "--since", "2026-10-04",
             "--model", "llama-3-8b", "--slo-tpot-ms", "60", "--accelerators", "l4,h100", "--counts", "1",
             "--no-verify", "--growth", "ledger", "--months", "2", "--rate-sweep", "4,1", "--rate-plot", str(png),
             "--save", "acme-plan", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["trace"]["requests"] == 60 and r["usd_per_hour"] > 0
    # growth: fitted to all 4 days of acme's tokens, not only the --since window of the trace
    fit = r["growth"]["fit"]
    direct = ledger_growth(ledger_dir, tenant="acme")
    assert fit["days"] == 4 and fit["monthly_growth"] == direct["monthly_growth"]
    assert r["growth"]["monthly_growth"] == fit["monthly_growth"] > 0
    assert [m["rate_scale"] for m in r["growth"]["months"]] == pytest.approx(
        [(1 + fit["monthly_growth"]) ** m for m in range(3)], rel=1e-3)
    # cost vs rate, sorted by scale: more traffic never costs less per hour, nor more per token
    pts = r["cost_vs_rate"]
    assert [q["rate_scale"] for q in pts] == [1.0, 4.0] and all(q["feasible"] for q in pts)
    assert pts[1]["rate_per_s"] == pytest.approx(4 * pts[0]["rate_per_s"], rel=1e-3)
    assert pts[0]["usd_per_hour"] == r["usd_per_hour"]
    assert pts[1]["usd_per_hour"] >= pts[0]["usd_per_hour"] and pts[1]["usd_per_mtok"] <= pts[0]["usd_per_mtok"]
    for q in pts:  # $/Mtok is $/h over the tokens an hour of the scaled trace carries
        t = r["trace"]
        tokens_per_hour = (t["mean_prompt_tokens"] + t["mean_output_tokens"]) * t["requests"] / (
            t["duration_seconds"] / q["rate_scale"]) * 3600
        assert q["usd_per_mtok"] == pytest.approx(q["usd_per_hour"] / (tokens_per_hour / 1e6), rel=1e-2)
    assert r["rate_plot"] == str(png) and png.stat().st_size > 10_000
    doc = json.loads((ledger_dir / "plans" / "acme-plan.json").read_text())
    assert kind_of(doc) == "fleet-plan" and doc["usd_per_hour"] == r["usd_per_hour"]
    shown = load_plan(ledger_dir / "plans", "acme-plan")  # what the dashboard's Plans page serves
    assert len(shown["tables"]["assignments"]) == len(r["assignments"]) and shown["totals"]["kind"] == "fleet-plan"


def _error(*args) -> str:
    """Run a command in-process; it must fail with a TokenomyError (which `main` prints as one line, exit 2)."""
    from typer.testing import CliRunner

    from tokenomy.cli import app
    from tokenomy.errors import TokenomyError

    res = CliRunner().invoke(app, list(args))
    assert isinstance(res.exception, TokenomyError), (res.exception, res.output)
    return str(res.exception)


def test_ledger_cli_errors(ledger_dir, tmp_path):
    # beta has 5 events on one day: too few days to fit a growth rate -> one line on stderr, exit 2
    p = _run("plan", "--trace", "ledger", "--data-dir", str(ledger_dir), "--tenant", "beta", "--slo-tpot-ms", "60",
             "--growth", "ledger", "--no-verify", "--json")
    assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1 and p.stdout == ""
    assert "has 1 complete day(s)" in p.stderr and "tenant 'beta'" in p.stderr and "needs >= 3" in p.stderr
    # the trace may come from elsewhere: the growth fit still reads the ledger of --data-dir, for --tenant
    msg = _error("plan", "--trace", "conv", "--data-dir", str(ledger_dir), "--tenant", "beta", "--slo-tpot-ms", "60",
                 "--growth", "ledger", "--no-verify", "--json")
    assert "has 1 complete day(s)" in msg
    assert "--tenant select ledger events" in _error("plan", "--trace", "conv", "--tenant", "beta",
                                                     "--slo-tpot-ms", "60", "--json")
    assert "--growth ledger:90d" in _error("plan", "--trace", "conv", "--since", "7d", "--growth", "ledger",
                                           "--slo-tpot-ms", "60", "--json")
    assert "missing --trace" in _error("simulate", "--json")
    assert "no metering ledger at" in _error("simulate", "--from-ledger", "--data-dir", str(tmp_path / "none"))
    assert "bad --save name" in _error("simulate", "--trace", "conv", "--limit", "5", "--save", "../evil",
                                       "--data-dir", str(tmp_path), "--json")
    assert not (tmp_path / "plans").exists()
    assert "bad --rate-sweep" in _error("plan", "--trace", "conv", "--slo-tpot-ms", "60", "--rate-sweep", "1,0")
    assert "--since '8 days' is not a time" in _error("simulate", "--from-ledger", "--since", "8 days")


def test_save_defaults_to_the_data_dir_env(tmp_path):
    env_dir = tmp_path / "data"
    p = subprocess.run([sys.executable, "-m", "tokenomy", "simulate", "--trace", "conv", "--limit", "20", "--save",
                        "small", "--json"], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "TOKENOMY_DATA_DIR": str(env_dir)})
    assert p.returncode == 0, p.stderr
    assert json.loads((env_dir / "plans" / "small.json").read_text())["requests_completed"] == 20
    assert math.isfinite(json.loads(p.stdout)["usd_per_mtok"])
