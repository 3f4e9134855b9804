"""Redaction of captured prompts and responses: secrets and personal data replaced by a marker
before anything is written. Default patterns: API keys (tokenomy `tk-`, OpenAI/Anthropic `sk-`,
AWS access key ids, bearer tokens), e-mail addresses and payment card numbers (13-19 digits that
pass the Luhn check, with spaces or dashes). Users add their own regular expressions."""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_PATTERNS: dict[str, str] = {
    "api_key": r"\b(?:tk|sk|sk-ant|sk-proj|rk)-[A-Za-z0-9_\-]{12,}\b|\bAKIA[0-9A-Z]{16}\b",
    "bearer": r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{12,}=*",
    "email": r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b",
}
_CARD = re.compile(r"\b(?:\d[ \-]?){12,18}\d\b")


def _luhn(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        alt = not alt
    return total % 10 == 0


class Redactor:
    def __init__(self, extra: Iterable[str] = (), *, defaults: bool = True):
        pats = dict(DEFAULT_PATTERNS) if defaults else {}
        for i, p in enumerate(extra):
            pats[f"custom{i + 1}"] = p
        self.patterns = [(name, re.compile(p)) for name, p in pats.items()]

    def __call__(self, text: str) -> str:
        for name, rx in self.patterns:
            text = rx.sub(f"[REDACTED:{name}]", text)

        def card(m: re.Match) -> str:
            digits = re.sub(r"\D", "", m.group(0))
            return "[REDACTED:card]" if 13 <= len(digits) <= 19 and _luhn(digits) else m.group(0)

        return _CARD.sub(card, text)
