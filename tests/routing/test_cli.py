"""`tokenomy route ...` end to end on the in-repo sample."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenomy.cli import app

runner = CliRunner()


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_eval_oracle_random_length(sample_path, tmp_path):
    oracle = _json(runner.invoke(app, ["route", "eval", "--data", str(sample_path), "--router", "oracle",
                                       "--json", "--bootstrap", "50"]))
    assert set(oracle) >= {"n", "apgr", "cpt50", "cpt80", "weak_mean", "strong_mean", "apgr_ci95"}
    assert oracle["n"] == 1000 and oracle["strong_mean"] > oracle["weak_mean"]
    # The oracle sends the rows with a gain first: CPT(50%) is half the share of rows with gain 1
    # minus nothing, i.e. below the share of positive-gain rows.
    assert oracle["apgr"] > 0.85 and oracle["cpt50"] < 20
    rnd = _json(runner.invoke(app, ["route", "eval", "--data", str(sample_path), "--router", "random",
                                    "--json", "--bootstrap", "0", "--seed", "3"]))
    assert 0.4 < rnd["apgr"] < 0.6 and "apgr_ci95" not in rnd
    plot = tmp_path / "curve.png"
    length = _json(runner.invoke(app, ["route", "eval", "--data", str(sample_path), "--router", "length",
                                       "--json", "--bootstrap", "0", "--by-source", "--plot", str(plot)]))
    assert set(length["by_source"]) == {"mmlu", "gsm8k", "alpacaeval"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_data_and_train_lexical(tmp_path, sample_path):
    # route data from a tiny RouteLLM-format file
    src = tmp_path / "rl.jsonl"
    src.write_text("".join(json.dumps({"benchmark": "gsm8k", "subset": "test", "idx": i, "prompt": f"Q{i}",
                                       "weak": float(i % 2), "strong": 1.0, "contaminated": i == 3}) + "\n"
                           for i in range(6)))
    out = _json(runner.invoke(app, ["route", "data", "--source", "routellm", "--input", str(src),
                                    "--out", str(tmp_path / "rows.jsonl"), "--json"]))
    assert out == {"out": str(tmp_path / "rows.jsonl"), "n": 5, "by_source": {"gsm8k": 5}}

    art = tmp_path / "lex.npz"
    rep = _json(runner.invoke(app, ["route", "train", "--router", "lexical", "--data", str(sample_path),
                                    "--out", str(art), "--cv", "2", "--bootstrap", "20", "--json"]))
    assert set(rep["cv"]["by_source"]) == {"mmlu", "gsm8k", "alpacaeval"}
    assert set(rep["loso"]["by_source"]) == {"mmlu", "gsm8k", "alpacaeval"}
    assert rep["loso"]["by_source"]["gsm8k"]["trained_on"] == ["alpacaeval", "mmlu"]
    ev = _json(runner.invoke(app, ["route", "eval", "--data", str(sample_path), "--router", "lexical",
                                   "--model", str(art), "--json", "--bootstrap", "0"]))
    assert ev["n"] == 1000 and ev["apgr"] > 0.6        # in-sample, sanity only
    from tokenomy.routing.quality import load_artifact

    spec = load_artifact(art).spec                     # the default layout: the gated maths head
    assert spec.format_experts and spec.expert_formats == ("math_word_problem",) and not spec.expert_shared


def test_choose_cli():
    d = _json(runner.invoke(app, ["route", "choose", "--prompt", "hi", "--candidates",
                                  "small=0.2,big=10", "--threshold", "0", "--json"]))
    assert d["model"] == "big" and d["reason"] == "strong"      # threshold 0: everything goes strong
    d = _json(runner.invoke(app, ["route", "choose", "--prompt", "hi", "--candidates",
                                  "small=0.2,big=10", "--threshold", "1.01", "--json"]))
    assert d["model"] == "small" and d["reason"] == "weak"


def test_user_errors_are_one_line(tmp_path):
    exe = Path(sys.executable).parent / "tokenomy"
    p = subprocess.run([str(exe), "route", "eval", "--data", str(tmp_path / "nope.jsonl"), "--router", "length",
                        "--json"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().startswith("error: no such data file") and p.stderr.count("\n") == 1


def test_train_rejects_unknown_expert_format(tmp_path, sample_path):
    exe = Path(sys.executable).parent / "tokenomy"
    p = subprocess.run([str(exe), "route", "train", "--router", "lexical", "--data", str(sample_path), "--out",
                        str(tmp_path / "x.npz"), "--expert-formats", "essay", "--cv", "0", "--no-loso"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and not (tmp_path / "x.npz").exists()
    assert p.stderr.strip().startswith("error: expert_formats must be distinct names among multiple_choice")
    assert p.stderr.count("\n") == 1
    # the same option on the (default) task router is refused: it would be ignored
    p = subprocess.run([str(exe), "route", "train", "--data", str(sample_path), "--out", str(tmp_path / "x.npz"),
                        "--expert-formats", "open", "--cv", "0", "--no-loso"], capture_output=True, text=True)
    assert p.returncode == 2 and not (tmp_path / "x.npz").exists()
    assert p.stderr.strip() == "error: --expert-formats: lexical router options (pass --router lexical)"


def test_route_explain_json_and_text():
    from typer.testing import CliRunner



    runner = CliRunner()
    res = runner.invoke(app, ["route", "explain", "hi", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["kind"] == "chitchat" and out["decision"] == "weak" and out["score"] < out["threshold"]
    assert out["threshold_from"].startswith("strong_share 0.3") and out["top_features"]
    hard = json.loads(runner.invoke(app, ["route", "explain", "Implement a lock-free MPMC queue in C++ with atomics",
                                          "--threshold", "0.5", "--json"]).stdout)
    assert hard["kind"] == "coding" and hard["decision"] == "strong" and hard["threshold_from"] == "given"
    assert "systems" in [f["feature"] for f in hard["top_features"]]
    text = runner.invoke(app, ["route", "explain", "Translate 'cat' into French."])
    assert text.exit_code == 0 and "task kind: translation" in text.stdout and "->  weak" in text.stdout
    # the features that drove it, with the numbers that add up to the logit
    lines = text.stdout.splitlines()
    assert lines[2].startswith("logit ") and any(ln.split()[0] == "kind_translation" for ln in lines[3:])
    js = json.loads(runner.invoke(app, ["route", "explain", "Translate 'cat' into French.", "--json"]).stdout)
    assert js["decision"] == "weak" and js["kind"] == "translation"
    assert all(abs(f["contribution"]) >= 0.005 for f in js["top_features"])
    assert js["logit"] == pytest.approx(js["bias"] + sum(f["contribution"] for f in js["top_features"]), abs=0.05)
    other = runner.invoke(app, ["route", "explain", "hi", "--router", "length"])
    assert other.exit_code == 0 and "no per-feature breakdown" in other.stdout and "task kind: chitchat" in other.stdout


def test_route_explain_errors_are_one_line(tmp_path):
    exe = Path(sys.executable).parent / "tokenomy"
    for args, msg in ((["   "], "error: prompt is empty"),
                      (["hi", "--router", "mf"], "error: router 'mf' is a multi-model router"),
                      (["hi", "--strong-share", "2"], "error: --strong-share must be in [0, 1]")):
        p = subprocess.run([str(exe), "route", "explain", *args], capture_output=True, text=True)
        assert p.returncode == 2 and p.stderr.startswith(msg) and p.stderr.count("\n") == 1, p.stderr


def test_choose_cli_default_threshold_is_the_start_up_cut():
    from tokenomy.routing.quality import load_router
    from tokenomy.routing.quality.threshold import startup_threshold

    t = startup_threshold(load_router("default"), 0.3)
    easy = _json(runner.invoke(app, ["route", "choose", "--prompt", "hi", "--candidates", "small=0.2,big=10", "--json"]))
    hard = _json(runner.invoke(app, ["route", "choose", "--prompt", "Implement a lock-free MPMC queue in C++ with "
                                     "atomics and explain the memory ordering", "--candidates", "small=0.2,big=10",
                                     "--json"]))
    assert easy["threshold"] == hard["threshold"] == pytest.approx(t)
    assert (easy["model"], hard["model"]) == ("small", "big")
