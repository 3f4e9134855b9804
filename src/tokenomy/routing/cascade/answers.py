"""Final answers of maths-style outputs: extraction, normalisation and k-sample agreement.

Extraction order (first that matches wins): GSM8K's ``#### N``, the last LaTeX ``\\boxed{...}``
(nested braces), an explicit "answer is / Answer: X", and finally the last number in the text.
Numbers are normalised (thousands separators, currency, trailing zeros) so "$1,000.00" and
"1000" agree.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_HASH_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_RE = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*([^\n]+)", re.IGNORECASE)
NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_BOXED = "\\boxed{"
_FRAC_RE = re.compile(r"\\d?frac\{(-?\d+)\}\{(\d+)\}")


def _boxed(text: str) -> str | None:
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    i, depth = start + len(_BOXED), 1
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def normalize_answer(raw: str) -> str:
    """Canonical form: a number as its shortest decimal, otherwise lower-cased words."""
    s = _FRAC_RE.sub(r"\1/\2", raw).strip().strip(".").strip()
    m = NUMBER_RE.search(s)
    if m:
        num = m.group(0).replace(",", "").replace("$", "")
        if "/" in num:
            a, b = num.split("/", 1)
            try:
                val = float(a) / float(b)
            except (ValueError, ZeroDivisionError):
                return num
        else:
            try:
                val = float(num)
            except ValueError:
                return num
        if val == int(val) and abs(val) < 1e15:
            return str(int(val))
        return f"{val:.6g}"
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def extract_final_answer(text: str) -> str | None:
    """The final answer of a maths-style output, normalised; None when nothing is found."""
    if not text:
        return None
    m = _HASH_RE.findall(text)
    if m:
        return normalize_answer(m[-1]) or None
    b = _boxed(text)
    if b is not None:
        return normalize_answer(b) or None
    m = _ANSWER_RE.findall(text)
    if m:
        ans = normalize_answer(m[-1])
        if ans:
            return ans
    nums = NUMBER_RE.findall(text)
    return normalize_answer(nums[-1]) if nums else None


def agreement(answers: Sequence[str | None]) -> tuple[str | None, float]:
    """(majority answer, share of the k samples that gave it); a missing answer never agrees."""
    k = len(answers)
    if k == 0:
        return None, 0.0
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0.0
    # most_common is stable (first seen wins ties), so the result is deterministic
    best, n = counts.most_common(1)[0]
    return best, n / k
