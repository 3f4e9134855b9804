"""LLM-as-judge verifier: a (cheap) model grades the weak answer 1-10 against a rubric.

Calls any OpenAI-compatible /chat/completions endpoint (in production, the gateway itself, so
the judge's tokens are metered like any other call). The reply is parsed robustly: JSON
``{"score": 7}``, "Score: 7", "7/10", "Rating: 7 out of 10", "**7**", else the first integer
in 1..10 on its own. A reply without a score gives ``None`` (run_cascade then escalates).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from tokenomy.errors import TokenomyError

DEFAULT_RUBRIC = (
    "You are grading an AI assistant's answer to a user's request. Judge correctness first "
    "(for maths, check every step and the final number), then whether it fully answers the "
    "request, then clarity. A refusal, a wrong final answer or an unfinished answer scores 1-3; "
    "a correct, complete answer scores 8-10.\n\n"
    "[Request]\n{prompt}\n\n[Answer]\n{answer}\n\n"
    "Reply with one line: Score: N (an integer from 1 to 10)."
)
_PATTERNS = (
    re.compile(r'"score"\s*:\s*"?(\d+(?:\.\d+)?)'),
    re.compile(r"\b(?:score|rating|grade)\s*(?:is|of|=|:)?\s*\**\s*(\d+(?:\.\d+)?)", re.I),
    re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.I),
    re.compile(r"\*\*(\d+(?:\.\d+)?)\*\*"),
    re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$", re.M),
)
_ANY_NUM = re.compile(r"\d+(?:\.\d+)?")


class JudgeError(TokenomyError):
    """The judge endpoint failed (transport, HTTP status or malformed response)."""


def parse_score(text: str) -> float | None:
    """A 1-10 score in a judge's reply, or None."""
    if not text:
        return None
    for rx in _PATTERNS:
        for m in rx.finditer(text):
            v = float(m.group(1))
            if 1.0 <= v <= 10.0:
                return v
    nums = _ANY_NUM.findall(text)
    if len(nums) == 1 and 1.0 <= float(nums[0]) <= 10.0:   # several numbers: ambiguous
        return float(nums[0])
    return None


def normalize(score_1_10: float) -> float:
    """1..10 -> 0..1 (the same scale as the learned verifier)."""
    return (score_1_10 - 1.0) / 9.0


@dataclass(slots=True)
class JudgeResult:
    score: float | None          # in [0, 1]; None if the reply had no score
    raw_score: float | None      # 1..10
    text: str
    usage: dict = field(default_factory=dict)
    model: str = ""


class JudgeVerifier:
    """`await JudgeVerifier(base_url, api_key, model).ascore(prompt, answer)` -> float | None."""

    name = "judge"

    def __init__(self, base_url: str, api_key: str | None, model: str, rubric: str = DEFAULT_RUBRIC, *,
                 max_tokens: int = 16, timeout_s: float = 30.0, max_chars: int = 12000,
                 extra_headers: dict[str, str] | None = None):
        if "{prompt}" not in rubric or "{answer}" not in rubric:
            raise TokenomyError("judge rubric must contain {prompt} and {answer}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.rubric = rubric
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self.extra_headers = extra_headers or {}

    def messages(self, prompt: str, answer: str) -> list[dict]:
        cut = lambda t: t if len(t) <= self.max_chars else t[: self.max_chars] + "\n[...]"  # noqa: E731
        # str.replace, not format: the prompt/answer may contain braces
        content = self.rubric.replace("{prompt}", cut(prompt)).replace("{answer}", cut(answer))
        return [{"role": "user", "content": content}]

    async def judge(self, prompt: str, answer: str, *, session=None) -> JudgeResult:
        import aiohttp

        body = {"model": self.model, "messages": self.messages(prompt, answer), "max_tokens": self.max_tokens,
                "temperature": 0}
        headers = {"content-type": "application/json", **self.extra_headers}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        own = session is None
        sess = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        try:
            async with sess.post(f"{self.base_url}/chat/completions", json=body, headers=headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise JudgeError(f"judge {self.model}: HTTP {resp.status}: {raw[:200].decode('utf-8', 'replace')}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JudgeError(f"judge {self.model}: {type(exc).__name__}: {exc}") from None
        finally:
            if own:
                await sess.close()
        try:
            obj = json.loads(raw)
            text = obj["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"judge {self.model}: malformed response: {raw[:200]!r}") from None
        s = parse_score(text)
        return JudgeResult(None if s is None else normalize(s), s, text, obj.get("usage") or {}, obj.get("model", ""))

    async def ascore(self, prompt: str, answer: str) -> float | None:
        return (await self.judge(prompt, answer)).score
