"""Logprob features of a weak answer (untrusted upstream data) and the cascade-logprobs verifier."""

from __future__ import annotations

import math

import pytest

from tokenomy.routing.cascade import LogprobStats, LogprobVerifier, load_verifier, logprob_stats, run_cascade
from tokenomy.routing.cascade.logprobs import MAX_TOKENS, MAX_TOP, PRIOR, response_logprobs


def chat_lp(*tokens):
    """tokens: (logprob, [alternative logprobs])."""
    return {"content": [{"token": f"t{i}", "logprob": lp, "top_logprobs": [{"token": f"a{j}", "logprob": a}
                                                                              for j, a in enumerate(alts)]}
                        for i, (lp, alts) in enumerate(tokens)], "refusal": None}


def test_chat_shape_numbers():
    s = logprob_stats(chat_lp((-0.1, [-0.1, -2.4]), (-3.0, [-0.7, -0.7]), (0.0, [0.0])))
    assert s.n_tokens == 3
    assert s.mean_logprob == pytest.approx(-3.1 / 3) and s.min_logprob == -3.0
    # entropies: two alternatives renormalised; two equal -> ln 2; one -> 0
    p = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.4))
    h1 = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert s.mean_entropy_nats == pytest.approx((h1 + math.log(2) + 0.0) / 3)
    assert s.low_prob_share == pytest.approx(1 / 3)   # only exp(-3) < 0.1
    assert s.to_json() == {"n": 3, "mean": -1.0333, "min": -3.0, "entropy": round(s.mean_entropy_nats, 4),
                           "low_share": 0.3333}


def test_legacy_completions_shape():
    obj = {"tokens": ["<s>", " a", " b"], "token_logprobs": [None, -0.5, -1.5],
           "top_logprobs": [None, {" a": -0.5, " c": -0.5}, {" b": -1.5}], "text_offset": [0, 0, 2]}
    s = logprob_stats(obj)
    assert (s.n_tokens, s.mean_logprob, s.min_logprob) == (2, -1.0, -1.5)
    assert s.mean_entropy_nats == pytest.approx(math.log(2) / 2)
    # no top_logprobs at all (logprobs: 0): no entropy, the rest still usable
    s = logprob_stats({"tokens": ["x"], "token_logprobs": [-0.2], "top_logprobs": None})
    assert s.n_tokens == 1 and s.mean_entropy_nats is None


@pytest.mark.parametrize("garbage", [None, 3, "logprobs", [], {}, {"content": None}, {"content": "x"},
                                     {"content": []}, {"content": [1, "a", None, []]},
                                     {"content": [{"logprob": "-0.5"}, {"logprob": True}, {"logprob": None},
                                                  {"logprob": float("nan")}, {"logprob": float("inf")},
                                                  {"logprob": 7.5}, {"logprob": [-1]}, {"token": "x"}]},
                                     {"token_logprobs": "abc"}, {"token_logprobs": [None, "x", float("nan")]},
                                     {"tokens": ["a"]}])
def test_garbage_gives_none(garbage):
    assert logprob_stats(garbage) is None


def test_bad_entries_are_skipped_and_values_clamped():
    obj = {"content": [{"logprob": -0.5, "top_logprobs": "junk"},
                       {"logprob": "bad"},
                       {"logprob": -1e9, "top_logprobs": [{"logprob": -1e9}, {"logprob": "x"}, 5, {"logprob": 3.0}]},
                       {"logprob": float("-inf")},
                       {"logprob": 1e-6, "top_logprobs": [{"logprob": 1e-6}, {"logprob": float("nan")}]},
                       {"logprob": 0.5}]}
    s = logprob_stats(obj)
    assert s.n_tokens == 4                      # "bad" and +0.5 are skipped
    assert s.min_logprob == -100.0              # -1e9 and -inf clamp to the floor
    assert s.mean_logprob == pytest.approx((-0.5 - 100 - 100 + 0.0) / 4)
    assert s.mean_entropy_nats == 0.0           # two single-alternative lists left, each entropy 0
    assert s.low_prob_share == 0.5


def test_huge_arrays_are_capped():
    many = {"content": [{"logprob": -1.0, "top_logprobs": [{"logprob": -1.0}] * 1000}] * (MAX_TOKENS + 5000)
            + [{"logprob": -50.0}]}
    s = logprob_stats(many)
    assert s.n_tokens == MAX_TOKENS and s.min_logprob == -1.0          # the tail past the cap is not read
    assert s.mean_entropy_nats == pytest.approx(math.log(MAX_TOP))     # 20 equal alternatives read, not 1000
    legacy = {"token_logprobs": [-1.0] * (MAX_TOKENS + 10), "top_logprobs": [{str(i): -1.0 for i in range(100)}] * 3}
    s = logprob_stats(legacy)
    assert s.n_tokens == MAX_TOKENS and s.mean_entropy_nats == pytest.approx(math.log(MAX_TOP))


def test_response_logprobs_is_defensive():
    lp = chat_lp((-0.1, []))
    assert response_logprobs({"choices": [{"logprobs": lp}]}) is lp
    for bad in (None, [], {"choices": None}, {"choices": []}, {"choices": ["x"]}, {"choices": [{}]}):
        assert response_logprobs(bad) is None


class Half:
    def score(self, prompt, answer):
        return 0.5


def test_verifier_prior_ranks_confident_above_hesitant_and_falls_back_to_text():
    v = LogprobVerifier(Half())
    confident = LogprobStats(40, -0.1, -1.0, 0.1, 0.0)
    hesitant = LogprobStats(40, -1.5, -12.0, 1.5, 0.4)
    assert v.score_response("q", "a", None) == v.score("q", "a") == pytest.approx(0.5)
    hi, lo = v.score_response("q", "a", confident), v.score_response("q", "a", hesitant)
    assert lo < 0.5 < hi
    # the prior's numbers: confident = 0.6*1 + 0.3*(5/3) - 0.3*(-1.25) = 1.475, shrunk by 40/48
    assert math.log(hi / (1 - hi)) == pytest.approx(1.475 * 40 / 48)
    # each term is clipped at 3 standard units, and a short answer is shrunk towards the text score
    extreme = LogprobStats(40, -100.0, -100.0, 50.0, 1.0)
    s = v.score_response("q", "a", extreme)
    assert math.log(s / (1 - s)) == pytest.approx(-3 * 1.2 * 40 / 48)
    one = LogprobStats(1, -0.1, -1.0, 0.1, 0.0)
    assert 0.5 < v.score_response("q", "a", one) < hi
    # a raw logprobs object is accepted too, garbage counts as absent
    assert v.score_response("q", "a", chat_lp((-0.1, [-0.1]))) > 0.5
    assert v.score_response("q", "a", {"content": "junk"}) == pytest.approx(0.5)
    assert PRIOR.logit_shift(LogprobStats(8, -0.5, -6.0, 0.6, 0.0)) == 0.0   # at the reference point


def test_registered_and_wraps_the_default_text_verifier():
    v = load_verifier("cascade-logprobs")
    text = load_verifier("cascade-default")
    assert v.wants_logprobs and v.name == "cascade-logprobs"
    p, a = "What is the capital of France?", "The capital of France is Paris."
    assert v.score(p, a) == pytest.approx(text.score(p, a))


async def test_run_cascade_passes_logprobs_to_score_response():
    seen = []

    class V:
        def score_response(self, prompt, answer, logprobs):
            seen.append((prompt, answer, logprobs))
            return 0.9 if logprobs is not None else 0.1

    async def weak():
        return {"text": "w", "lp": chat_lp((-0.2, []))}

    async def strong():
        return {"text": "s"}

    res = await run_cascade(weak, strong, V(), 0.5, prompt="p", text_of=lambda r: r["text"],
                            logprobs_of=lambda r: logprob_stats(r.get("lp")))
    assert not res.escalated and res.logprobs.n_tokens == 1 and seen[0][:2] == ("p", "w")
    res = await run_cascade(weak, strong, V(), 0.5, prompt="p", text_of=lambda r: r["text"])
    assert res.escalated and res.logprobs is None and seen[-1][2] is None
