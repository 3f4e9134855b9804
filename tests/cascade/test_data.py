import json
from pathlib import Path

import pytest

from tokenomy.errors import TokenomyError, UnknownNameError
from tokenomy.routing.cascade.data import (AE_DEFAULT_STRONG, as_rows, convert_alpacaeval_outputs,
                                           convert_gsm8k_outputs, has_weak_output, read_rows, write_rows)

DATA = Path(__file__).resolve().parent / "data"


def test_sample_rows(sample_rows, sample_path):
    assert len(sample_rows) == 300 and has_weak_output(sample_path)
    assert {r.source for r in sample_rows} == {"alpacaeval", "gsm8k"}
    assert all(0 <= r.weak <= 1 and 0 <= r.strong <= 1 and r.weak_output for r in sample_rows)


def test_convert_gsm8k_drops_contaminated():
    rows = convert_gsm8k_outputs(DATA / "raw_gsm8k_outputs.jsonl")
    ids = [r.id for r in rows]
    assert ids == ["gsm8k/3", "gsm8k/4", "gsm8k/5", "gsm8k/10", "gsm8k/20", "gsm8k/30", "gsm8k/40", "gsm8k/50"]
    r4 = rows[1]
    assert (r4.weak, r4.strong) == (0.0, 1.0) and r4.weak_output.strip() and r4.weak_model.startswith("mistralai/")


def test_convert_alpacaeval_several_weak_models():
    path = DATA / "raw_alpacaeval_outputs.jsonl"
    rows = convert_alpacaeval_outputs(path, ["llama-2-7b-chat-hf", "vicuna-13b"])
    assert len(rows) == 6 and {r.weak_model for r in rows} == {"llama-2-7b-chat-hf", "vicuna-13b"}
    src = [json.loads(line) for line in path.open()]
    first = rows[0]
    raw = next(o for o in src if o["instruction"] == first.prompt and o["model"] == first.weak_model)
    strong = next(o for o in src if o["instruction"] == first.prompt and o["model"] == AE_DEFAULT_STRONG)
    assert first.weak == raw["ae1_win_vs_davinci003"] and first.strong == strong["ae1_win_vs_davinci003"]
    assert first.weak_output == raw["output"]
    with pytest.raises(UnknownNameError):
        convert_alpacaeval_outputs(path, "no-such-model")


def test_roundtrip_and_validation(tmp_path, sample_rows):
    p = tmp_path / "rows.jsonl"
    assert write_rows(sample_rows[:5], p) == 5
    assert read_rows(p) == sample_rows[:5]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "x", "weak": 2, "strong": 1, "weak_output": "a"}\n')
    with pytest.raises(TokenomyError, match="in \\[0, 1\\]"):
        read_rows(bad)
    with pytest.raises(TokenomyError):
        as_rows([{"id": 1, "prompt": "x", "weak": 0, "strong": 1}])


def test_load_source_defaults_and_errors():
    from tokenomy.routing.cascade.data import load_source

    gsm = load_source("cascade-gsm8k", DATA, input=DATA / "raw_gsm8k_outputs.jsonl")
    assert len(gsm) == 8 and gsm[0].source == "gsm8k"
    ae = load_source("cascade-alpacaeval", DATA, input=DATA / "raw_alpacaeval_outputs.jsonl",
                     weak="llama-2-7b-chat-hf, tulu-2-dpo-7b")
    assert len(ae) == 6 and {r.weak_model for r in ae} == {"llama-2-7b-chat-hf", "tulu-2-dpo-7b"}
    with pytest.raises(UnknownNameError):
        load_source("cascade-mmlu", DATA)


def test_convert_alpacaeval_drops_unannotated_minus_one(tmp_path):
    """The source marks unannotated answers with -1 (22 in the shared file): such rows are dropped, not refused."""
    src = [json.loads(line) for line in (DATA / "raw_alpacaeval_outputs.jsonl").open()]
    inst = next(o["instruction"] for o in src if o["model"] == "llama-2-7b-chat-hf")
    bad = [{**o, "ae1_win_vs_davinci003": -1.0} if o["instruction"] == inst and o["model"] == "llama-2-7b-chat-hf"
           else o for o in src]
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in bad))
    before = convert_alpacaeval_outputs(DATA / "raw_alpacaeval_outputs.jsonl", "llama-2-7b-chat-hf")
    after = convert_alpacaeval_outputs(path, "llama-2-7b-chat-hf")
    assert len(after) == len(before) - 1 and inst not in {r.prompt for r in after}
    assert all(0 <= r.weak <= 1 and 0 <= r.strong <= 1 for r in after)
