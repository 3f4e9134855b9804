"""Usage export to OpenMeter, Stripe and Lago: every priced event exactly once, against local
servers that implement each documented endpoint and its dedup rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tokenomy.billing.ledger_source import open_ledger_source
from tokenomy.export.run import ExportError, Sender, export_once
from tokenomy.export.state import default_state_path, load_state
from tokenomy.export.targets import TargetConfig

from .receivers import start

TARGETS = ["openmeter", "stripe", "lago"]
pytestmark = pytest.mark.timeout(120)


async def _nosleep(_s: float) -> None:
    return None


def fill(ledger, n: int, t0: float, *, step_s: float = 1.0) -> list[str]:
    """n billable events (and one error, which is never exported) recorded in order from t0."""
    ids = [ledger.add("acme" if i % 3 else "globex", t0 + i * step_s, input_tokens=100 + i, output_tokens=10 + i % 7,
                      cost="0.0001", price="0.0003", recorded_at=t0 + i * step_s) for i in range(n)]
    ledger.add("acme", t0, input_tokens=5, status="upstream_error", recorded_at=t0)
    return ids


def expected_keys(target: str, ids: list[str]) -> set[str]:
    if target == "openmeter":
        return {f"tokenomy|{i}" for i in ids}
    if target == "stripe":  # two meters, input and output tokens, both > 0 here
        return {f"{i}:{m}" for i in ids for m in ("tokenomy_input_tokens", "tokenomy_output_tokens")}
    return set(ids)


async def run_export(ledger, rec, target: str, tmp_path, **kw):
    import aiohttp

    source = open_ledger_source(ledger.data_dir, ledger_url=ledger.url)
    path = default_state_path(tmp_path, target, rec.url)
    state = load_state(path, target, rec.url)
    try:
        async with aiohttp.ClientSession() as session:
            sender = Sender(rec.url, {"Authorization": "Bearer test-key"}, session, sleep=_nosleep)
            return await export_once(source, TargetConfig(target, customers={"acme": "cus_acme"}), sender, state, path,
                                     **kw)
    finally:
        source.close()


@pytest.mark.parametrize("target", TARGETS)
async def test_every_event_exactly_once_and_a_replay_sends_nothing(ledger, tmp_path, target):
    t0 = time.time() - 3600
    ids = fill(ledger, 230, t0)
    rec, runner = await start(target)
    try:
        first = await run_export(ledger, rec, target, tmp_path, batch=50)
        assert first.sent_events == 230 and rec.duplicates == 0
        assert set(rec.events) == expected_keys(target, ids)
        assert all(a == "Bearer test-key" for a in rec.auth)
        posts = rec.posts
        again = await run_export(ledger, rec, target, tmp_path, batch=50)
        assert (again.sent_events, again.requests, rec.posts) == (0, 0, posts)  # nothing sent twice
        more = fill(ledger, 7, t0 + 1000)
        third = await run_export(ledger, rec, target, tmp_path)
        assert third.sent_events == 7 and set(rec.events) == expected_keys(target, ids + more)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("target", TARGETS)
async def test_lost_replies_are_retried_and_counted_once(ledger, tmp_path, target):
    ids = fill(ledger, 40, time.time() - 600)
    rec, runner = await start(target)
    rec.lose_replies = 3  # stored, but the answer is a 500: the exporter cannot know it arrived
    try:
        report = await run_export(ledger, rec, target, tmp_path, batch=20)
    finally:
        await runner.cleanup()
    assert report.sent_events == 40 and report.retries == 3
    per_request = 1 if target == "stripe" else 20  # events in each lost request
    assert rec.duplicates == 3 * per_request  # the receiver saw them again ...
    assert set(rec.events) == expected_keys(target, ids)  # ... and kept each event once


@pytest.mark.parametrize("target", TARGETS)
async def test_a_refused_batch_stops_the_export_and_the_next_run_resumes_exactly(ledger, tmp_path, target):
    ids = fill(ledger, 30, time.time() - 600)
    rec, runner = await start(target)
    per_batch = {"openmeter": 1, "lago": 1, "stripe": 20}[target]  # requests per batch of 10 events
    rec.refuse_after = 2 * per_batch  # two batches accepted, the third refused
    try:
        with pytest.raises(ExportError, match="refused"):
            await run_export(ledger, rec, target, tmp_path, batch=10)
        assert len(rec.events) == len(expected_keys(target, ids[:20]))
        rec.refuse_after = None
        report = await run_export(ledger, rec, target, tmp_path, batch=10)
    finally:
        await runner.cleanup()
    assert report.sent_events == 10 and set(rec.events) == expected_keys(target, ids) and rec.duplicates == 0


async def test_a_late_commit_behind_the_cursor_is_exported_once(ledger, tmp_path):
    """A replica's commit lands with a recorded_at a little behind what was already exported."""
    t0 = time.time() - 600
    ids = fill(ledger, 10, t0)
    rec, runner = await start("lago")
    try:
        await run_export(ledger, rec, "lago", tmp_path)
        late = ledger.add("acme", t0 + 5.5, input_tokens=9, output_tokens=1, price="0.001", recorded_at=t0 + 5.5)
        report = await run_export(ledger, rec, "lago", tmp_path)
        assert report.sent_events == 1 and report.skipped_already_sent >= 4  # the look-back re-read, nothing resent
        assert set(rec.events) == set(ids) | {late} and rec.duplicates == 0
        state = json.loads(default_state_path(tmp_path, "lago", rec.url).read_text())
        assert state["exported_total"] == 11 and len(state["sent"]) <= 11
    finally:
        await runner.cleanup()


def test_wire_formats_carry_the_event_id_as_idempotency_key():
    from tokenomy.export.targets import lago, openmeter, stripe

    e = {"id": "ev-1", "ts": 1_800_000_000.25, "recorded_at": 1_800_000_001.0, "tenant": "acme", "key_id": "k1",
         "model": "m", "deployment": "d", "input_tokens": 120, "cached_input_tokens": 20, "output_tokens": 30,
         "reasoning_tokens": 0, "cost_pusd": 1_500_000, "price_pusd": 3_000_000_000, "energy_joules": 1.5,
         "status": "ok"}
    cfg = TargetConfig("x", customers={"acme": "cus_9"})
    (om,) = openmeter(cfg, [e])
    ce = json.loads(om.body)[0]
    assert (ce["id"], ce["source"], ce["subject"], ce["time"]) == ("ev-1", "tokenomy", "cus_9", "2027-01-15T08:00:00.250Z")
    assert ce["data"]["price_usd"] == "0.003" and ce["data"]["price_microusd"] == 3000 and ce["data"]["tokens"] == 150
    reqs = stripe(cfg, [e])
    assert [r.headers["Idempotency-Key"] for r in reqs] == ["ev-1:tokenomy_input_tokens", "ev-1:tokenomy_output_tokens"]
    assert b"payload%5Bstripe_customer_id%5D=cus_9" in reqs[0].body and b"payload%5Bvalue%5D=120" in reqs[0].body
    (lg,) = lago(cfg, [e])
    ev = json.loads(lg.body)["events"][0]
    assert (ev["transaction_id"], ev["external_subscription_id"], ev["code"]) == ("ev-1", "cus_9", "tokenomy_usage")


async def test_cli_exports_once_with_json_and_bad_input_is_one_line(tmp_path):
    from tokenomy.metering import Metering

    from billing.conftest import Ledger

    led = Ledger(tmp_path / "data")
    ids = fill(led, 12, time.time() - 600)
    led.close()
    rec, runner = await start("openmeter")
    env = {**os.environ, "OPENMETER_API_KEY": "om-secret"}
    args = [sys.executable, "-m", "tokenomy", "export", "--to", "openmeter", "--url", rec.url,
            "--data-dir", str(tmp_path / "data"), "--json"]
    try:
        import asyncio

        for expected in (12, 0):
            proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            assert json.loads(out)["sent_events"] == expected
    finally:
        await runner.cleanup()
    assert set(rec.events) == {f"tokenomy|{i}" for i in ids} and rec.auth[0] == "Bearer om-secret"
    assert Metering  # the ledger module imports cleanly alongside
    for bad, needle in ((["--to", "kafka", "--url", "http://x"], "--to must be one of"),
                        (["--to", "lago", "--url", "ftp://x"], "--url must be an http(s) URL"),
                        (["--to", "lago", "--url", "http://x", "--meter", "a=tokens"], "--meter applies to --to stripe"),
                        (["--to", "stripe", "--url", "http://x", "--meter", "a=joules"], "the field must be one of")):
        r = subprocess.run([sys.executable, "-m", "tokenomy", "export", *bad, "--data-dir", str(tmp_path / "data")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, (bad, r.stderr)
