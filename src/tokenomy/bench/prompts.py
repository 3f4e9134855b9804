"""Prompts of a given token length (by `tokenomy.tokens`, a cl100k-like count).

A prompt is one user message: a unique header (so servers cannot reuse a cached prefix
across requests) followed by filler words that each count as one token. Its chat token
count (framing included) equals the target whenever the target exceeds the header.
"""

from __future__ import annotations

import random

from tokenomy.tokens import count_chat_tokens, count_tokens

# Short common words: " word" is one cl100k token each.
_FILLER = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "on", "be", "by", "this",
           "are", "at", "from", "or", "an", "have", "not", "which", "but", "all", "can", "more", "one", "will",
           "data", "time", "rate", "model", "price", "cost", "power", "value", "first", "other", "some")


def _messages(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def make_messages(tokens: int, index: int, seed: int = 0, *, seed_text: str | None = None) -> list[dict[str, str]]:
    """Chat messages whose `count_chat_tokens` is `tokens` (or the header's length, if larger).

    `seed_text` (a real prompt) is used as the start of the content and cut or padded to size.
    """
    rng = random.Random(seed * 1_000_003 + index)
    header = f"Request {index}. " + (seed_text.strip() + " " if seed_text else "")
    framing = count_chat_tokens(_messages(""))
    budget = tokens - framing
    if count_tokens(header) > budget and seed_text:
        words = header.split()
        lo, hi = 0, len(words)
        while lo < hi:  # longest word prefix that fits
            mid = (lo + hi + 1) // 2
            if count_tokens(" ".join(words[:mid])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        header = " ".join(words[:lo])
    need = budget - count_tokens(header)
    body = header.rstrip()
    if need > 0:
        body += "".join(" " + rng.choice(_FILLER) for _ in range(need))
    # The header's end and the first filler may merge or split differently: fix up exactly.
    for _ in range(4):
        diff = tokens - count_chat_tokens(_messages(body))
        if diff == 0:
            break
        if diff > 0:
            body += " the" * diff
        else:
            cut = body.rsplit(" ", -diff)[0] if body.count(" ") > -diff else body
            if cut == body:
                break
            body = cut
    return _messages(body)
