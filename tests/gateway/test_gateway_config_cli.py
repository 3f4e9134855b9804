"""Config validation (messages name the field path) and `tokenomy up` as a user runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tokenomy.config import load_config, parse_config
from tokenomy.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tokenomy.yaml"
DEP = {"name": "a", "base_url": "http://127.0.0.1:1/v1", "pricing": {"list": {"input": 1, "output": 2}}}


def test_example_config_is_valid():
    cfg = load_config(EXAMPLE)
    assert {d.name for d in cfg.deployments} >= {"llama-3-8b@l4", "gpt-4o-mini@openai"}
    assert cfg.model_groups["llama-3-8b"].policy == "cost-under-slo"
    assert cfg.groups()["gpt-4o-mini@openai"].deployments == ["gpt-4o-mini@openai"]  # implicit group


@pytest.mark.parametrize("data,message", [
    ({"deployments": [{**DEP, "pricing": {"list": {"input": "cheap", "output": 2}}}]},
     "deployments[0].pricing.list.input: Input should be a valid number"),
    ({"deployments": [{**DEP, "pricing": {"list": {"input": 1, "output": 2}, "price_map": "gpt-4o"}}]},
     "deployments[0].pricing: give exactly one of list, price_map, self_hosted"),
    ({"deployments": [DEP], "model_groups": {"m": {"deployments": ["a"], "polcy": "cost"}}},
     "model_groups.m.polcy: Extra inputs are not permitted"),
    ({"deployments": [DEP], "model_groups": {"m": {"deployments": ["a"], "policy": "cheapest"}}},
     "model_groups.m.policy: Input should be 'cost', 'latency', 'cost-under-slo', 'weighted', 'prefix-affinity' or 'committed-first'"),
    ({"deployments": [DEP], "model_groups": {"m": {"deployments": ["b"]}}},
     "model_groups.m.deployments: unknown deployment 'b'"),
    ({"deployments": [DEP], "model_groups": {"m": {"deployments": ["a"], "policy": "weighted"}}},
     "model_groups.m: policy weighted needs weights"),
    ({"deployments": [{**DEP, "base_url": "127.0.0.1:8000"}]},
     "deployments[0]: base_url must start with http://"),
    ({"deployments": [DEP], "timeouts": {"first_byte_s": -1}},
     "timeouts.first_byte_s: Input should be greater than 0"),
    ({"deployments": []}, "deployments: List should have at least 1 item"),
])
def test_invalid_config_names_the_field(data, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "x.yaml")
    assert message in str(exc.value)
    assert str(exc.value).startswith("invalid config x.yaml: ")


def test_cli_invalid_config_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"deployments": [{**DEP, "pricing": {"list": {"input": 1}}}]}))
    r = subprocess.run([sys.executable, "-m", "tokenomy", "up", "--config", str(bad), "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: invalid config {bad}: deployments[0].pricing.list.output: Field required"
    r = subprocess.run([sys.executable, "-m", "tokenomy", "up", "--config", str(tmp_path / "none.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot read config" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("routing,field,says", [
    ({"policy": "cascade", "cascade": {"verifier": "cascade-nope"}}, "cascade.verifier", "unknown verifier 'cascade-nope'"),
    ({"router": "no-such-router", "strong_share": 0.3}, "router", "unknown router 'no-such-router'"),
    ({"policy": "cascade", "cascade": {"verifier": "missing.npz"}}, "cascade.verifier", "no such verifier artifact"),
])
def test_unknown_router_or_verifier_fails_before_any_key_is_made(tmp_path, routing, field, says):
    """A typo in a routing group is one line and exit 2, before the ledger generates (and prints) keys."""
    cfg = {"deployments": [{**DEP, "name": "a"}, {**DEP, "name": "b"}],
           "model_groups": {"weak": {"deployments": ["a"]}, "strong": {"deployments": ["b"]}},
           "routing_groups": {"auto": {"candidates": ["weak", "strong"], **routing}}}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "tokenomy", "up", "--config", str(bad), "--port", "0",
                        "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid config: routing_groups.auto.{field}: ")
    assert says in lines[0] and "Traceback" not in r.stderr
    assert "key" not in r.stdout and not (tmp_path / "d").exists()   # no key made, no ledger created


def _up(data_dir: Path, port: int, log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tokenomy", "up", "--port", str(port), "--data-dir", str(data_dir)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _wait_banner(proc: subprocess.Popen, log: Path) -> str:
    for _ in range(400):
        text = log.read_text()
        if "try it:" in text:
            return text
        assert proc.poll() is None, text
        time.sleep(0.05)
    raise AssertionError(log.read_text())


def test_up_default_fleet_end_to_end(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    data_dir, log = tmp_path / "data", tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if k != "TOKENOMY_ADMIN_KEY"}
    proc = _up(data_dir, port, log, env)
    try:
        banner = _wait_banner(proc, log)
        admin = re.search(r"admin key \(shown once, stored hashed\): (\S+)", banner).group(1)
        demo = re.search(r"demo tenant 'demo' API key \(shown once, stored hashed\): (\S+)", banner).group(1)
        assert f"curl -s http://127.0.0.1:{port}/v1/chat/completions" in banner and "from openai import OpenAI" in banner
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(base + "/v1/chat/completions", headers={"Authorization": f"Bearer {demo}"},
                       json={"model": "llama-3-8b", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4},
                       timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["x-tokenomy-deployment"].startswith("llama-3-8b@")
        assert float(r.headers["x-tokenomy-cost-usd"]) > 0 and float(r.headers["x-tokenomy-energy-j"]) > 0
        u = httpx.get(base + "/admin/usage?tenant=demo", headers={"Authorization": f"Bearer {admin}"}).json()
        assert u["requests"] == 1 and u["output_tokens"] == 4
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0 and "stopped" in log.read_text()
    # second start: same ledger, nothing secret printed again; TOKENOMY_ADMIN_KEY replaces the admin key
    proc = _up(data_dir, port, log, {**env, "TOKENOMY_ADMIN_KEY": "tk-admin-fromenv"})
    try:
        banner = _wait_banner(proc, log)
        assert "admin key" not in banner and "demo tenant" not in banner
        r = httpx.get(f"http://127.0.0.1:{port}/admin/keys", headers={"Authorization": "Bearer tk-admin-fromenv"})
        assert r.status_code == 200 and [k["tenant"] for k in r.json()["data"]] == ["demo"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
