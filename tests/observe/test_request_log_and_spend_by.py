"""The request log (one JSON line per request, rotation, sampling, capture with redaction, never
a secret) and spend by end user and tag, through a real gateway."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from gw_helpers import ADMIN_KEY, Stub, gateway, list_dep, stubs  # noqa: E402

from tokenomy.observe.redact import Redactor  # noqa: E402


def config(s, log_path: Path, **log) -> dict:
    return {"deployments": [list_dep("d1", s.base_url, 1.0, 2.0)],
            "request_log": {"enabled": True, "path": str(log_path), **log}}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


async def test_one_line_per_request_with_user_tags_and_capture_only_where_asked(tmp_path):
    log = tmp_path / "requests.jsonl"
    async with stubs(Stub(out_tokens=5)) as (s,):
        async with gateway(config(s, log, capture_tenants=["acme"]), tmp_path / "data") as g:
            acme, other = g.key("acme"), g.key("globex")
            secret_text = "my key is sk-proj-abcdefghijklmnop1234 and mail me at jo@example.com, card 4111 1111 1111 1111"
            for key, user in ((acme, "alice"), (acme, "bob"), (other, "carol")):
                status, _, body = await g.post("/v1/chat/completions", {
                    "model": "d1", "user": user, "metadata": {"feature": "search", "env": "prod"},
                    "messages": [{"role": "user", "content": secret_text}]}, key)
                assert status == 200, body
            status, _, body = await g.post("/v1/chat/completions", {
                "model": "d1", "metadata": {"n": 3}, "messages": [{"role": "user", "content": "x"}]}, acme)
            assert status == 400 and body["error"]["param"] == "metadata"
            status, _, body = await g.post("/v1/chat/completions", {
                "model": "d1", "user": "x" * 300, "messages": [{"role": "user", "content": "x"}]}, acme)
            assert status == 400 and body["error"]["param"] == "user"
            # spend by user and tag, from the ledger
            status, _, usage = await g.get("/admin/usage?group_by=user", ADMIN_KEY)
            assert status == 200 and set(usage["by_user"]) == {"alice", "bob", "carol"}
            assert sum(u["requests"] for u in usage["by_user"].values()) == 3
            status, _, mine = await g.get("/admin/usage?group_by=tag", acme)
            assert mine["by_tag"]["feature=search"]["requests"] == 2  # a tenant sees its own requests only
            assert Decimal(mine["by_tag"]["env=prod"]["cost_usd"]) == Decimal(mine["cost_usd"])
            status, _, bad = await g.get("/admin/usage?group_by=colour", ADMIN_KEY)
            assert status == 400
            # one user's spend by tag, one tag's spend by user
            status, _, alice = await g.get("/admin/usage?group_by=tag&user=alice", ADMIN_KEY)
            assert status == 200 and {k: v["requests"] for k, v in alice["by_tag"].items()} == {
                "feature=search": 1, "env=prod": 1}
            status, _, search = await g.get("/admin/usage?group_by=user&tag=feature%3Dsearch", acme)
            assert status == 200 and set(search["by_user"]) == {"alice", "bob"}  # acme's own users only
            status, _, bad = await g.get("/admin/usage?group_by=user&tag=feature", ADMIN_KEY)
            assert status == 400 and bad["error"]["param"] == "tag"
    got = lines(log)
    assert [x["user"] for x in got if x["status"] == "ok"] == ["alice", "bob", "carol"]
    refused = [x for x in got if x["status"] == "refused"]
    assert len(got) == 5 and [(x["http_status"], x["code"]) for x in refused] == [(400, "invalid_type"),
                                                                               (400, "invalid_value")]
    ok = [x for x in got if x["status"] == "ok"]
    for x in ok:
        for k in ("request_id", "tenant", "key_id", "model", "deployment", "input_tokens", "output_tokens",
                  "cost_usd", "energy_joules", "latency_ms", "ttft_ms", "retries", "tags"):
            assert k in x, k
        assert x["tags"] == {"feature": "search", "env": "prod"}
    captured = [x for x in ok if x["tenant"] == "acme"]
    assert all("prompt" in x and "response" in x for x in captured)
    assert all("prompt" not in x for x in ok if x["tenant"] == "globex")
    text = log.read_text()
    assert "sk-proj-abcdefghijklmnop1234" not in text and "jo@example.com" not in text and "4111 1111" not in text
    assert "[REDACTED:api_key]" in text and "[REDACTED:email]" in text and "[REDACTED:card]" in text


async def test_sampling_by_request_id_and_rotation(tmp_path):
    log = tmp_path / "r.jsonl"
    async with stubs(Stub(out_tokens=2)) as (s,):
        async with gateway(config(s, log, sample=0.5, max_bytes=8192, backups=20), tmp_path / "data") as g:
            key = g.key("acme")
            for _ in range(60):
                status, _, _ = await g.post("/v1/chat/completions", {
                    "model": "d1", "messages": [{"role": "user", "content": "hello"}]}, key)
                assert status == 200
            from tokenomy.observe.requestlog import RequestLog

            rl: RequestLog = g.gw.settler.request_log
            events = g.metering.events("acme")
    kept = {e.id for e in events if rl.sampled(e.id)}
    files = sorted(tmp_path.glob("r.jsonl*"))
    assert len(files) >= 2  # rotated at 8 KiB
    logged = {x["request_id"] for f in files for x in lines(f)}
    assert logged == kept and 10 < len(kept) < 50  # about half, the same set on every replica


def test_redaction_patterns():
    r = Redactor([r"ACME-\d{6}"])
    assert r("Bearer abcdefghijklmnopqrstuv") == "[REDACTED:bearer]"
    assert r("id ACME-123456 ok") == "id [REDACTED:custom1] ok"
    assert r("4111-1111-1111-1111 vs 4111-1111-1111-1112") == "[REDACTED:card] vs 4111-1111-1111-1112"  # Luhn
    assert r("AKIAIOSFODNN7EXAMPLE") == "[REDACTED:api_key]"


def test_bad_request_log_config_is_refused():
    from tokenomy.config import parse_config
    from tokenomy.errors import ConfigError

    base = {"deployments": [{"name": "d", "base_url": "http://127.0.0.1:1/v1", "pricing": {"list": {"input": 1, "output": 1}}}]}
    with pytest.raises(ConfigError, match="not a regular expression"):
        parse_config({**base, "request_log": {"redact": ["(unclosed"]}}, "<t>")
    with pytest.raises(ConfigError, match="sample"):
        parse_config({**base, "request_log": {"sample": 2}}, "<t>")


def test_usage_by_user_on_the_cli(tmp_path):
    import subprocess
    import time

    from tokenomy.metering import Metering, UsageEvent

    with Metering.open(tmp_path / "data", ensure_admin=False) as m:
        kid, _ = m.create_key("acme")
        for i, user in enumerate(("ann", "ann", "ben")):
            m.commit_blocking(UsageEvent(
                id=f"e{i}", ts=time.time(), tenant="acme", key_id=kid, model="m", deployment="d", input_tokens=10,
                cached_input_tokens=0, output_tokens=5, reasoning_tokens=0, cost_usd=Decimal("0.001"),
                price_usd=Decimal("0.002"), energy_joules=1.0, ttft_ms=None, latency_ms=5.0, status="ok",
                extra={"user": user, "tags": {"team": "x"}}))
    r = subprocess.run([sys.executable, "-m", "tokenomy", "usage", "--by", "user", "--json", "--data-dir",
                        str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    by = json.loads(r.stdout)["by_user"]
    assert {k: (v["requests"], v["tokens"], v["cost_usd"]) for k, v in by.items()} == {
        "ann": (2, 30, "0.002"), "ben": (1, 15, "0.001")}
    r = subprocess.run([sys.executable, "-m", "tokenomy", "usage", "--by", "tag", "--json", "--data-dir",
                        str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert json.loads(r.stdout)["by_tag"]["team=x"]["requests"] == 3
    bad = subprocess.run([sys.executable, "-m", "tokenomy", "usage", "--by", "colour", "--data-dir",
                          str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    cli = [sys.executable, "-m", "tokenomy", "usage", "--data-dir", str(tmp_path / "data")]
    r = subprocess.run([*cli, "--by", "tag", "--user", "ben", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert {k: v["requests"] for k, v in json.loads(r.stdout)["by_tag"].items()} == {"team=x": 1}
    r = subprocess.run([*cli, "--by", "user", "--tag", "team=x"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "by user, tag team=x" in r.stdout and "ann" in r.stdout, r.stderr
    for args, word in ((["--by", "user", "--tag", "team"], "--tag"), (["--user", "ann"], "--by")):
        bad = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and word in bad.stderr, bad.stderr
