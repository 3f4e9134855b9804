"""What a person reads: --version, catalog listings, unknown-name errors, money and tables at 80
columns, and the CLI finding the ledger of a running gateway instead of creating a fresh one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from tokenomy.cli import app
from tokenomy.cli.fmt import usd
from tokenomy.errors import UnknownNameError

runner = CliRunner()


def cli(*args: str, env: dict | None = None, columns: int = 80):
    full = {**os.environ, "COLUMNS": str(columns), **(env or {})}
    return subprocess.run([sys.executable, "-m", "tokenomy", *args], capture_output=True, text=True, timeout=60,
                          env=full)


def test_version():
    from importlib.metadata import version

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"tokenomy {version('tokenomy')}"


@pytest.mark.parametrize(("value", "text"), [(Decimal("0.00000587"), "$0.00000587"), ("12.3456", "$12.35"),
                                             (0.0123456, "$0.0123"), ("0", "$0"), ("-5", "-$5.00"),
                                             ("1234567.891", "$1,234,567.89"), (None, "-"), ("0.1", "$0.1")])
def test_money_keeps_significant_digits(value, text):
    assert usd(value) == text


def test_catalog_list_json_and_table():
    res = runner.invoke(app, ["catalog", "list", "sites", "--json"])
    sites = json.loads(res.stdout)["sites"]
    ids = [s["id"] for s in sites]
    assert "us-va" in ids and "us-wa" in ids and ids[0] == "us-wa"  # cheapest energy first
    assert [s["usd_per_kwh"] for s in sites] == sorted(s["usd_per_kwh"] for s in sites)
    acc = json.loads(runner.invoke(app, ["catalog", "list", "accelerators", "--json"]).stdout)["accelerators"]
    assert {"h100", "l4", "a10g"} <= {a["id"] for a in acc}
    prices = json.loads(runner.invoke(app, ["catalog", "list", "prices", "--match", "gpt-4o-mini", "--json"]).stdout)
    row = next(p for p in prices["prices"] if p["id"] == "gpt-4o-mini")
    assert row["usd_per_mtok_input"] == pytest.approx(0.15) and row["usd_per_mtok_output"] == pytest.approx(0.60)
    table = cli("catalog", "list", "models")
    assert table.returncode == 0 and "llama-3-70b" in table.stdout and "…" not in table.stdout
    bad = cli("catalog", "list", "gpus")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "accelerators" in bad.stderr


def test_unknown_names_rank_close_matches_and_say_what_is_left_out():
    err = UnknownNameError("site", "us-vaa", [f"x{i}" for i in range(40)] + ["us-va", "us-wa"],
                           list_command="tokenomy catalog list sites")
    msg = str(err)
    assert msg.startswith("unknown site 'us-vaa'; did you mean us-va")
    assert "known (42): us-va" in msg and "and 22 more (`tokenomy catalog list sites`)" in msg
    r = cli("cost", "--model", "llama-3-8b", "--accelerator", "h100", "--site", "nowhere")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "us-va" in r.stderr and "us-wa" in r.stderr  # every site is listed (14 fit)


@pytest.fixture
def ledger_with_usage(tmp_path):
    from tokenomy.metering import Metering, UsageEvent

    d = tmp_path / "data"
    with Metering.open(d, admin_key="adm-test-key-0123456789") as m:
        kid, _ = m.create_key("acme", budget_usd="5", name="ci")
        m.commit_blocking(UsageEvent(
            id="r1", ts=time.time(), key_id=kid, tenant="acme", model="llama-3-8b-instruct-long-name",
            deployment="llama-3-8b-instruct-long-name@h100x1-us-va", status="ok", input_tokens=1234,
            cached_input_tokens=0, output_tokens=56, reasoning_tokens=0, cost_usd=Decimal("0.00000587"),
            price_usd=Decimal("0.0000123"), energy_joules=12.5, ttft_ms=None, latency_ms=20.0))
    return d, kid


def test_usage_fits_80_columns_without_cutting_names_or_money(ledger_with_usage):
    d, _ = ledger_with_usage
    r = cli("usage", "--data-dir", str(d))
    assert r.returncode == 0, r.stderr
    assert all(len(line) <= 80 for line in r.stdout.splitlines())
    first_column = "".join(line.split("│")[1].strip() for line in r.stdout.splitlines() if line.startswith("│"))
    assert "llama-3-8b-instruct-long-name@h100x1-us-va" in first_column  # folded, never "llama-..."
    assert "$0.00000587" in r.stdout and "0.0000..." not in r.stdout and "…" not in r.stdout
    wide = cli("usage", "--data-dir", str(d), "--wide", columns=200)
    assert "cached tok" in wide.stdout and "$0.0000123" in wide.stdout


def test_keys_and_tenants_list_show_spend_and_budget(ledger_with_usage):
    d, kid = ledger_with_usage
    keys = json.loads(runner.invoke(app, ["keys", "list", "--data-dir", str(d), "--json"]).stdout)["keys"]
    assert [(k["key_id"], k["spent_usd"]) for k in keys] == [(kid, "0.0000123")]
    r = cli("keys", "list", "--data-dir", str(d), columns=120)
    assert "$0.0000123" in r.stdout and "$5.00" in r.stdout
    tenants = json.loads(runner.invoke(app, ["tenants", "list", "--data-dir", str(d), "--json"]).stdout)["tenants"]
    assert [(t["name"], t["spent_usd"]) for t in tenants] == [("acme", "0.0000123")]


def test_keys_create_uses_the_running_gateways_ledger(tmp_path):
    """No --data-dir and no ./.tokenomy here: the key goes to the ledger a live gateway announced."""
    from tokenomy.gateway.registry import announce, running

    runtime, gw_dir, elsewhere = tmp_path / "run", tmp_path / "gw-data", tmp_path / "cwd"
    elsewhere.mkdir()
    env = {"TOKENOMY_RUNTIME_DIR": str(runtime)}
    env.pop("TOKENOMY_DATA_DIR", None)
    base = {k: v for k, v in os.environ.items() if k not in ("TOKENOMY_DATA_DIR", "TOKENOMY_LEDGER_URL")}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "tokenomy", *args], capture_output=True, text=True,
                              timeout=60, cwd=elsewhere, env={**base, **env})

    # no gateway: a fresh ledger in ./.tokenomy, with a loud warning
    r = run("keys", "create", "--tenant", "acme", "--json")
    assert r.returncode == 0 and "creating a NEW ledger" in r.stderr and (elsewhere / ".tokenomy").is_dir()
    # a gateway (here: this test process) announces its ledger; a dead one's entry is ignored
    os.environ["TOKENOMY_RUNTIME_DIR"] = str(runtime)
    try:
        announce(gw_dir, "127.0.0.1", 8080)
        (runtime / "999999999.json").write_text(json.dumps({"pid": 999999999, "data_dir": "/nope", "host": "h",
                                                            "port": 1}))
        assert [g["data_dir"] for g in running()] == [str(gw_dir.resolve())]
        (elsewhere / ".tokenomy").rename(elsewhere / "old")
        r = run("keys", "create", "--tenant", "globex", "--json")
        assert r.returncode == 0, r.stderr
        assert f"using the ledger of the gateway running on 127.0.0.1:8080 (pid {os.getpid()})" in r.stderr
        assert not (elsewhere / ".tokenomy").exists()
        listed = run("keys", "list", "--data-dir", str(gw_dir), "--json")
        assert [k["tenant"] for k in json.loads(listed.stdout)["keys"]] == ["globex"]
    finally:
        os.environ.pop("TOKENOMY_RUNTIME_DIR")
