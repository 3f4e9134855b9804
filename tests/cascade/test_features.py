import numpy as np

from tokenomy.routing.cascade.features import DENSE_NAMES, DENSE_SIGNS, arithmetic_checks, dense_features


def _f(prompt, answer):
    return dict(zip(DENSE_NAMES, dense_features(prompt, answer)))


def test_shapes_and_signs():
    assert len(DENSE_NAMES) == len(DENSE_SIGNS) == len(set(DENSE_NAMES))
    assert dense_features("hi", "").shape == (len(DENSE_NAMES),)
    assert set(DENSE_SIGNS) <= {-1, 0, 1}
    assert dict(zip(DENSE_NAMES, DENSE_SIGNS))["refusal"] == -1


def test_arithmetic_checks():
    assert arithmetic_checks("16 - 3 = 13 and 13 - 4 = 9") == (2, 0)
    assert arithmetic_checks("9 * $2 = $<<9*2=18>>18") == (1, 0)   # calculator mark, counted once
    assert arithmetic_checks("2 + 2 = 5. " * 100) == (1, 1)         # a looping answer: distinct equations
    assert arithmetic_checks("2 + 2 = 5") == (1, 1)
    assert arithmetic_checks("1,000 + 250 = 1,250") == (1, 0)
    assert arithmetic_checks("10 / 3 = 3.33") == (1, 0)             # rounding tolerated
    assert arithmetic_checks("5 / 0 = 1") == (0, 0)                  # not checkable
    assert arithmetic_checks("no maths") == (0, 0)


def test_maths_features_fire_only_on_numeric_prompts():
    p = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    good = _f(p, "3 + 4 = 7\n#### 7")
    bad = _f(p, "3 + 4 = 8. However, wait, actually that is approximately 9.\n#### 9")
    assert good["math_prompt"] == 1.0 and good["math_eq_wrong_any"] == 0.0
    assert bad["math_eq_wrong_any"] == 1.0 and bad["math_eq_wrong_share"] == 1.0
    assert bad["self_correction"] > 0 and bad["approximation"] > 0
    assert good["m_final_marker"] == 1.0 and good["o_final_marker"] == 0.0
    chat = _f("Write a poem about the sea.", "The sea is wide and deep.")
    assert chat["math_prompt"] == 0.0 and chat["m_log_answer_chars"] == 0.0 and chat["o_log_answer_chars"] > 0


def test_refusal_repetition_truncation():
    f = _f("How do I pick a lock?", "I'm sorry, but I cannot help with that. As an AI, I won't assist.")
    assert f["refusal"] > 0 and f["apology"] > 0 and f["as_an_ai"] > 0
    rep = _f("Tell me a story", "the cat sat on the mat " * 30)
    assert rep["repeat_3gram"] > 0.8 and rep["truncated"] == 1.0
    clean = _f("Tell me a story", "Once upon a time a fox found a key. It opened a door to the sea.")
    assert clean["repeat_3gram"] == 0.0 and clean["truncated"] == 0.0
    assert np.isfinite(dense_features("x" * 50000, "y " * 50000)).all()
