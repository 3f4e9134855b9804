"""Optional quality: an LLM judge (any OpenAI-compatible endpoint) rates sampled answers 1-10.

The judge is asked to end with `Rating: N`; the parser takes that, else `N/10`, else a lone
number from 1 to 10. Answers the judge's reply cannot be parsed from are counted as
`unparsed` and left out of the mean. The emulator as a judge returns synthetic words: its
"scores" are meaningless (and almost always unparsed): it only exercises the plumbing.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import aiohttp
import orjson

from .client import RequestResult
from .load import Target

JUDGE_PROMPT = (
    "You are an impartial judge. Rate the quality of the assistant's answer to the user's prompt "
    "on a scale of 1 (useless) to 10 (excellent): helpfulness, correctness, relevance, clarity.\n\n"
    "[Prompt]\n{prompt}\n\n[Answer]\n{answer}\n\n"
    "Reply with one short sentence of justification, then the rating on its own line as `Rating: N`."
)
_RATING = re.compile(r"rating\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_OUT_OF_TEN = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*10\b")
_LONE = re.compile(r"^\s*\**(\d+(?:\.\d+)?)\**\s*\.?\s*$")


def parse_score(text: str) -> float | None:
    """The 1-10 rating in a judge's reply, or None."""
    for pattern in (_RATING, _OUT_OF_TEN):
        matches = pattern.findall(text)
        if matches:
            value = float(matches[-1])
            return value if 1.0 <= value <= 10.0 else None
    m = _LONE.match(text)
    if m:
        value = float(m.group(1))
        return value if 1.0 <= value <= 10.0 else None
    return None


@dataclass
class Quality:
    judge: str
    sampled: int = 0
    scored: int = 0
    unparsed: int = 0
    failed: int = 0  # judge requests that errored
    scores: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None

    def to_dict(self) -> dict:
        return {"judge": self.judge, "mean_score": self.mean, "sampled": self.sampled, "scored": self.scored,
                "unparsed": self.unparsed, "failed": self.failed}


def sample_pairs(results: list[RequestResult], k: int, seed: int = 0) -> list[tuple[str, str]]:
    """Up to k (prompt, answer) pairs from successful requests (seeded)."""
    pairs = [(r.messages[-1]["content"], r.text) for r in results if r.ok and r.messages and r.text]
    random.Random(seed).shuffle(pairs)
    return pairs[:k]


async def judge_pairs(judge: Target, pairs: list[tuple[str, str]], *, max_chars: int = 6000) -> Quality:
    q = Quality(judge=judge.name, sampled=len(pairs))
    timeout = aiohttp.ClientTimeout(total=judge.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for prompt, answer in pairs:
            content = JUDGE_PROMPT.format(prompt=prompt[:max_chars], answer=answer[:max_chars])
            body = {"model": judge.model, "messages": [{"role": "user", "content": content}],
                    "max_tokens": 64, "temperature": 0.0}
            try:
                async with session.post(judge.chat_url, data=orjson.dumps(body), headers=judge.headers) as resp:
                    raw = await resp.read()
                    if resp.status >= 400:
                        q.failed += 1
                        continue
                reply = orjson.loads(raw)["choices"][0]["message"]["content"] or ""
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                q.failed += 1
                continue
            score = parse_score(reply)
            if score is None:
                q.unparsed += 1
            else:
                q.scored += 1
                q.scores.append(score)
    return q
