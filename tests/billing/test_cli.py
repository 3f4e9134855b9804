"""CLI: JSON shapes of invoice / margins / pricing simulate, determinism, and bad input -> one line, exit 2.
Every test on a ledger runs on SQLite and on PostgreSQL (TOKENOMY_LEDGER_URL set, no ledger.db)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenomy.cli import app

from .helpers import utc

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plans.yaml"


def invoke(*args: str, env: dict | None = None) -> dict:
    result = runner.invoke(app, list(args), catch_exceptions=False, env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenomy", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def filled(ledger):
    t = utc("2026-11-05T12:00:00")
    ledger.add("acme", t, input_tokens=400_000, output_tokens=100_000, cost="1.2", energy=3.6e6, model="chat")
    ledger.add("acme", utc("2026-11-20T12:00:00"), input_tokens=2_000_000, output_tokens=300_000, cost="5",
               model="chat")
    ledger.add("globex", t, input_tokens=1_000_000, output_tokens=1_000_000, cost="12", model="big")
    ledger.add("walkin", t, input_tokens=1000, output_tokens=1000, cost="0.5", price="0.4", model="chat")
    return ledger


def test_invoice_json_shape_and_determinism(filled):
    args = ("invoice", "--tenant", "acme", "--period", "2026-11", "--plans", str(EXAMPLE),
            "--data-dir", str(filled.data_dir), "--json")
    a, b = invoke(*args, env=filled.env), invoke(*args, env=filled.env)
    assert a == b
    assert set(a) >= {"tenant", "period", "lines", "total_usd", "credits", "segments", "status", "fingerprint"}
    assert [s["plan"] for s in a["segments"]] == ["pro-flat", "payg"]
    kinds = [li["kind"] for li in a["lines"]]
    assert kinds[0] == "subscription" and "credit" in kinds
    # pro-flat for 15 of 30 days: $10; payg: 2 M input - 0.5 M free (prorated) = 1.5 M x $3 = 4.5,
    # output 0.3 M - 0.1 M free = 0.2 M x $12 = 2.4, one request package $0.10 -> $17.
    # October's $20 fee (open period) already drew $20 of the $25 welcome credit: $5 left, then prepaid.
    assert a["charges_usd"] == "17" and a["credits_usd"] == "17" and a["total_usd"] == "0.00"
    assert a["credits"] == [{"id": "welcome", "drawn_usd": "5", "remaining_usd": "0", "state": "used"},
                            {"id": "prepaid-2026", "drawn_usd": "12", "remaining_usd": "488"}]


def test_invoice_close_html_pdf(filled, tmp_path):
    d = str(filled.data_dir)
    env = {"TOKENOMY_BILLING_NOW": "2026-12-05T00:00:00Z", **filled.env}
    closed = invoke("invoice", "--tenant", "globex", "--period", "2026-11", "--plans", str(EXAMPLE), "--data-dir", d,
                    "--close", "--json", env=env)
    assert closed["status"] == "closed" and closed["total_usd"] == "500.00"  # enterprise minimum commitment
    html = runner.invoke(app, ["invoice", "--tenant", "globex", "--period", "2026-11", "--plans", str(EXAMPLE),
                               "--data-dir", d, "--format", "html"], env=filled.env)
    assert html.exit_code == 0 and "<td class=n>500.00</td>" in html.stdout
    pdf = tmp_path / "inv.pdf"
    res = runner.invoke(app, ["invoice", "--tenant", "globex", "--period", "2026-11", "--plans", str(EXAMPLE),
                              "--data-dir", d, "--format", "pdf", "--output", str(pdf)], env=filled.env)
    assert res.exit_code == 0
    data = pdf.read_bytes()
    again = runner.invoke(app, ["invoice", "--tenant", "globex", "--period", "2026-11", "--plans", str(EXAMPLE),
                                "--data-dir", d, "--format", "pdf", "--output", str(tmp_path / "again.pdf")],
                           env=filled.env)
    assert again.exit_code == 0 and (tmp_path / "again.pdf").read_bytes() == data  # deterministic bytes
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    from .test_pdf import text_of

    assert "Total due (USD)" in text_of(data) and "500.00" in text_of(data)


def test_margins_json_shape(filled):
    out = invoke("margins", "--period", "2026-11", "--plans", str(EXAMPLE), "--data-dir", str(filled.data_dir), "--json",
                 env=filled.env)
    rows = {r["key"]: r for r in out["rows"]}
    assert rows["acme"]["revenue_usd"] == "17" and rows["acme"]["cost_usd"] == "6.2"
    assert rows["acme"]["energy_kwh"] == 1.0
    assert rows["globex"]["margin_usd"] == "488"
    assert rows["walkin"]["margin_usd"] == "-0.1"  # list price below its serving cost
    assert out["negative_margin_tenants"] == ["walkin"] and out["negative_margin_share"] == pytest.approx(1 / 3, abs=1e-6)
    by_plan = invoke("margins", "--period", "2026-11", "--by", "plan", "--plans", str(EXAMPLE),
                     "--data-dir", str(filled.data_dir), "--json", env=filled.env)
    plan_rows = {r["key"]: r for r in by_plan["rows"]}
    assert plan_rows["pro-flat"]["revenue_usd"] == "10" and plan_rows["pro-flat"]["cost_usd"] == "1.2"
    assert plan_rows["payg"]["cost_usd"] == "5"
    by_model = invoke("margins", "--period", "2026-11", "--by", "model", "--plans", str(EXAMPLE),
                      "--data-dir", str(filled.data_dir), "--json", env=filled.env)
    assert {r["key"] for r in by_model["rows"]} == {"chat", "big"}
    assert by_model["total"]["revenue_usd"] == by_plan["total"]["revenue_usd"] == out["total"]["revenue_usd"]


def test_simulate_json_shape_and_seed_determinism():
    args = ("pricing", "simulate", "--plans", str(EXAMPLE), "--users", "2000", "--seed", "1", "--json")
    a, b = invoke(*args), invoke(*args)
    assert a == b
    assert set(a["plans"]) == {"pro-flat", "team-overage", "payg", "enterprise", "cost-plus", "free"}
    for plan in a["plans"].values():
        assert {"revenue_usd", "cost_usd", "margin_usd", "unprofitable_share"} <= set(plan)
        assert plan["margin_usd"] == pytest.approx(plan["revenue_usd"] - plan["cost_usd"], abs=0.011)
    c = invoke("pricing", "simulate", "--plans", str(EXAMPLE), "--users", "2000", "--seed", "2", "--json")
    assert c["plans"]["payg"]["revenue_usd"] != a["plans"]["payg"]["revenue_usd"]


def test_simulate_route_mix_elasticity_plot(tmp_path):
    png = tmp_path / "m.png"
    out = invoke("pricing", "simulate", "--plans", str(EXAMPLE), "--users", "1000", "--seed", "3",
                 "--route-mix", "small=0.3", "--elasticity", "0.5", "--plot", str(png), "--json")
    flat = out["plans"]["pro-flat"]
    assert flat["routing"]["mix"] == {"small": 0.3} and flat["routing"]["margin_effect_usd"] > 0
    assert flat["elasticity"]["demand_multiplier_mean"] == pytest.approx(2 ** 0.5, rel=1e-6)  # price 0 within caps
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    # small multiples: 6 plans -> a 3 x 2 grid, each plan on its own scale (one axis flattened them)
    assert Image.open(png).size == (round(3 * 4.2 * 110), round((2 * 3.0 + 0.6) * 110))


def test_bad_input_is_one_line_exit_2(filled, tmp_path):
    d = str(filled.data_dir)
    bad = tmp_path / "bad.yaml"
    bad.write_text("plans:\n  - name: x\n    subscription_usd: 5\n    capz: []\n")
    cases = [
        (("invoice", "--tenant", "nobody", "--period", "2026-11", "--data-dir", d), "unknown tenant 'nobody'"),
        (("invoice", "--tenant", "acme", "--period", "2026-13", "--data-dir", d), "period '2026-13' is not a month"),
        (("invoice", "--tenant", "acme", "--period", "2026-11", "--data-dir", d, "--plans", str(bad)),
         "plans.x.capz: unknown field"),
        (("pricing", "simulate", "--plans", str(EXAMPLE), "--route-mix", "tiny=0.3", "--json"),
         "unknown model group 'tiny'"),
    ]
    for args, message in cases:
        res = run_cli(*args, env=filled.env)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stdout == "" and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr


def test_simulate_usage_from_ledger(filled):
    out = invoke("pricing", "simulate", "--plans", str(EXAMPLE), "--users", "500", "--seed", "4",
                 "--usage-from-ledger", "--data-dir", str(filled.data_dir), "--json", env=filled.env)
    # three tenant-months in the ledger: acme 2.8 M tokens, globex 2 M, walkin 2 k
    assert out["usage_model"] == "ledger"
    assert out["usage"]["tokens_per_user"]["p90"] == 2_800_000
    assert out["plans"]["pro-flat"]["revenue_usd"] == 500 * 20


def test_invoice_in_a_process_with_the_ledger_url(filled, tmp_path):
    """`tokenomy invoice` as a user runs it: the URL from the environment, a data dir without
    ledger.db on PostgreSQL; the same invoice on both ledgers."""
    empty = tmp_path / "no-ledger-here"
    empty.mkdir()
    d = str(filled.data_dir if filled.url is None else empty)
    res = run_cli("invoice", "--tenant", "acme", "--period", "2026-11", "--plans", str(EXAMPLE), "--data-dir", d,
                  "--json", env=filled.env)
    assert res.returncode == 0, res.stderr
    inv = json.loads(res.stdout)
    assert (inv["charges_usd"], inv["total_usd"], inv["usage"]["requests"]) == ("17", "0.00", 2)
    assert not (empty / "ledger.db").exists()


def test_unreachable_ledger_url_is_one_line_exit_2(tmp_path):
    res = run_cli("invoice", "--tenant", "acme", "--period", "2026-11", "--data-dir", str(tmp_path),
                  env={"TOKENOMY_LEDGER_URL": "postgresql://postgres@127.0.0.1:1/test"})
    assert res.returncode == 2 and res.stdout == "" and res.stderr.count("\n") == 1, res.stderr
    assert "cannot open the PostgreSQL ledger at postgresql://postgres@127.0.0.1:1/test" in res.stderr
