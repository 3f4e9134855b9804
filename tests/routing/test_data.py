"""Loaders: RouteLLM / AlpacaEval source formats -> evaluation rows."""

import json

import pytest

from tokenomy.errors import TokenomyError, UnknownNameError
from tokenomy.routing.quality.data import (alpacaeval_models, convert_alpacaeval, convert_routellm,
                                           load_alpacaeval_matrix, read_rows, write_rows)


def _write(path, objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_routellm_drops_contaminated(tmp_path):
    src = _write(tmp_path / "rl.jsonl", [
        {"benchmark": "mmlu", "subset": "anatomy", "idx": 0, "prompt": "Q1", "weak": 1.0, "strong": 1.0, "contaminated": False},
        {"benchmark": "gsm8k", "subset": "test", "idx": 7, "prompt": "Q2", "weak": 0.0, "strong": 1.0, "contaminated": True},
        {"benchmark": "gsm8k", "subset": "test", "idx": 8, "prompt": "Q3", "weak": 0.0, "strong": 1.0, "contaminated": False},
    ])
    rows = convert_routellm(src)
    assert [(r.id, r.source, r.weak, r.strong) for r in rows] == [
        ("mmlu/anatomy/0", "mmlu", 1.0, 1.0), ("gsm8k/test/8", "gsm8k", 0.0, 1.0)]


def test_alpacaeval_pair_and_exclusions(tmp_path):
    ae = "ae1_win_vs_davinci003"
    src = _write(tmp_path / "ae.jsonl", [
        {"instruction": "I1", "dataset": "oasst", ae: {"llama-2-7b-chat-hf": 0.0, "gpt4": 1.0, "falcon-7b-instruct": 1.0}},
        {"instruction": "I2", "dataset": "koala", ae: {"llama-2-7b-chat-hf": 0.5, "gpt4": None}},   # strong missing
        {"instruction": "I3", "dataset": "vicuna", ae: {"llama-2-7b-chat-hf": 1.0, "gpt4": 1.0, "NullModel": 1.0}},
    ])
    assert alpacaeval_models(src) == ["gpt4", "llama-2-7b-chat-hf"]   # falcon and NullModel excluded
    rows = convert_alpacaeval(src)
    assert [(r.id, r.prompt, r.weak, r.strong) for r in rows] == [
        ("alpacaeval/oasst/0", "I1", 0.0, 1.0), ("alpacaeval/vicuna/2", "I3", 1.0, 1.0)]
    with pytest.raises(TokenomyError, match="excluded"):
        convert_alpacaeval(src, weak="falcon-7b-instruct")
    with pytest.raises(UnknownNameError, match="gpt4"):
        convert_alpacaeval(src, strong="gpt-4")
    mat = load_alpacaeval_matrix(src)
    assert mat.models == ["gpt4", "llama-2-7b-chat-hf"] and mat.scores.shape == (3, 2)
    assert mat.scores[1, 1] == 0.5 and mat.scores[1, 0] != mat.scores[1, 0]   # NaN for missing


def test_rows_roundtrip_and_validation(tmp_path, sample_rows):
    out = tmp_path / "rows.jsonl"
    assert write_rows(sample_rows[:5], out) == 5
    assert read_rows(out) == sample_rows[:5]
    bad = _write(tmp_path / "bad.jsonl", [{"id": "x", "prompt": "p", "weak": 2, "strong": 1}])
    with pytest.raises(TokenomyError, match=r"bad.jsonl:1: .*\[0, 1\]"):
        read_rows(bad)
    with pytest.raises(TokenomyError, match="no such data file"):
        read_rows(tmp_path / "missing.jsonl")


def test_shipped_sample_has_three_sources(sample_rows):
    from collections import Counter

    assert Counter(r.source for r in sample_rows) == {"mmlu": 400, "gsm8k": 300, "alpacaeval": 300}
    assert all(0 <= r.weak <= 1 and 0 <= r.strong <= 1 for r in sample_rows)
