"""verifier: agreement with a Gemini weak group: the gateway's `n: k` goes out as Google's
candidateCount (a local server speaking the Gemini API, tests/providers/fakes.py), the k candidates
come back as k choices, and the cascade scores them, serves one and bills all of them."""

from __future__ import annotations

import orjson

from tests.gateway.conftest import gateway

from .fakes import FakeGemini, gemini_response, running

MSGS = [{"role": "user", "content": "What is 6 x 7?"}]
USAGE = {"promptTokenCount": 8, "candidatesTokenCount": 50, "totalTokenCount": 58}  # 5 candidates x 10


def _dep(name: str, url: str) -> dict:
    return {"name": name, "provider": "gemini", "base_url": url, "api_key_env": "TEST_GEMINI_KEY",
            "model": "gemini-2.5-flash", "pricing": {"list": {"input": 1000, "output": 1000}}}


def _config(weak_url: str, strong_url: str) -> dict:
    return {"deployments": [_dep("weak@g", weak_url), _dep("strong@g", strong_url)],
            "model_groups": {"weak": {"deployments": ["weak@g"]}, "strong": {"deployments": ["strong@g"]}},
            "routing_groups": {"auto": {"candidates": ["weak", "strong"], "policy": "cascade",
                                        "cascade": {"verifier": "agreement", "samples": 5, "threshold": 0.5}}}}


def _candidates(texts: list[str]) -> dict:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}, "finishReason": "STOP", "index": i}
                           for i, t in enumerate(texts)],
            "usageMetadata": USAGE, "modelVersion": "gemini-2.5-flash", "responseId": "r"}


async def _ask(g) -> tuple[int, dict, dict]:
    st, h, raw = await g.post("/v1/chat/completions", {"model": "auto", "messages": MSGS, "max_tokens": 20}, g.key("t"))
    return st, h, raw if isinstance(raw, dict) else orjson.loads(raw)


async def test_k_candidates_agree_one_served_all_billed(monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_GEMINI_KEY", "AIza-test")
    async with running(FakeGemini()) as weak, running(FakeGemini()) as strong:
        weak.script = [(200, _candidates(["so #### 7", "first: #### 42", "second: #### 42", "The answer is 42.",
                                          "\\boxed{42}"]))]
        strong.script = [(200, gemini_response([{"text": "#### 42"}]))]
        async with gateway(_config(weak.url, strong.url), tmp_path / "ledger") as g:
            st, h, body = await _ask(g)
            events = [e for e in g.metering.events("t", limit=100)]
    assert st == 200, body
    gc = weak.requests[-1][2]["generationConfig"]
    assert gc["candidateCount"] == 5 and gc["temperature"] == 0.7   # the samples, not greedy
    assert h["x-tokenomy-cascade-escalated"] == "false" and float(h["x-tokenomy-cascade-score"]) == 0.8
    assert [c["index"] for c in body["choices"]] == [0] and body["choices"][0]["message"]["content"] == "first: #### 42"
    assert body["usage"]["completion_tokens"] == 50 and not strong.requests
    (ev,) = events
    assert ev.output_tokens == 50 and ev.extra["route"]["agreement"]["k"] == 5


async def test_k_candidates_disagree_escalate_to_the_strong_group(monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_GEMINI_KEY", "AIza-test")
    async with running(FakeGemini()) as weak, running(FakeGemini()) as strong:
        weak.script = [(200, _candidates(["#### 1", "#### 2", "#### 3", "#### 4", "#### 5"]))]
        strong.script = [(200, gemini_response([{"text": "#### 42"}]))]
        async with gateway(_config(weak.url, strong.url), tmp_path / "ledger") as g:
            st, h, body = await _ask(g)
            events = {e.id: e for e in g.metering.events("t", limit=100)}
    assert st == 200, body
    assert h["x-tokenomy-cascade-escalated"] == "true" and h["x-tokenomy-cascade-served-by"] == "strong"
    assert body["choices"][0]["message"]["content"] == "#### 42" and len(strong.requests) == 1
    assert "candidateCount" not in strong.requests[-1][2].get("generationConfig", {})  # one answer from strong
    rid = h["x-tokenomy-request-id"]
    assert events[f"{rid}:weak"].output_tokens == 50 and events[rid].deployment == "strong@g"
