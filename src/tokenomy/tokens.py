"""Fast, dependency-free approximate token counting (GPT-4 / cl100k-like).

Used when an upstream returns no `usage` (the event is then marked estimated) and by the
emulator. The text is pre-split with a precompiled regex modelled on cl100k's pre-tokenizer
(contractions, letter runs with one leading non-letter, numbers in groups of up to 3 digits,
punctuation runs, whitespace); each piece is one token, except

- long letter runs, which BPE splits into several tokens: ~1 extra token per 4 letters
  beyond the first `_WORD_CHARS_ONE_TOKEN`;
- long punctuation runs (~1 token per 3 characters);
- CJK / other wide-script characters (~1 token each), which cl100k rarely merges.

Calibrated against the real cl100k_base encoder (via the `bpe-openai` package, used only
offline) on 2,000 real prompts from /work/shared/data/routing/ (benchmarks/tokens_accuracy.py,
2026-11): total 0.995x the real count, per-prompt ratio p5 0.87 / p95 1.09; 0.74 words/token.
Speed there: ~6 MB/s of text (the Rust cl100k encoder in bpe-openai: ~17 MB/s). Counting is done with C-speed regex scans; the per-piece
Python work happens only for the rare long runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# cl100k: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
#         |\s*[\r\n]+|\s+(?!\S)|\s+
# Python's `re` has no \p{..}: a letter is [^\W\d_], a "not letter/number" is [^\w]|_.
_L = r"[^\W\d_]"
_PRETOKEN = re.compile(
    r"'(?i:[stmd]|re|ve|ll)"
    rf"|(?:[^\r\n\w]|_)?{_L}+"
    r"|\d{1,3}"
    r"| ?(?:[^\s\w]|_)+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

_WORD_CHARS_ONE_TOKEN = 9  # tuned: common English words up to ~9 letters are one token
_CHARS_PER_EXTRA_TOKEN = 4
_LONG_WORD = re.compile(rf"{_L}{{{_WORD_CHARS_ONE_TOKEN + 1},}}")
_PUNCT_CHARS_PER_TOKEN = 3
_LONG_PUNCT = re.compile(r"(?:[^\s\w]|_){4,}")
# Scripts that cl100k encodes at about one token per character (CJK, kana, hangul, ...).
_WIDE_RUN = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")

# OpenAI's chat format (cookbook "How to count tokens"): every message costs 3 tokens of
# framing plus its fields (the role itself is ~1 token, so ~4 per message), a `name` 1 more,
# and every reply is primed with 3 tokens.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3
TOKENS_PER_IMAGE = 85  # OpenAI's fixed cost of a low-detail image part


def count_tokens(text: str) -> int:
    """Approximate number of cl100k tokens in `text` (0 for the empty string)."""
    if not text:
        return 0
    n = len(_PRETOKEN.findall(text))
    if len(text) < _WORD_CHARS_ONE_TOKEN + 1:
        return n
    for match in _LONG_WORD.finditer(text):
        extra_chars = match.end() - match.start() - _WORD_CHARS_ONE_TOKEN
        n += -(-extra_chars // _CHARS_PER_EXTRA_TOKEN)
    for match in _LONG_PUNCT.finditer(text):
        n += (match.end() - match.start() - 1) // _PUNCT_CHARS_PER_TOKEN
    if not text.isascii():
        n += _non_latin_correction(text, n)
    return n


def _non_latin_correction(text: str, n: int) -> int:
    """Extra tokens for scripts the Latin-tuned rules undercount."""
    extra = 0
    for match in _WIDE_RUN.finditer(text):
        # The rules above gave this run 1 + ceil((len-8)/4) tokens; cl100k spends ~1 per char.
        length = match.end() - match.start()
        extra += length - 1 - max(0, -(-(length - _WORD_CHARS_ONE_TOKEN) // _CHARS_PER_EXTRA_TOKEN))
    if not extra and len(_NON_ASCII.findall(text)) * 2 > len(text):
        # Mostly non-Latin letters (Cyrillic, Greek, ...): cl100k uses ~3 chars/token.
        extra = max(0, len(text) // 3 - n)
    return extra


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_tokens(content)
    if isinstance(content, Iterable) and not isinstance(content, (bytes, Mapping)):
        n = 0
        for part in content:
            if isinstance(part, str):
                n += count_tokens(part)
            elif isinstance(part, Mapping):
                kind = part.get("type")
                if kind in ("image_url", "input_image", "image"):
                    n += TOKENS_PER_IMAGE
                elif isinstance(part.get("text"), str):
                    n += count_tokens(part["text"])
        return n
    return count_tokens(str(content))


def _tool_calls_tokens(tool_calls: Any) -> int:
    n = 0
    if not isinstance(tool_calls, list):
        return 0
    for call in tool_calls:
        fn = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(fn, Mapping):
            n += count_tokens(str(fn.get("name") or "")) + count_tokens(str(fn.get("arguments") or ""))
    return n


def count_chat_tokens(messages: list[dict]) -> int:
    """Approximate prompt tokens of a chat request's `messages` (OpenAI chat framing included)."""
    n = TOKENS_REPLY_PRIMING
    for message in messages:
        n += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                n += _content_tokens(value)
            elif key == "tool_calls":
                n += _tool_calls_tokens(value)
            elif isinstance(value, str):
                n += count_tokens(value)
                if key == "name":
                    n += TOKENS_PER_NAME
    return n


__all__ = ["count_tokens", "count_chat_tokens"]
