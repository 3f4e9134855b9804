"""The gateway (`tokenomy up --config ...`) in front of a REAL inference engine.

llama-cpp-python's server on the tiny generated model is the upstream. Checked through the
official openai SDK: chat (non-stream and stream), the gateway's response headers, and one
ledger event per request. llama.cpp reports exact usage on plain responses but none on
streams, so the streamed request's event must be counted locally and marked estimated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from engine_procs import MODEL_ALIAS, free_port, stop, wait_http_ok

pytestmark = pytest.mark.engine

ADMIN_KEY = "sk-admin-engine-test-0123456789"
TENANT = "engine-test"
GROUP = "tiny"
DEPLOYMENT = "llama-local"
USD_PER_MTOK_INPUT = Decimal("0.5")
USD_PER_MTOK_OUTPUT = Decimal("1.5")
J_PER_TOKEN_INPUT = 0.01
J_PER_TOKEN_OUTPUT = 0.25
MESSAGES = [{"role": "user", "content": "hello"}]


def tokenomy_bin() -> str:
    return str(Path(sys.executable).with_name("tokenomy"))


def cli(*args: str, data_dir: Path) -> dict:
    out = subprocess.run([tokenomy_bin(), *args, "--data-dir", str(data_dir), "--json"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "TOKENOMY_ADMIN_KEY": ADMIN_KEY})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def gateway(llama_server: str, tmp_path_factory) -> dict:
    """`tokenomy up` with one deployment (the llama server) behind the model group `tiny`."""
    work = tmp_path_factory.mktemp("gateway-llama")
    data_dir = work / "data"
    config = {
        "deployments": [{
            "name": DEPLOYMENT,
            "base_url": llama_server,
            "model": MODEL_ALIAS,
            "pricing": {"list": {"input": float(USD_PER_MTOK_INPUT), "output": float(USD_PER_MTOK_OUTPUT)},
                        "joules_per_token_input": J_PER_TOKEN_INPUT,
                        "joules_per_token_output": J_PER_TOKEN_OUTPUT},
        }],
        "model_groups": {GROUP: {"deployments": [DEPLOYMENT], "policy": "cost"}},
    }
    cfg_path = work / "tokenomy.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    key = cli("keys", "create", "--tenant", TENANT, data_dir=data_dir)["key"]
    port = free_port()
    log_path = work / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [tokenomy_bin(), "up", "--host", "127.0.0.1", "--port", str(port), "--config", str(cfg_path),
             "--data-dir", str(data_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "TOKENOMY_ADMIN_KEY": ADMIN_KEY})
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", proc, log_path, 60)
        yield {"base_url": f"http://127.0.0.1:{port}/v1", "key": key, "data_dir": data_dir}
    finally:
        stop(proc)


@pytest.fixture
def client(gateway: dict):
    from openai import OpenAI

    with OpenAI(base_url=gateway["base_url"], api_key=gateway["key"], max_retries=0, timeout=60) as c:
        yield c


def newest_event(data_dir: Path):
    from tokenomy.metering import Metering

    with Metering.open(data_dir, ensure_admin=False) as m:
        return m.events(tenant=TENANT, limit=1)[0]


def usage(data_dir: Path) -> dict:
    return cli("usage", "--tenant", TENANT, data_dir=data_dir)


def test_chat_through_gateway_is_priced_and_metered_exactly(client, gateway: dict) -> None:
    before = usage(gateway["data_dir"])
    raw = client.chat.completions.with_raw_response.create(model=GROUP, messages=MESSAGES, max_tokens=8,
                                                           temperature=0.0)
    completion = raw.parse()
    assert isinstance(completion.choices[0].message.content, str)
    u = completion.usage
    # exact, from llama.cpp (which may overrun max_tokens by <= 3 byte tokens to finish a UTF-8 char)
    assert u.prompt_tokens > 5 and 1 <= u.completion_tokens <= 8 + 3

    expected_cost = (u.prompt_tokens * USD_PER_MTOK_INPUT + u.completion_tokens * USD_PER_MTOK_OUTPUT) / 10**6
    expected_energy = u.prompt_tokens * J_PER_TOKEN_INPUT + u.completion_tokens * J_PER_TOKEN_OUTPUT
    assert raw.headers["x-tokenomy-deployment"] == DEPLOYMENT
    assert Decimal(raw.headers["x-tokenomy-cost-usd"]) == expected_cost
    assert float(raw.headers["x-tokenomy-energy-j"]) == pytest.approx(expected_energy, rel=1e-5)

    # Committed before the response was sent: visible at once, exactly one new event.
    event = newest_event(gateway["data_dir"])
    assert (event.deployment, event.status, event.estimated) == (DEPLOYMENT, "ok", False)
    assert (event.input_tokens, event.output_tokens) == (u.prompt_tokens, u.completion_tokens)
    assert event.cost_usd == expected_cost
    after = usage(gateway["data_dir"])
    assert after["requests"] == before["requests"] + 1
    assert after["input_tokens"] - before["input_tokens"] == u.prompt_tokens
    assert after["output_tokens"] - before["output_tokens"] == u.completion_tokens
    assert Decimal(after["cost_usd"]) - Decimal(before["cost_usd"]) == expected_cost
    assert after["by_deployment"][DEPLOYMENT]["requests"] >= 1


def test_stream_through_gateway_is_counted_locally_and_marked_estimated(client, gateway: dict) -> None:
    before = usage(gateway["data_dir"])
    raw = client.chat.completions.with_raw_response.create(
        model=GROUP, messages=MESSAGES, max_tokens=8, temperature=0.0, stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["x-tokenomy-deployment"] == DEPLOYMENT
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text  # the engine generated something

    event = newest_event(gateway["data_dir"])
    assert (event.deployment, event.status) == (DEPLOYMENT, "ok")
    # llama.cpp sends no usage on streams: the gateway counted the tokens itself.
    assert event.estimated is True
    assert event.input_tokens > 0 and event.output_tokens > 0
    assert event.ttft_ms is not None and 0 < event.ttft_ms <= event.latency_ms
    expected_cost = (event.input_tokens * USD_PER_MTOK_INPUT + event.output_tokens * USD_PER_MTOK_OUTPUT) / 10**6
    assert event.cost_usd == expected_cost
    after = usage(gateway["data_dir"])
    assert after["requests"] == before["requests"] + 1
    assert after["output_tokens"] - before["output_tokens"] == event.output_tokens


def test_admin_usage_endpoint_agrees_with_the_cli(gateway: dict) -> None:
    import httpx

    resp = httpx.get(f"{gateway['base_url'].removesuffix('/v1')}/admin/usage", params={"tenant": TENANT},
                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    body, cli_view = resp.json(), usage(gateway["data_dir"])
    for field in ("requests", "input_tokens", "output_tokens"):
        assert body[field] == cli_view[field]
    assert Decimal(str(body["cost_usd"])) == Decimal(cli_view["cost_usd"])
