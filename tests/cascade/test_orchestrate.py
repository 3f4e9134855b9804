import asyncio

import pytest

from tokenomy.routing.cascade import run_cascade


class Upstream:
    def __init__(self, answer, fail=False):
        self.answer, self.fail, self.calls = answer, fail, 0

    async def __call__(self):
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("upstream 502")
        return {"choices": [{"message": {"content": self.answer}}]}


def text_of(resp):
    return resp["choices"][0]["message"]["content"]


class FixedVerifier:
    def __init__(self, value):
        self.value, self.seen = value, []

    def score(self, prompt, answer):
        self.seen.append((prompt, answer))
        return self.value


async def test_keeps_weak_answer_above_threshold():
    weak, strong, v = Upstream("weak says 4"), Upstream("strong says 4"), FixedVerifier(0.8)
    res = await run_cascade(weak, strong, v, 0.5, prompt="2+2?", text_of=text_of)
    assert not res.escalated and res.score == 0.8 and res.threshold == 0.5
    assert text_of(res.answer) == "weak says 4" and strong.calls == 0
    assert [c.role for c in res.calls] == ["weak"] and v.seen == [("2+2?", "weak says 4")]
    assert res.served_by == "weak"
    assert res.headers() == {"x-tokenomy-cascade-escalated": "false", "x-tokenomy-cascade-threshold": "0.5",
                             "x-tokenomy-cascade-served-by": "weak", "x-tokenomy-cascade-score": "0.8000"}


async def test_escalates_below_threshold_and_at_boundary_keeps():
    weak, strong = Upstream("meh"), Upstream("great")
    res = await run_cascade(weak, strong, FixedVerifier(0.2), 0.5, prompt="q", text_of=text_of)
    assert res.escalated and text_of(res.answer) == "great" and [c.role for c in res.calls] == ["weak", "strong"]
    assert res.served_by == "strong" and res.calls[0].response is not None
    res = await run_cascade(Upstream("ok"), Upstream("x"), FixedVerifier(0.5), 0.5, text_of=text_of)
    assert not res.escalated   # score == threshold keeps


async def test_async_and_callable_verifiers():
    class AsyncV:
        async def ascore(self, prompt, answer):
            return 0.9

    res = await run_cascade(Upstream("a"), Upstream("b"), AsyncV(), 0.5, text_of=text_of)
    assert not res.escalated and res.score == 0.9

    async def fn(prompt, answer):
        return 0.1

    res = await run_cascade(Upstream("a"), Upstream("b"), fn, 0.5, text_of=text_of)
    assert res.escalated and res.score == 0.1
    res = await run_cascade(Upstream("a"), Upstream("b"), lambda p, a: None, 0.5, text_of=text_of)
    assert res.escalated and res.score is None   # no score: escalate


async def test_verifier_error_escalates():
    class Broken:
        def score(self, prompt, answer):
            raise ValueError("boom")

    res = await run_cascade(Upstream("a"), Upstream("b"), Broken(), 0.5, text_of=text_of)
    assert res.escalated and text_of(res.answer) == "b" and "boom" in res.verifier_error


async def test_weak_failure_escalates_and_strong_failure_falls_back():
    res = await run_cascade(Upstream("a", fail=True), Upstream("b"), FixedVerifier(1.0), 0.5, text_of=text_of)
    assert res.escalated and text_of(res.answer) == "b" and res.score is None
    assert res.calls[0].error is not None and res.calls[0].response is None
    res = await run_cascade(Upstream("a"), Upstream("b", fail=True), FixedVerifier(0.0), 0.5, text_of=text_of)
    assert res.escalated and text_of(res.answer) == "a" and "502" in res.strong_error and res.served_by == "weak"
    with pytest.raises(RuntimeError, match="502"):
        await run_cascade(Upstream("a", fail=True), Upstream("b", fail=True), FixedVerifier(1.0), 0.5, text_of=text_of)


async def test_with_learned_verifier_on_real_answers(sample_rows):
    from tokenomy.routing.cascade import load_verifier

    v = load_verifier("cascade-default")
    good = "Tom has 3 + 4 = 7 apples.\n#### 7"
    bad = "3 + 4 = 8. However, wait, actually that is approximately 9 since you can't have half.\n#### 9"
    p = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    thr = (v.score(p, good) + v.score(p, bad)) / 2
    assert v.score(p, good) > v.score(p, bad)
    assert not (await run_cascade(Upstream(good), Upstream("x"), v, thr, prompt=p, text_of=text_of)).escalated
    assert (await run_cascade(Upstream(bad), Upstream("x"), v, thr, prompt=p, text_of=text_of)).escalated


async def test_agreement_verifier_in_cascade():
    """k samples from the weak model (e.g. n=k in one request); escalate when they disagree."""
    from tokenomy.routing.cascade import AgreementVerifier

    def k_samples(*answers):
        async def call():
            return {"choices": [{"message": {"content": a}} for a in answers]}
        return call

    texts = lambda resp: [c["message"]["content"] for c in resp["choices"]]  # noqa: E731
    v = AgreementVerifier()
    agree = await run_cascade(k_samples("#### 18", "so 18", "\\boxed{18}"), Upstream("s"), v, 0.6, text_of=texts)
    assert not agree.escalated and agree.score == 1.0
    split = await run_cascade(k_samples("#### 18", "#### 20", "#### 22"), Upstream("s"), v, 0.6, text_of=texts)
    assert split.escalated and split.score == pytest.approx(1 / 3) and text_of(split.answer) == "s"
