"""choose_model: the gateway's `auto` decision, with binary and multi-model routers."""

import numpy as np
import pytest

from tokenomy.errors import TokenomyError
from tokenomy.routing.quality import choose_model, load_router, threshold_for_strong_share
from tokenomy.routing.quality.data import load_alpacaeval_matrix
from tokenomy.routing.quality.mf import train_mf


def test_binary_router_picks_strong_above_threshold():
    length = load_router("length")                       # score = 1 - exp(-chars / 1000)
    cands = [("big", 30.0), ("small", 0.5), ("mid", 3.0)]  # order in config does not matter
    short, long = "x" * 100, "x" * 3000                   # scores 0.0952 and 0.9502
    d = choose_model(long, cands, 0.5, router=length)
    assert (d.model, d.reason, d.predicted_quality) == ("big", "strong", None)
    assert d.strong_win_rate == pytest.approx(1 - np.exp(-3.0))
    d = choose_model(short, cands, 0.5, router=length)
    assert (d.model, d.reason) == ("small", "weak") and d.threshold == 0.5
    assert d.headers()["x-tokenomy-route-model"] == "small"
    # a single candidate is always chosen
    assert choose_model(long, [("only", 1.0)], 0.5, router=length).model == "only"
    with pytest.raises(TokenomyError, match="no candidate"):
        choose_model(long, [], 0.5, router=length)


def test_threshold_for_strong_share_calibrates():
    length = load_router("length")
    prompts = ["x" * n for n in range(100, 1100, 100)]    # 10 prompts, distinct scores
    t = threshold_for_strong_share(length, prompts, 0.3)
    strong = [p for p in prompts if length.strong_win_rate(p) >= t]
    assert len(strong) == 3 and min(map(len, strong)) == 800
    t0 = threshold_for_strong_share(length, prompts, 0.0)
    assert all(length.strong_win_rate(p) < t0 for p in prompts)


@pytest.fixture(scope="module")
def mf(matrix_path):
    mat = load_alpacaeval_matrix(matrix_path)
    return train_mf(mat.prompts, mat.models, mat.scores, steps=150)


def test_multi_model_picks_cheapest_above_quality_bar(mf):
    prompt = "Give me three tips for a job interview."
    q = mf.predict_quality(prompt)
    ladder = [("llama-2-7b-chat-hf", 0.2), ("llama-2-13b-chat-hf", 0.3), ("llama-2-70b-chat-hf", 0.9), ("gpt4", 30.0)]
    qs = {m: q[m] for m, _ in ladder}
    for bar in (0.0, min(qs.values()) + 1e-9, max(qs.values()), max(qs.values()) + 0.01):
        d = choose_model(prompt, ladder, bar, router=mf)
        eligible = [(p, m) for m, p in ladder if qs[m] >= bar]
        if eligible:
            assert d.model == min(eligible)[1] and d.reason == "meets_threshold"
        else:  # nobody reaches the bar: best predicted quality
            assert d.model == max(qs, key=qs.get) and d.reason == "best_available"
        assert d.predicted_quality == pytest.approx(qs[d.model])
        assert d.strong_win_rate == pytest.approx((1 + qs["gpt4"] - qs["llama-2-7b-chat-hf"]) / 2)


def test_multi_model_with_unknown_candidate_falls_back_to_binary(mf):
    d = choose_model("hello", [("llama-2-7b-chat-hf", 0.2), ("my-private-model", 5.0)], 2.0, router=mf)
    assert d.model == "llama-2-7b-chat-hf" and d.reason == "weak" and d.predicted_quality is None
