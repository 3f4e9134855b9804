"""`tokenomy route eval/train/data` dispatch to the cascade evaluator for rows with weak_output."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tokenomy.cli import app

SAMPLE = Path(__file__).parent / "data" / "cascade_sample.jsonl"


def _run(*args: str) -> dict:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_eval_cascade_with_price_ratio_reports_both_kinds():
    out = _run("route", "eval", "--data", str(SAMPLE), "--router", "cascade-default",
               "--price-ratio", "20", "--bootstrap", "0", "--json")
    assert out["kind"] == "cascade" and out["n"] == 300
    assert 0.5 < out["apgr"] <= 1.0  # the shipped verifier beats random on its own sample
    assert out["weak_mean"] < out["strong_mean"]
    for target in ("90", "95"):
        t = out["cost"]["targets"][target]
        # a cascade always pays the weak call: cost = 1 + R*x, with x the escalation share
        x = t["cascade"]["strong_share_pct"] / 100
        assert abs(t["cascade"]["cost"] - (1 + 20 * x)) < 0.02
        # a prompt-only gate does not: cost = (1 - x) + R*x
        y = t["prompt_only"]["strong_share_pct"] / 100
        assert abs(t["prompt_only"]["cost"] - ((1 - y) + 20 * y)) < 0.02
        assert t["cheaper"] in ("cascade", "prompt_only")


def test_eval_prompt_only_router_ignores_weak_output():
    out = _run("route", "eval", "--data", str(SAMPLE), "--router", "length", "--bootstrap", "0", "--json")
    assert "cost" not in out and out["n"] == 300


def test_train_cascade_writes_artifact_with_cv_report(tmp_path):
    dest = tmp_path / "verifier.npz"
    out = _run("route", "train", "--router", "cascade", "--data", str(SAMPLE), "--out", str(dest),
               "--cv", "3", "--bootstrap", "0", "--json")
    assert dest.is_file() and out["out"] == str(dest)
    assert out["report"]["cv"]["folds"] == 3
    # the trained artifact is usable as a verifier by eval
    again = _run("route", "eval", "--data", str(SAMPLE), "--router", "cascade", "--model", str(dest),
                 "--bootstrap", "0", "--json")
    assert again["kind"] == "cascade" and 0.5 < again["apgr"] <= 1.0
