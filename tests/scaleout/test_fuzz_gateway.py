"""Fuzzing the running gateway (`tokenomy up`, a real process) with hypothesis: random and
half-valid bodies, queries and keys on the OpenAI and admin endpoints must never produce a
500 or a traceback; every error is an OpenAI-style JSON error with a message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenomy.metering import Metering

ADMIN = "tk-admin-fuzz-admin-key-0123456789"
CONFIG = """
deployments:
  - name: small
    emulate: {model: llama-3-8b, accelerator: h100, time_scale: 0.001}
    pricing: {list: {input: 0.15, output: 0.6}}
model_groups:
  chat: {deployments: [small]}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    import httpx

    work = tmp_path_factory.mktemp("fuzz")
    (work / "tokenomy.yaml").write_text(CONFIG)
    m = Metering.open(work / "data", admin_key=ADMIN)
    _, key = m.create_key("fuzz", budget_usd="1000", rpm=100_000, tpm=100_000_000)
    m.shutdown()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENOMY_")}
    env["TOKENOMY_ADMIN_KEY"] = ADMIN
    proc = subprocess.Popen([sys.executable, "-m", "tokenomy", "up", "--config", str(work / "tokenomy.yaml"),
                             "--port", "0", "--data-dir", str(work / "data")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    found: dict = {}
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            hit = re.search(r"tokenomy gateway on (http://[\d.]+:\d+)/v1", line)
            if hit:
                found["url"] = hit.group(1)
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(90)
    assert "url" in found, "gateway did not start:\n" + "".join(lines[-30:])
    with httpx.Client(base_url=found["url"], timeout=30) as client:
        yield client, key, lines
    proc.terminate()
    proc.wait(timeout=30)


def _check(resp, lines) -> None:
    assert resp.status_code < 500 or resp.status_code in (502, 503, 504), (resp.status_code, resp.text[:500])
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    if resp.status_code >= 400:
        body = resp.json()
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
roles = st.sampled_from(["user", "system", "assistant", "tool", "developer", "", "robot"]) | json_values
messages = st.lists(st.fixed_dictionaries({"role": roles}, optional={
    "content": st.text(max_size=50) | json_values, "name": json_values, "tool_calls": json_values}), max_size=3)
chat_bodies = st.fixed_dictionaries({"model": st.sampled_from(["chat", "small", "nope", ""]) | json_values},
                                    optional={"messages": messages | json_values,
                                              "max_tokens": st.integers(-5, 2**40) | json_values,
                                              "max_completion_tokens": st.integers(-5, 100) | json_values,
                                              "n": st.integers(-1, 4) | json_values,
                                              "stream": st.booleans() | json_values,
                                              "stream_options": json_values,
                                              "temperature": st.floats(-1, 3) | json_values,
                                              "tools": json_values, "user": json_values, "stop": json_values})
completion_bodies = st.fixed_dictionaries({"model": st.sampled_from(["chat", "nope"]) | json_values},
                                          optional={"prompt": st.text(max_size=40) | json_values,
                                                    "max_tokens": st.integers(-5, 64) | json_values,
                                                    "stream": st.booleans()})
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(body=chat_bodies)
def test_chat_completions_never_500(gateway, body):
    client, key, lines = gateway
    resp = client.post("/v1/chat/completions", content=json.dumps(body), headers={"Authorization": f"Bearer {key}"})
    _check(resp, lines)


@FUZZ
@given(body=completion_bodies)
def test_completions_never_500(gateway, body):
    client, key, lines = gateway
    resp = client.post("/v1/completions", content=json.dumps(body), headers={"Authorization": f"Bearer {key}"})
    _check(resp, lines)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/admin/keys"]),
       auth=st.sampled_from(["key", "admin", "none", "junk"]))
def test_raw_bodies_and_keys_never_500(gateway, raw, path, auth):
    client, key, lines = gateway
    headers = {"key": {"Authorization": f"Bearer {key}"}, "admin": {"Authorization": f"Bearer {ADMIN}"},
               "none": {}, "junk": {"Authorization": "Bearer tk-zz-not a real key!!"}}[auth]
    resp = client.post(path, content=raw, headers={**headers, "Content-Type": "application/json"})
    _check(resp, lines)


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["tenant", "budget_usd", "budget_period", "rpm", "tpm", "name",
                                             "soft_budget_usd"]), json_values, max_size=5),
       query=st.dictionaries(st.sampled_from(["tenant", "since", "until", "limit"]), st.text(max_size=12), max_size=3))
def test_admin_endpoints_never_500(gateway, body, query):
    client, _, lines = gateway
    admin = {"Authorization": f"Bearer {ADMIN}"}
    _check(client.post("/admin/keys", content=json.dumps(body), headers=admin), lines)
    _check(client.get("/admin/usage", params=query, headers=admin), lines)
    _check(client.get("/admin/keys", params=query, headers=admin), lines)
