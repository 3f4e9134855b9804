"""Router feedback, `route savings` and `route train --from-ledger` on the PostgreSQL ledger:
the same answers as on SQLite for the same events, labels shared by every replica."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "routing_gateway"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from test_feedback_savings import _ev, _route  # noqa: E402

from tokenomy.cli import app  # noqa: E402
from tokenomy.errors import TokenomyError  # noqa: E402
from tokenomy.metering import Metering  # noqa: E402
from tokenomy.metering.backends import open_metering  # noqa: E402
from tokenomy.routing.feedback import (FeedbackStore, PgFeedbackStore, load_training_rows,  # noqa: E402
                                       open_feedback_store, prompt_hash)
from tokenomy.routing.savings import savings  # noqa: E402

ADMIN = "tk-admin-feedback-test"


@pytest.fixture
def own_pg():
    """A schema of this test's own (dropped after); skips, or fails in CI, without PostgreSQL."""
    from dashboard.pgschema import drop_schema, new_schema_url

    url = new_schema_url("fb")
    yield url
    drop_schema(url)


def _events(t0: float):
    return [
        _ev("r1", t0, 1000, 100, "0.0012", {"route": _route(False)}),
        _ev("r2", t0 + 1, 500, 200, "0.011", {"route": _route(True)}),
        _ev("c1", t0 + 2, 100, 50, "0.0025", {"route": _route(True, "cascade", escalated=True, score=0.2)}),
        _ev("c1:weak", t0 + 2, 100, 100, "0.0003", {"route_part": "weak", "parent": "c1"}),
        _ev("c2", t0 + 3, 100, 100, "0.0003", {"route": _route(False, "cascade", escalated=False)}),
        _ev("c2:judge", t0 + 3, 40, 5, "0.00005", {"route_part": "judge", "parent": "c2"}),
        _ev("plain", t0 + 4, 100, 100, "0.5", {"policy": "cost"}),
        _ev("bare", t0 + 5, 100, 100, "0.5", None),
    ]


def _seed(tmp_path: Path, url: str | None, t0: float) -> Path:
    d = tmp_path / ("pg" if url else "sqlite")
    m = open_metering(d, ledger_url=url, admin_key=ADMIN) if url else Metering.open(d, admin_key=ADMIN)
    m.create_tenant("t1")
    for ev in _events(t0):
        m.commit_blocking(ev)
    m.shutdown()
    return d


def test_savings_same_on_both_ledgers(tmp_path, own_pg):
    t0 = time.time() - 100
    lite, pgdir = _seed(tmp_path, None, t0), _seed(tmp_path, own_pg, t0)
    a, b = savings(lite), savings(pgdir, ledger_url=own_pg)
    assert a == b
    assert (b["requests"], b["actual_usd"], b["all_strong_usd"]) == (4, "0.01535", "0.0305")  # hand-computed in
    assert b["cascade"]["weak_calls_usd"] == "0.0006"                                        # test_feedback_savings
    w = savings(pgdir, since=t0 + 1, until=t0 + 2.5, ledger_url=own_pg)
    assert (w["requests"], w["actual_usd"], w["all_strong_usd"]) == (2, "0.0138", "0.0135")
    assert w == savings(lite, since=t0 + 1, until=t0 + 2.5)


def test_feedback_store_on_postgres(tmp_path, own_pg):
    t0 = time.time() - 100
    _seed(tmp_path, own_pg, t0)
    one, two = PgFeedbackStore.open(own_pg), PgFeedbackStore.open(own_pg)  # two replicas
    try:
        assert one.event_tenant("r2") == "t1" and one.event_tenant("nope") is None
        one.record_prompt("r2", "t1", "Prove it.")
        one.record_feedback("r2", "t1", 0.5)
        two.record_feedback("r2", "t1", 0.75)  # the latest label wins, whichever replica took it
        fb = one.feedback("r2")
        assert (fb["tenant"], fb["score"], fb["prompt_sha256"]) == ("t1", 0.75, prompt_hash("Prove it."))
        two.record_feedback("r1", "t1", 1.0)  # no stored prompt: the label is kept without a hash
        assert one.feedback("r1")["prompt_sha256"] is None and one.feedback("zz") is None
        with pytest.raises(TokenomyError, match=r"\[0, 1\]"):
            one.record_feedback("r1", "t1", 1.5)
        assert one.feedback("r1")["score"] == 1.0  # the refused label changed nothing
    finally:
        one.close()
        two.close()


def test_training_rows_same_on_both_ledgers(tmp_path, own_pg, monkeypatch):
    t0 = time.time() - 100
    lite, pgdir = _seed(tmp_path, None, t0), _seed(tmp_path, own_pg, t0)
    labels = {"r1": (0.25, "hi"), "r2": (1.0, "Prove that there are infinitely many primes."),
              "c1": (0.9, "What is 17 * 23?")}
    pg_store, lite_store = open_feedback_store(pgdir, own_pg), FeedbackStore.open(lite)
    try:
        for store in (pg_store, lite_store):
            for rid, (score, prompt) in labels.items():
                store.record_prompt(rid, "t1", prompt, ts=t0)
                store.record_feedback(rid, "t1", score, ts=t0 + 10)
    finally:
        pg_store.close()
        lite_store.close()
    rows = load_training_rows(pgdir, own_pg)
    assert rows == load_training_rows(lite)
    by = {r["id"]: r for r in rows}
    assert (by["r1"]["weak"], by["r1"]["strong"]) == (0.25, pytest.approx(0.95))  # strong mean of r2, c1
    assert (by["r2"]["weak"], by["r2"]["strong"]) == (0.25, 1.0)
    assert (by["c1"]["weak"], by["c1"]["strong"]) == (0.2, 0.9)  # the cascade's verifier score stands in
    # the CLI follows TOKENOMY_LEDGER_URL (no SQLite ledger in --data-dir at all)
    monkeypatch.setenv("TOKENOMY_LEDGER_URL", own_pg)
    res = CliRunner().invoke(app, ["route", "savings", "--data-dir", str(tmp_path / "empty"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out.pop("committed_first")["requests"] == 0  # no committed-first group: read from PostgreSQL too
    assert out == savings(pgdir, ledger_url=own_pg)
    out = tmp_path / "r.npz"
    res = CliRunner().invoke(app, ["route", "train", "--router", "lexical", "--from-ledger", "--data-dir",
                                   str(tmp_path / "empty"), "--out", str(out), "--cv", "0", "--no-loso", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 3 and out.is_file()


def test_unreachable_postgres_is_one_line(tmp_path):
    url = "postgresql://postgres@127.0.0.1:1/none"
    with pytest.raises(TokenomyError, match=r"cannot (open|read) the PostgreSQL ledger at postgresql://postgres@127"):
        savings(tmp_path, ledger_url=url)
    with pytest.raises(TokenomyError, match="cannot open the PostgreSQL ledger at"):
        PgFeedbackStore.open(url)


async def test_feedback_across_two_gateway_replicas_on_postgres(tmp_path, own_pg):
    """A request served by replica A is labelled through replica B: one PostgreSQL ledger, one
    feedback table, tenant isolation intact; the label is a training row for both."""
    import contextlib

    from gw_helpers import GatewayHandle, Stub, serve_gateway, stubs
    from rg_helpers import chat, two_groups

    from tokenomy.config import parse_config
    from tokenomy.gateway.app import build_app

    @contextlib.asynccontextmanager
    async def replica(cfg: dict, name: str):
        metering = open_metering(tmp_path / name, ledger_url=own_pg, admin_key=ADMIN)
        try:
            async with serve_gateway(build_app(parse_config(cfg, "<test>"), metering)) as (url, front):
                yield GatewayHandle(url, metering, None, front)
        finally:
            metering.shutdown()

    async with stubs(Stub(out_tokens=3), Stub(out_tokens=3)) as (a, b):
        cfg = {**two_groups(a.base_url, b.base_url, threshold=0.0), "routing": {"store_prompts": True}}
        async with replica(cfg, "ra") as ra, replica(cfg, "rb") as rb:
            k1, k2 = ra.key("t1"), ra.key("t2")  # keys live in PostgreSQL: valid on both replicas
            st, h, _ = await ra.post("/v1/chat/completions", chat("Is the sky blue?"), k1)
            assert st == 200 and h["x-tokenomy-route-model"] == "strong"
            rid = h["x-tokenomy-request-id"]
            st, _, body = await rb.post("/v1/feedback", {"request_id": rid, "score": 0.5}, k1)
            assert st == 200 and body == {"request_id": rid, "tenant": "t1", "score": 0.5, "recorded": True}
            st, _, body = await rb.post("/v1/feedback", {"request_id": rid, "score": 0.0}, k2)
            assert st == 404 and body["error"]["code"] == "request_not_found"  # another tenant's request
            st, _, _ = await ra.post("/v1/feedback", {"request_id": "req_nosuch", "score": 0.5}, k1)
            assert st == 404
    rows = load_training_rows(tmp_path, own_pg)
    assert [(r["id"], r["prompt"], r["strong"]) for r in rows] == [(rid, "Is the sky blue?", 0.5)]
    assert not (tmp_path / "ra" / "ledger.db").exists()  # nothing went to a local SQLite file
