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
