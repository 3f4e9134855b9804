"""`tokenomy route savings` and `tokenomy route train --from-ledger` over a seeded ledger."""

from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from gw_helpers import ADMIN_KEY
from tokenomy.cli import app
from tokenomy.errors import TokenomyError
from tokenomy.metering import Metering
from tokenomy.routing.feedback import FeedbackStore, record_feedback

from test_feedback_savings import _ev, _route  # same directory (rootdir-relative import)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_route_savings_cli_matches_library(tmp_path):
    m = Metering.open(tmp_path, admin_key=ADMIN_KEY)
    m.create_tenant("t1")
    t0 = time.time() - 100
    m.commit_blocking(_ev("r1", t0, 1000, 100, "0.0012", {"route": _route(False)}))
    m.commit_blocking(_ev("r2", t0 + 1, 500, 200, "0.011", {"route": _route(True)}))
    m.shutdown()
    res = _invoke("route", "savings", "--data-dir", str(tmp_path), "--json")
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    # r1 weak (1000x$1 + 100x$2 per Mtok), r2 strong (500x$10 + 200x$30): hand-computed
    assert s["requests"] == 2 and s["strong_calls"] == 1
    assert s["actual_usd"] == "0.0122" and s["all_strong_usd"] == "0.024" and s["all_weak_usd"] == "0.0021"  # r2 at weak prices: 500x1 + 200x2 = $0.0009
    res = _invoke("route", "savings", "--data-dir", str(tmp_path / "nope"))
    # a user error (TokenomyError): `tokenomy` prints it as one line and exits 2
    assert isinstance(res.exception, TokenomyError) and "no gateway ledger" in str(res.exception)


def test_train_from_ledger_uses_feedback_rows(tmp_path):
    prompts = {f"req_{i}": ("What is 2+2?" if i % 2 else "Prove that there are infinitely many primes.") + f" #{i}"
               for i in range(12)}
    m = Metering.open(tmp_path, admin_key=ADMIN_KEY)
    m.create_tenant("t1")
    t0 = time.time() - 100
    for i, rid in enumerate(prompts):
        strong = i % 2 == 0
        m.commit_blocking(_ev(rid, t0 + i, 50, 20, "0.001", {"route": _route(strong)}))
    m.shutdown()
    store = FeedbackStore.open(tmp_path)
    for i, (rid, text) in enumerate(prompts.items()):
        store.record_prompt(rid, "t1", text)
    for i, rid in enumerate(prompts):
        record_feedback(tmp_path, rid, "t1", 1.0 if i % 3 else 0.0)
    out = tmp_path / "r.npz"
    res = _invoke("route", "train", "--router", "lexical", "--from-ledger", "--data-dir", str(tmp_path),
                  "--out", str(out), "--cv", "0", "--no-loso", "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["n"] == 12 and out.is_file()
    # with no stored prompts the command says what to configure
    empty = tmp_path / "empty"
    Metering.open(empty, admin_key=ADMIN_KEY).shutdown()
    res = _invoke("route", "train", "--router", "lexical", "--from-ledger", "--data-dir", str(empty),
                  "--out", str(tmp_path / "x.npz"))
    assert isinstance(res.exception, TokenomyError) and "store_prompts" in str(res.exception)
