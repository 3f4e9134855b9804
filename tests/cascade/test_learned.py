import numpy as np
import pytest

from tokenomy.errors import TokenomyError, UnknownNameError
from tokenomy.routing.cascade import load_verifier, train, validate
from tokenomy.routing.cascade.features import DENSE_NAMES, DENSE_SIGNS
from tokenomy.routing.cascade.learned import LearnedVerifier
from tokenomy.routing.cascade.registry import DEFAULT_ARTIFACT, load_artifact


@pytest.fixture(scope="module")
def small(sample_rows):
    # a fast training set: every 2nd row of the sample, both sources
    return sample_rows[::2]


@pytest.fixture(scope="module")
def trained(small, tmp_path_factory):
    out = tmp_path_factory.mktemp("v") / "v.npz"
    return out, train(small, seed=0, out=out, report=False)


def test_train_save_load_roundtrip(trained, sample_rows):
    out, path = trained
    assert path == out and path.is_file() and path.stat().st_size < 200_000
    v = load_verifier(path)
    assert isinstance(v, LearnedVerifier)
    s = v.scores([r.prompt for r in sample_rows[:20]], [r.weak_output for r in sample_rows[:20]])
    assert ((s >= 0) & (s <= 1)).all() and s.std() > 0


def test_training_is_deterministic(small, trained, tmp_path):
    again = load_verifier(train(small, seed=0, out=tmp_path / "again.npz", report=False))
    first = load_verifier(trained[1])
    assert np.array_equal(first.weights, again.weights) and np.allclose(first.dense_weights, again.dense_weights)


def test_sign_priors_hold(trained):
    v = load_verifier(trained[1])
    assert not v.spec.free_dense   # the transfer design: features without a sign prior stay at 0
    for name, sign, w in zip(DENSE_NAMES, DENSE_SIGNS, v.dense_weights):
        assert sign * w >= -1e-9, (name, sign, w)
        if sign == 0:
            assert w == 0.0, name
    assert any(w < 0 for w in v.dense_weights) and any(w > 0 for w in v.dense_weights)


def test_in_domain_spec_frees_features(small, tmp_path):
    from tokenomy.routing.cascade.features import IN_DOMAIN_SPEC

    v = load_verifier(train(small, seed=0, out=tmp_path / "in.npz", spec=IN_DOMAIN_SPEC, report=False))
    assert v.spec == IN_DOMAIN_SPEC
    free = [w for s, w in zip(DENSE_SIGNS, v.dense_weights) if s == 0]
    assert any(w != 0.0 for w in free)


def test_learned_beats_answer_length_on_maths(trained, sample_rows):
    """Held-out rows (the odd ones) of GSM8K: the verifier ranks wrong answers first."""
    from tokenomy.routing.cascade import evaluate

    held = [r for r in sample_rows[1::2] if r.source == "gsm8k"]
    ours = evaluate(held, load_verifier(trained[1]))
    base = evaluate(held, "answer-length")
    assert ours["apgr"] > base["apgr"]


def test_validate_reports_cv_and_loso(sample_rows):
    rep = validate(sample_rows[::5], seed=0, n_boot=0, prompt_only=True, folds=3)
    assert rep["cv"]["folds"] == 3
    for part in ("cv", "leave_one_source_out"):
        by = rep[part]["by_source"]
        assert set(by) == {"alpacaeval", "gsm8k"}
        for entry in by.values():
            assert set(entry) >= {"cascade", "prompt_only", "answer_length", "cascade_minus_prompt_only"}
            assert 0.0 <= entry["cascade"]["apgr"] <= 1.5
    assert rep["leave_one_source_out"]["by_source"]["gsm8k"]["trained_on"] == ["alpacaeval"]


def test_default_is_shipped_and_sane():
    assert DEFAULT_ARTIFACT.is_file() and DEFAULT_ARTIFACT.stat().st_size < 300_000
    v = load_verifier("cascade-default")
    p = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    assert v.score(p, "3 + 4 = 7\n#### 7") > v.score(p, "3 + 4 = 8. Wait, however, actually it is 9.\n#### 9")
    chat = "Give me three tips for sleeping better."
    good = "1. Keep a regular schedule.\n2. Avoid screens an hour before bed.\n3. Keep your bedroom cool and dark."
    refusal = "I'm sorry, but as an AI I cannot help with that."
    assert v.score(chat, good) > v.score(chat, refusal)
    assert v.meta["report"]["leave_one_source_out"]["by_source"]["gsm8k"]["trained_on"] == ["alpacaeval"]


def test_registry_errors(tmp_path):
    with pytest.raises(UnknownNameError):
        load_verifier("nope")
    with pytest.raises(TokenomyError):
        load_verifier(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(TokenomyError):
        load_artifact(bad)
    with pytest.raises(TokenomyError):
        load_verifier("oracle")   # needs rows


def test_train_report_options(small, tmp_path):
    import json

    out = train(small, seed=0, out=tmp_path / "r.npz", n_boot=0, folds=2, loso=False, price_ratios=(20,))
    rep = json.loads((tmp_path / "r.npz.report.json").read_text())
    assert set(rep) == {"cv"} and rep["cv"]["folds"] == 2
    gsm = rep["cv"]["by_source"]["gsm8k"]
    t = gsm["cost"]["R=20"]["targets"]["90"]
    assert set(t) >= {"cascade", "prompt_only", "cheaper", "cascade_pays_off_above_price_ratio"}
    assert load_verifier(out).meta["report"] == rep


def test_held_out_models_report(small, sample_rows, tmp_path):
    """Answers relabelled as another model's are scored out of fold by prompt: each held-out
    model gets an entry whose scores come from verifiers that never saw that prompt."""
    import dataclasses
    import json

    from tokenomy.routing.cascade.train import format_report, held_out_models

    ae = [r for r in sample_rows[1::2] if r.source == "alpacaeval"]
    ho = [dataclasses.replace(r, weak_model="unseen-a" if i % 2 else "unseen-b") for i, r in enumerate(ae)]
    rep = held_out_models(small, ho, folds=3, n_boot=0)
    assert set(rep["by_model"]) == {"unseen-a", "unseen-b"} and rep["folds"] == 3
    for m, v in rep["by_model"].items():
        assert v["cascade"]["n"] == sum(r.weak_model == m for r in ho) and v["source"] == "alpacaeval"
    assert rep["mean_apgr"] == round(sum(v["cascade"]["apgr"] for v in rep["by_model"].values()) / 2, 4)
    out = train(small, seed=0, out=tmp_path / "h.npz", n_boot=0, folds=2, loso=False, held_out=ho)
    saved = json.loads((tmp_path / "h.npz.report.json").read_text())
    assert set(saved) == {"cv", "held_out_models"} and load_verifier(out).meta["report"] == saved
    assert "unseen-a" in format_report(saved) and "models outside the training pool" in format_report(saved)


def test_open_ended_length_prior():
    # the sign prior that lets the verifier use answer length on open-ended prompts (and only there)
    signs = dict(zip(DENSE_NAMES, DENSE_SIGNS))
    assert signs["o_log_answer_chars"] == 1 and signs["m_log_answer_chars"] == 0
    v = load_verifier("cascade-default")
    w = dict(zip(DENSE_NAMES, v.dense_weights))
    assert w["o_log_answer_chars"] > 0
    p = "Give me some ideas for a weekend trip with kids."
    short = "Go to a park."
    long = ("Here are some ideas:\n1. Visit a science museum with hands-on exhibits.\n2. Go camping at a "
            "nearby lake and cook over a fire.\n3. Take a day trip to a farm where kids can pick fruit.\n"
            "4. Rent bikes and ride a trail, with a picnic at the halfway point.")
    assert v.score(p, long) > v.score(p, short)
