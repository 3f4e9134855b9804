"""Parsing of --endpoint, PRICESPEC, --synthetic and --rate; CLI parse errors exit 2 with one line."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from tokenomy.bench.spec import parse_endpoint, parse_endpoints, parse_price, parse_rates, parse_synthetic
from tokenomy.errors import TokenomyError


def test_endpoint_with_every_option():
    s = parse_endpoint("fast=http://127.0.0.1:9001/v1/,model=llama-3-8b,api-key-env=MY_KEY,price=in:0.15/out:0.60,"
                       "header=x-emulator-fault:broken-stream,timeout=2.5")
    assert s.name == "fast" and s.base_url == "http://127.0.0.1:9001/v1"
    assert s.model == "llama-3-8b" and s.api_key_env == "MY_KEY" and s.timeout_seconds == 2.5
    assert s.headers == {"x-emulator-fault": "broken-stream"}
    assert s.price is not None and s.price.kind == "list"
    assert (s.price.usd_per_mtok_input, s.price.usd_per_mtok_output) == (0.15, 0.60)


def test_header_value_may_contain_commas_and_several_headers():
    s = parse_endpoint("a=http://h/v1,header=accept:text/a, text/b,header=x-y:1")
    assert s.headers == {"accept": "text/a, text/b", "x-y": "1"}


def test_price_kinds():
    assert parse_price("gpt-4o-mini").kind == "map"
    sh = parse_price("h100x8@us-va")
    assert (sh.kind, sh.accelerator, sh.count, sh.site, sh.ownership) == ("self_hosted", "h100", 8, "us-va", False)
    owned = parse_price("a100-80g x2@de:ownership".replace(" ", ""))
    assert (owned.accelerator, owned.count, owned.site, owned.ownership) == ("a100-80g", 2, "de", True)
    lp = parse_price("in:.5/out:2")
    assert (lp.usd_per_mtok_input, lp.usd_per_mtok_output) == (0.5, 2.0)


@pytest.mark.parametrize("text, fragment", [
    ("noequals", "bad --endpoint"),
    ("a=ftp://x", "bad URL"),
    ("a=http://h/v1,colour=red", "known options are"),
    ("a=http://h/v1,price=in:1/out:x", "bad list price"),
    ("a=http://h/v1,price=h100@us-va", "bad self-hosted price"),
    ("a=http://h/v1,header=novalue", "use header=NAME:VALUE"),
    ("a=http://h/v1,timeout=0", "bad timeout"),
    ("a b=http://h/v1", "bad endpoint name"),
])
def test_endpoint_errors(text, fragment):
    with pytest.raises(TokenomyError, match=fragment):
        parse_endpoint(text)


def test_duplicate_names_rejected():
    with pytest.raises(TokenomyError, match="used twice"):
        parse_endpoints(["a=http://h/v1", "a=http://g/v1"])


def test_synthetic_and_rates():
    s = parse_synthetic("in=512,out=128")
    assert (s.input_tokens, s.output_tokens) == (512, 128)
    for bad in ("in=512", "in=0,out=3", "in=a,out=3", "x=1,out=2"):
        with pytest.raises(TokenomyError, match="--synthetic"):
            parse_synthetic(bad)
    assert parse_rates("1,2, 4") == [1.0, 2.0, 4.0]
    assert math.isinf(parse_rates("inf")[0])
    for bad in ("0", "-1", "fast"):
        with pytest.raises(TokenomyError, match="--rate"):
            parse_rates(bad)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenomy", "bench", *args], capture_output=True, text=True,
                          timeout=60)


def test_cli_parse_errors_are_one_line_exit_2():
    cases = [
        (["-e", "a=http://127.0.0.1:1/v1,price=in:1/out:"], "bad list price"),
        (["-e", "a=http://127.0.0.1:1/v1,price=nosuchmodel-xyz"], "unknown"),
        (["-e", "a=http://127.0.0.1:1/v1,price=h100x1@nowhere"], "unknown site"),
        (["-e", "a=http://127.0.0.1:1/v1", "--rate", "1", "--concurrency", "2"], "not both"),
        ([], "at least one --endpoint"),
        (["-e", "a=http://127.0.0.1:1/v1,api-key-env=TOKENOMY_BENCH_UNSET_VAR"], "is not set"),
        (["--from-ledger", "--data-dir", "/nonexistent"], "needs --terms"),
    ]
    from typer.testing import CliRunner

    from tokenomy.cli import app

    runner = CliRunner()
    for args, fragment in cases:
        res = runner.invoke(app, ["bench", *args])
        assert res.exit_code == 2, (args, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (args, res.stderr)
        assert res.stdout == ""
    # and through the real entry point
    res = _cli("-e", "a=http://127.0.0.1:1/v1,price=in:1/out:")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: bad list price 'in:1/out:': use in:USD/out:USD per Mtok, e.g. in:0.15/out:0.60"]
