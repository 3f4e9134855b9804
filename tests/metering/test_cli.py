"""CLI shapes: keys/tenants/usage with --json; bad input is one line on stderr, exit 2."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from tokenomy.cli import app
from tokenomy.errors import TokenomyError
from tokenomy.metering import Metering

from .conftest import make_event
from .test_processes import run_cli

runner = CliRunner()


def invoke(*args: str) -> dict:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_keys_tenants_and_usage_json_shapes(tmp_path):
    d = str(tmp_path)
    tenant = invoke("tenants", "create", "acme", "--budget-usd", "10", "--budget-period", "monthly", "--data-dir", d,
                    "--json")
    assert (tenant["name"], tenant["budget_usd"], tenant["budget_period"]) == ("acme", "10", "monthly")
    created = invoke("keys", "create", "--tenant", "acme", "--budget-usd", "2.5", "--budget-period", "daily",
                     "--soft-budget-usd", "2", "--rpm", "60", "--tpm", "10000", "--name", "ci", "--data-dir", d, "--json")
    assert created["key"].startswith(f"tk-{created['key_id']}-") and created["tenant"] == "acme"
    assert (created["budget_usd"], created["budget_period"], created["soft_budget_usd"], created["rpm"],
            created["tpm"], created["name"]) == ("2.5", "daily", "2", 60, 10000, "ci")
    other = invoke("keys", "create", "--tenant", "beta", "--data-dir", d, "--json")  # creates tenant beta
    assert [t["name"] for t in invoke("tenants", "list", "--data-dir", d, "--json")["tenants"]] == ["acme", "beta"]
    keys = invoke("keys", "list", "--tenant", "acme", "--data-dir", d, "--json")["keys"]
    assert [k["key_id"] for k in keys] == [created["key_id"]]
    assert created["key"].split("-", 2)[2] not in json.dumps(keys)

    with Metering.open(tmp_path, ensure_admin=False) as m:  # a "gateway" records some traffic
        for model, price in (("m1", "0.1"), ("m1", "0.1"), ("m2", "0.1")):
            m.commit_blocking(make_event(tenant="acme", key_id=created["key_id"], model=model, price=price,
                                         ts=time.time()))
        m.commit_blocking(make_event(tenant="beta", key_id=other["key_id"], price="5", ts=time.time()))
    usage = invoke("usage", "--tenant", "acme", "--since", "1h", "--data-dir", d, "--json")
    assert (usage["requests"], usage["price_usd"], usage["input_tokens"]) == (3, "0.3", 300)
    assert usage["by_model"]["m1"]["requests"] == 2 and usage["by_deployment"]["h100"]["requests"] == 3
    assert invoke("usage", "--tenant", "acme", "--until", "1h", "--data-dir", d, "--json")["requests"] == 0
    assert invoke("usage", "--data-dir", d, "--json")["requests"] == 4

    assert invoke("keys", "revoke", created["key_id"], "--data-dir", d, "--json") == {"revoked": created["key_id"]}
    assert invoke("keys", "list", "--data-dir", d, "--json")["keys"][0]["active"] is False

    human = runner.invoke(app, ["usage", "--tenant", "acme", "--data-dir", d])
    assert human.exit_code == 0 and "TOTAL" in human.stdout and "m1" in human.stdout


@pytest.mark.parametrize("args,message", [
    (["usage", "--tenant", "nobody", "--json"], "unknown tenant 'nobody'"),
    (["usage", "--tenant", "acme", "--since", "yesterday"], "--since 'yesterday' is not a time"),
    (["keys", "create", "--tenant", "acme", "--budget-period", "weekly"], "budget period"),
    (["keys", "revoke", "nope"], "unknown key id 'nope'"),
])
def test_bad_input_raises_a_user_error(tmp_path, args, message):
    invoke("tenants", "create", "acme", "--data-dir", str(tmp_path), "--json")
    with pytest.raises(TokenomyError, match=message):
        runner.invoke(app, [*args, "--data-dir", str(tmp_path)], catch_exceptions=False)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    run_cli("tenants", "create", "acme", data_dir=tmp_path)
    for args in (["usage", "--tenant", "nobody", "--json"], ["usage", "--tenant", "acme", "--since", "soon"]):
        proc = run_cli(*args, data_dir=tmp_path, check=False)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_read_commands_do_not_create_a_ledger(tmp_path):
    with pytest.raises(TokenomyError, match="no ledger"):
        runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path / "missing")], catch_exceptions=False)
    assert not (tmp_path / "missing").exists()
