"""Optional dense groups of the lexical router's feature spec (task shape, format gate)."""

import numpy as np
import pytest

from tokenomy.routing.quality.features import (DENSE_NAMES, TASK_NAMES, FeatureSpec, is_multiple_choice,
                                               router_dense, sparse_features, task_features)
from tokenomy.routing.quality.lexical import LexicalRouter

MC = "Which is prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:"
WORD = "Tom has 3 apples and buys 5 more each day for 2 days. How many apples does he have in total?"


def test_task_features_count_quantities_cues_and_options():
    f = dict(zip(TASK_NAMES, task_features(WORD)))
    assert f["log_quantities"] == pytest.approx(np.log1p(3) / 3)
    assert f["log_step_cues"] == pytest.approx(np.log1p(3) / 3)     # "each", "how many", "total"
    assert f["is_multiple_choice"] == 0.0 and f["option_count"] == 0.0
    assert f["length_score"] == pytest.approx(1 - np.exp(-len(WORD) / 1000))
    m = dict(zip(TASK_NAMES, task_features(MC)))
    assert m["option_count"] == pytest.approx(0.4) and m["is_multiple_choice"] == 1.0
    assert is_multiple_choice(MC) and not is_multiple_choice(WORD)


def test_default_spec_keeps_the_shape_features_and_hashing():
    spec = FeatureSpec()
    assert spec.dense_size == len(DENSE_NAMES) and router_dense(WORD, spec).shape == (len(DENSE_NAMES),)
    gated = FeatureSpec(task_features=True, format_gate=True, format_gate_ngrams=True)
    assert gated.dense_size == 3 * (len(DENSE_NAMES) + len(TASK_NAMES))
    d = router_dense(MC, gated).reshape(3, -1)
    assert np.array_equal(d[1], d[0]) and not d[2].any()            # MC copy on, free-form copy off
    # MC n-grams move to the other half of the table; free-form ones stay put
    i0, _ = sparse_features(MC, FeatureSpec())
    i1, _ = sparse_features(MC, gated)
    assert np.array_equal(i1, (i0 + spec.buckets // 2) % spec.buckets)
    assert np.array_equal(sparse_features(WORD, gated)[0], sparse_features(WORD, FeatureSpec())[0])
    assert FeatureSpec.from_json(gated.to_json()) == gated
    assert FeatureSpec.from_json({k: v for k, v in FeatureSpec().to_json().items()
                                  if k not in ("task_features", "format_gate", "format_gate_ngrams")}) == FeatureSpec()


def test_router_weight_shape_follows_the_spec():
    spec = FeatureSpec(buckets_log2=10, task_features=True)
    with pytest.raises(ValueError, match="shapes"):
        LexicalRouter(spec, np.zeros(spec.buckets), np.zeros(len(DENSE_NAMES)), 0.0)
    r = LexicalRouter(spec, np.zeros(spec.buckets), np.ones(spec.dense_size), 0.0)
    assert 0.5 < r.strong_win_rate(WORD) < 1.0


def test_prompt_format_gate_reads_the_form_not_the_benchmark():
    from tokenomy.routing.quality.formats import MATH_WORD_PROBLEM, MULTIPLE_CHOICE, OPEN, prompt_format

    assert prompt_format(MC) == MULTIPLE_CHOICE
    assert prompt_format(WORD) == MATH_WORD_PROBLEM
    # number words count as quantities; an imperative ending asks as well as a question mark
    assert prompt_format("Jan has three times as many pets as Marcia, who has twelve. "
                         "Calculate the total number of pets.") == MATH_WORD_PROBLEM
    assert prompt_format("Write a poem about the 4 seasons and 12 months.") == OPEN          # nothing asked
    assert prompt_format("How did serial killers evade capture in the 70s and 80s?") == OPEN  # no quantity cue
    assert prompt_format("```python\nx = 3 + 4\n```\nHow much is the total of x?") == OPEN  # code
    assert prompt_format("Tom has 3 apples and 5 pears. " * 80 + "How many?") == OPEN        # too long


def test_math_features_count_difficulty_cues():
    from tokenomy.routing.quality.formats import MATH_NAMES, math_features

    text = "A shirt costs $12.50 and pants cost twice as much. After a 20% discount, what is the total in cents?"
    f = dict(zip(MATH_NAMES, math_features(text)))
    assert f["log_quantities"] == pytest.approx(np.log1p(3) / 3)      # 12.50, twice, 20
    assert f["log_distinct_numbers"] == pytest.approx(np.log1p(2) / 3)
    assert f["percents"] == pytest.approx(1 / 3) and f["decimals"] == pytest.approx(1 / 3)
    assert f["fractions"] == 0.0 and f["unit_families"] == pytest.approx(1 / 3)   # money only
    assert f["log_comparisons"] == pytest.approx(np.log1p(2) / 2)     # "twice", "as much"
    assert f["log_sequence_words"] == pytest.approx(np.log1p(1) / 3)  # "after"
    assert f["log_max_number"] == pytest.approx(np.log10(21.0) / 6)
    assert f["log_questions"] == pytest.approx(np.log1p(1) / 2)
    assert math_features("").shape == (len(MATH_NAMES),) and not math_features("").any()


def test_format_experts_layout():
    from tokenomy.routing.quality.features import EXPERT_DENSE_SIZE, FORMAT_NAMES

    spec = FeatureSpec(format_experts=True)
    assert spec.table_size == 4 * spec.buckets and len(FORMAT_NAMES) == 3
    assert spec.dense_size == len(DENSE_NAMES) + 3 * EXPERT_DENSE_SIZE
    base_i, base_v = sparse_features(WORD, FeatureSpec())
    i, v = sparse_features(WORD, spec)
    # every n-gram twice: in the shared table and in the maths word problem table (the second)
    assert np.array_equal(i, np.r_[base_i, base_i + 2 * spec.buckets]) and np.allclose(v, np.r_[base_v, base_v])
    half = FeatureSpec(format_experts=True, expert_scale=0.5)
    assert np.allclose(sparse_features(WORD, half)[1], np.r_[base_v, 0.5 * base_v])
    shared_ngrams = FeatureSpec(format_experts=True, expert_scale=0.0)   # per-format dense heads only
    assert shared_ngrams.table_size == spec.buckets and shared_ngrams.dense_size == spec.dense_size
    assert np.array_equal(sparse_features(WORD, shared_ngrams)[0], base_i)
    d = router_dense(WORD, spec)
    shared, blocks = d[:len(DENSE_NAMES)], d[len(DENSE_NAMES):].reshape(3, EXPERT_DENSE_SIZE)
    assert np.array_equal(shared, router_dense(WORD, FeatureSpec()))
    assert not blocks[0].any() and not blocks[2].any()                 # other formats' heads are off
    assert np.array_equal(blocks[1][:len(DENSE_NAMES)], shared) and blocks[1][-1] == 1.0   # its intercept
    assert router_dense(MC, spec)[len(DENSE_NAMES) + EXPERT_DENSE_SIZE - 1] == 1.0
    assert FeatureSpec.from_json(half.to_json()) == half
    with pytest.raises(ValueError, match="format_experts"):
        FeatureSpec(format_experts=True, task_features=True)
    r = LexicalRouter(spec, np.zeros(spec.table_size), np.zeros(spec.dense_size), 0.0)
    assert r.strong_win_rate(WORD) == 0.5
    with pytest.raises(ValueError, match="shapes"):
        LexicalRouter(spec, np.zeros(spec.buckets), np.zeros(spec.dense_size), 0.0)


def test_expert_heads_for_some_formats_only():
    from tokenomy.errors import TokenomyError
    from tokenomy.routing.quality.features import EXPERT_DENSE_SIZE
    from tokenomy.routing.quality.train import lexical_spec

    spec = FeatureSpec(format_experts=True, expert_formats=("math_word_problem",))
    assert spec.table_size == 2 * spec.buckets and spec.dense_size == len(DENSE_NAMES) + EXPERT_DENSE_SIZE
    base_i, _ = sparse_features(WORD, FeatureSpec())
    assert np.array_equal(sparse_features(WORD, spec)[0], np.r_[base_i, base_i + spec.buckets])
    # a multiple-choice prompt has no head here: shared n-grams and shape features only
    assert np.array_equal(sparse_features(MC, spec)[0], sparse_features(MC, FeatureSpec())[0])
    assert not router_dense(MC, spec)[len(DENSE_NAMES):].any() and router_dense(WORD, spec)[-1] == 1.0
    assert FeatureSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="expert_formats"):
        FeatureSpec(format_experts=True, expert_formats=("essay",))
    with pytest.raises(TokenomyError, match="expert_formats"):
        lexical_spec(expert_formats=["open", "open"])
    with pytest.raises(TokenomyError, match="only to the format-expert layout"):
        lexical_spec(format_experts=False, expert_formats=["open"])
    assert lexical_spec(format_experts=False) == FeatureSpec()
