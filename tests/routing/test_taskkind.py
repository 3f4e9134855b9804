"""Task-kind classifier and demand features (taskkind) and the task router's artifact / explain."""

from __future__ import annotations

import numpy as np
import pytest

from tokenomy.routing.quality.taskkind import FEATURE_NAMES, instruction_text, profile


@pytest.mark.parametrize("prompt,kind", [
    ("hi", "chitchat"), ("thanks!", "chitchat"), ("Danke schön!", "chitchat"), ("こんにちは", "chitchat"),
    ("Translate 'cat' into French.", "translation"), ("把“我爱你”翻译成英文。", "translation"),
    ("Übersetze 'Hund' ins Englische.", "translation"),
    ("Fix the typos: 'I recieved you're mesage.'", "rewrite"), ("Popraw błędy w tym zdaniu: Wczoraj", "rewrite"),
    ("Extract the dates from this sentence: it moved from 3 March to 10 March.", "extraction"),
    ("What is the capital of France?", "factual"), ("Write a haiku about autumn.", "writing"),
    ("Implement a lock-free MPMC queue", "coding"), ("Prove there are infinitely many primes.", "proof"),
    ("Beweise, dass es unendlich viele Primzahlen gibt.", "proof"), ("素数が無限に存在することを証明してください。", "proof"),
    ("Compute the integral of x^2 e^{-x} from 0 to infinity.", "math"),
    ("Tom has 3 apples and buys 5 more bags of 4 apples each. How many apples does he have now?", "reasoning"),
    ("Tell me about the history of the Roman empire", "open"),
    # counting questions and logic puzzles look like short factual questions; they are not recall
    ("In how many ways can six people stand in a queue?", "math"), ("How many moons does Mars have?", "factual"),
    ("If today is two days before Friday, what day was it the day before yesterday?", "reasoning"),
    ("Ria is older than Sam and Sam is older than Uma. Who is the youngest?", "reasoning"),
    ("Three cards lie in a row; the red one sits to the left of the blue one. Which could be in the middle?", "reasoning"),
    ("On an island of knights and knaves, A says 'B is a knave'. What are they?", "reasoning"),
])
def test_kinds(prompt, kind):
    assert profile(prompt).kind == kind


def test_payload_is_not_demand():
    para = "Yesterday me and my freind went to the libary to study for our exams and it was realy long. " * 6
    long_edit = "Fix the typos in this paragraph:\n\n" + para
    assert instruction_text(long_edit) == "Fix the typos in this paragraph"
    p = profile(long_edit)
    assert p.kind == "rewrite"
    # its length features read the instruction only: as short as a one-line edit
    short = profile("Fix the typos in this paragraph")
    assert p.demand["log_instruction_chars"] == pytest.approx(short.demand["log_instruction_chars"])
    # a long open prompt is read whole
    assert instruction_text("Summarise:\n\n" + para) == "Summarise"
    assert instruction_text("Tell me more about " + para) == "Tell me more about " + para


def test_demand_features_rise_with_demand():
    easy = profile("Implement a function that adds two numbers in Python.")
    hard = profile("Implement a lock-free MPMC queue in C++ with atomics and explain the memory ordering and ABA.")
    assert easy.kind == hard.kind == "coding"
    assert hard.demand["systems"] > easy.demand["systems"] and hard.demand["constraints"] >= easy.demand["constraints"]
    # CJK characters count as about three Latin ones in the length features
    zh, en = profile("证明：任何有限整环都是域。"), profile("Prove it")
    assert zh.demand["log_instruction_chars"] > en.demand["log_instruction_chars"]
    v = profile("hi").vector()
    assert v.shape == (len(FEATURE_NAMES),) and v[FEATURE_NAMES.index("kind_chitchat")] == 1.0


def test_task_router_trains_with_source_intercepts_and_round_trips(sample_rows, tmp_path):
    from tokenomy.routing.quality.registry import load_artifact
    from tokenomy.routing.quality.taskrouter import TaskRouter, prior_vector, train_task_router

    rows = sample_rows
    args = ([r.prompt for r in rows], [r.weak for r in rows], [r.strong for r in rows], [r.source for r in rows])
    r = train_task_router(*args, l2=3.0)
    assert set(r.meta["source_intercepts"]) == {"mmlu", "gsm8k", "alpacaeval"} and r.meta["converged"]
    # a strong pull keeps the weights at the prior; a weak one lets the data move them
    far = train_task_router(*args, l2=1e-4)
    assert np.abs(r.weights - prior_vector()).max() < np.abs(far.weights - prior_vector()).max()
    assert np.abs(train_task_router(*args, l2=1e4).weights - prior_vector()).max() < 1e-3
    r.save(tmp_path / "t.npz")
    back = load_artifact(tmp_path / "t.npz")
    assert isinstance(back, TaskRouter)
    assert back.strong_win_rate("Prove that 2 is prime") == pytest.approx(r.strong_win_rate("Prove that 2 is prime"))
    ex = back.explain("hi")
    assert ex["kind"] == "chitchat" and ex["top_features"][0]["feature"] in ("kind_chitchat", "log_words")
    assert ex["score"] == pytest.approx(back.strong_win_rate("hi"))
    assert sum(f["contribution"] for f in ex["top_features"]) + ex["bias"] == pytest.approx(ex["logit"], abs=1e-3)


def test_shipped_default_is_the_task_router():
    from tokenomy.routing.quality import load_router
    from tokenomy.routing.quality.registry import DEFAULT_ARTIFACT
    from tokenomy.routing.quality.taskrouter import TaskRouter

    r = load_router("default")
    assert isinstance(r, TaskRouter) and DEFAULT_ARTIFACT.stat().st_size < 10_000
    assert r.strong_win_rate("hi") < r.strong_win_rate("Write a B-tree in Rust with insert, delete and range queries.")


def test_log_words_counts_words_not_digits_formulas_or_payload():
    import math

    # digits, operators and option letters are not words: the same question with longer numbers
    # has more characters but the same word count
    short = profile("What is 12 times 34? Explain.")
    long_numbers = profile("What is 123456789 times 987654321? Explain.")
    assert long_numbers.demand["log_instruction_chars"] > short.demand["log_instruction_chars"]
    assert long_numbers.demand["log_words"] == short.demand["log_words"] == pytest.approx(math.log1p(4))
    # a payload to edit is not counted: as many words as the one-line instruction
    para = "Yesterday me and my freind went to the libary to study for our exams and it was realy long. " * 6
    assert profile("Fix the typos in this paragraph:\n\n" + para).demand["log_words"] == pytest.approx(math.log1p(6))
    # CJK: a run of ideographs is one regex match plus half a word per character
    assert profile("证明任何有限整环都是域").demand["log_words"] == pytest.approx(math.log1p(1 + 11 / 2))


def test_math_choice_marks_maths_questions_with_answer_options_only():
    mc = "Solve for x: the equation 2x + 3 = 11.\nA. 2\nB. 4\nC. 6\nD. 8\nAnswer:"
    assert profile(mc).kind == "math" and profile(mc).demand["math_choice"] == 1.0
    open_q = profile("Solve for x: the equation 2x + 3 = 11.")
    assert open_q.kind == "math" and open_q.demand["math_choice"] == 0.0
    history = "Who was the first emperor of Rome?\nA. Caesar\nB. Augustus\nC. Nero\nD. Trajan\nAnswer:"
    assert profile(history).demand["math_choice"] == 0.0
