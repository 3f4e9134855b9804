"""The CLI and a running gateway share one data dir: each sees the other's keys and events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from tokenomy.metering import AuthError, Metering

from .conftest import make_event

CLI = [sys.executable, "-m", "tokenomy"]


def run_cli(*args: str, data_dir, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENOMY_DATA_DIR": str(data_dir)}
    env.pop("TOKENOMY_ADMIN_KEY", None)
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_two_instances_see_each_others_keys_and_revocations(tmp_path, mono):
    gateway = Metering.open(tmp_path, admin_key="a", monotonic=mono)
    cli = Metering.open(tmp_path, ensure_admin=False)
    kid, key = cli.create_key("acme", rpm=5)
    assert gateway.authenticate(key).key_id == kid  # a cache miss looks the key up
    cli.revoke_key(kid)
    gateway.authenticate(key)  # still cached...
    mono.advance(1.01)
    with pytest.raises(AuthError, match="revoked"):  # ...but not for longer than ~1 s
        gateway.authenticate(key)
    cli.shutdown()
    gateway.shutdown()


async def test_cli_subprocess_and_gateway_share_the_ledger(tmp_path, mono):
    gateway = Metering.open(tmp_path, admin_key="a", monotonic=mono)
    await gateway.start()
    created = json.loads(run_cli("keys", "create", "--tenant", "acme", "--budget-usd", "2", "--rpm", "60",
                                 "--json", data_dir=tmp_path).stdout)
    assert set(created) >= {"key", "key_id", "tenant"} and created["tenant"] == "acme"
    p = gateway.authenticate(created["key"])
    assert p.key_id == created["key_id"]
    r = gateway.reserve(p, Decimal("0.5"))
    await gateway.commit(make_event(key_id=p.key_id, price="0.25", input_tokens=7, output_tokens=3), r)
    usage = json.loads(run_cli("usage", "--tenant", "acme", "--since", "3650d", "--json", data_dir=tmp_path).stdout)
    assert (usage["requests"], usage["input_tokens"], usage["output_tokens"], usage["price_usd"]) == (1, 7, 3, "0.25")
    assert set(usage) >= {"cost_usd", "energy_joules", "by_model", "by_deployment"}
    listed = json.loads(run_cli("keys", "list", "--json", data_dir=tmp_path).stdout)["keys"]
    assert [k["key_id"] for k in listed] == [p.key_id] and created["key"] not in json.dumps(listed)
    run_cli("keys", "revoke", p.key_id, data_dir=tmp_path)
    mono.advance(1.01)
    with pytest.raises(AuthError):
        gateway.authenticate(created["key"])
    await gateway.close()


async def test_cli_writes_while_the_gateway_commits_under_load(tmp_path):
    import asyncio

    gateway = Metering.open(tmp_path, admin_key="a")
    gateway.create_tenant("acme")
    await gateway.start()
    stop = asyncio.Event()
    committed = 0

    async def load(w: int) -> None:
        nonlocal committed
        while not stop.is_set():
            assert await gateway.commit(make_event(id=f"load-{w}-{committed}"))
            committed += 1

    workers = [asyncio.create_task(load(w)) for w in range(8)]
    env = {**os.environ, "TOKENOMY_DATA_DIR": str(tmp_path)}
    procs = [await asyncio.create_subprocess_exec(*CLI, "keys", "create", "--tenant", f"t{i}", "--json", env=env,
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
             for i in range(3)]
    outputs = [await p.communicate() for p in procs]
    stop.set()
    await asyncio.gather(*workers)
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    for i, (out, _) in enumerate(outputs):
        assert gateway.authenticate(json.loads(out)["key"]).tenant == f"t{i}"
    assert committed > 0 and gateway.usage("acme")["requests"] == committed
    await gateway.close()
