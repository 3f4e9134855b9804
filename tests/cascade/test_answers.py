import pytest

from tokenomy.routing.cascade import AgreementVerifier, extract_final_answer
from tokenomy.routing.cascade.answers import agreement, normalize_answer


@pytest.mark.parametrize("text, expected", [
    ("She sells 9 eggs for 9 * $2 = $<<9*2=18>>18.\n#### 18", "18"),
    ("#### 1,000", "1000"),
    ("Total is $1,250.50 so\n#### $1,250.50", "1250.5"),
    ("so the result is \\boxed{42} in the end", "42"),
    ("nested \\boxed{\\frac{3}{4}}", "0.75"),
    ("first \\boxed{1} then \\boxed{7}", "7"),
    ("The answer is 12.", "12"),
    ("Final answer: 3.50", "3.5"),
    ("He walks 3 miles then 4 more, 7 miles in all", "7"),
    ("no numbers here", None),
    ("", None),
    ("The answer is: Paris.", "paris"),
])
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_normalize_numbers_agree():
    assert normalize_answer("$1,000.00") == normalize_answer("1000") == "1000"
    assert normalize_answer("-3") == "-3"
    assert normalize_answer("1/4") == "0.25"


def test_agreement_majority_and_share():
    assert agreement(["18", "18", "20"]) == ("18", pytest.approx(2 / 3))
    assert agreement([None, None]) == (None, 0.0)
    assert agreement([]) == (None, 0.0)
    # a missing answer counts against agreement
    assert agreement(["5", None]) == ("5", 0.5)
    # ties: first seen wins (deterministic)
    assert agreement(["1", "2"])[0] == "1"


def test_agreement_verifier_scores_samples():
    v = AgreementVerifier()
    samples = ["... so #### 18", "9*2 = 18, the answer is 18", "I think \\boxed{20}", "#### 18.00"]
    best, share, idx = v.vote(samples)
    assert (best, share, idx) == ("18", 0.75, 0)
    assert v.score("q", samples) == 0.75
    assert v.score("q", ["#### 1", "#### 2", "#### 3"]) == pytest.approx(1 / 3)
    assert v.score("q", "a single answer 5") == 1.0
    assert v.score("q", ["nothing", "still nothing"]) == 0.0


def test_tally_counts_and_registry_name():
    from tokenomy.routing.cascade import VERIFIER_NAMES, load_verifier
    from tokenomy.routing.cascade.agreement import Vote

    v = load_verifier("agreement")
    assert "agreement" in VERIFIER_NAMES and isinstance(v, AgreementVerifier) and v.wants_samples
    assert v.tally(["#### 7", "#### 42", "", "x = 42", "no answer"]) == Vote("42", 0.4, 1, 2, 3, 5)
    assert v.tally(["", ""]) == Vote(None, 0.0, None, 0, 0, 2)
