"""Prompt formats (the lexical router's gate) and difficulty features of maths word problems.

The gate reads only the prompt's form, never which benchmark it came from, so it applies to any
prompt set:
- `MULTIPLE_CHOICE`: two or more lettered option lines ("A. ...", "(b) ...");
- `MATH_WORD_PROBLEM`: short prose (no code, few lines) with two or more quantities (digits or
  number words), a question or an imperative such as "calculate" near the end, and a
  quantitative cue (how many/much, total, per, percent, $, times, half...);
- `OPEN`: everything else (chat, writing, coding, long documents).

`math_features` are difficulty cues of word problems that hold beyond one benchmark: how many
quantities and steps, fractions, percentages, decimals, unit families (a conversion), relational
comparisons ("three times as many", "older than"), sequencing words, the largest number.
Each is roughly in [0, 1].
"""

from __future__ import annotations

import math
import re

import numpy as np

MULTIPLE_CHOICE, MATH_WORD_PROBLEM, OPEN = 0, 1, 2
FORMAT_NAMES = ("multiple_choice", "math_word_problem", "open")

_OPTION_RE = re.compile(r"(?m)^\s*\(?[A-Ja-j][.)]\s")
_NUMWORD = (r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
            r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|"
            r"million|dozen|twice|thrice|double|triple|half|third|thirds|quarter|quarters|fourth|fifth")
_QTY_RE = re.compile(r"\d+(?:[.,/]\d+)*|\b(?:" + _NUMWORD + r")\b", re.I)
_QCUE_RE = re.compile(r"\b(?:how (?:many|much|long|far|old|tall|high|big|fast|often)|total|sum|average|mean|each|per|"
                      r"percent|difference|remaining|left|combined|altogether|together|profit|cost|costs|price|speed|"
                      r"rate|times|twice|half|percentage|weight|temperature)\b|[$%]", re.I)
_ASK_RE = re.compile(r"\?|\b(?:find|calculate|compute|determine|solve|work out|estimate)\b", re.I)
_MAX_WORD_PROBLEM_CHARS = 2000


def option_count(text: str) -> int:
    return len(_OPTION_RE.findall(text))


def prompt_format(text: str) -> int:
    """MULTIPLE_CHOICE, MATH_WORD_PROBLEM or OPEN (see the module doc)."""
    if option_count(text) >= 2:
        return MULTIPLE_CHOICE
    if len(text) > _MAX_WORD_PROBLEM_CHARS or "```" in text or text.count("\n") > 6:
        return OPEN
    if len(_QTY_RE.findall(text)) >= 2 and _ASK_RE.search(text[-400:]) and _QCUE_RE.search(text):
        return MATH_WORD_PROBLEM
    return OPEN


_UNIT_RES = tuple(re.compile(p, re.I) for p in (
    r"\b(?:seconds?|minutes?|hours?|days?|weeks?|months?|years?|decades?)\b",
    r"\b(?:inch(?:es)?|feet|foot|yards?|miles?|met(?:er|re)s?|centimet(?:er|re)s?|kilomet(?:er|re)s?|km|cm)\b",
    r"\b(?:pounds?|ounces?|grams?|kilograms?|kg|lbs?|tons?)\b",
    r"\b(?:lit(?:er|re)s?|gallons?|quarts?|pints?|cups?|ml)\b",
    r"\$|\b(?:dollars?|cents?|euros?)\b",
))
_FRACTION_RE = re.compile(r"\d+/\d+|\b(?:half|halves|third|thirds|quarter|quarters|fourth|fourths|fifth|fifths|"
                          r"tenth)\b", re.I)
_PERCENT_RE = re.compile(r"%|\bpercent(?:age)?\b", re.I)
_DECIMAL_RE = re.compile(r"\d\.\d")
_COMPARE_RE = re.compile(r"\b(?:more than|less than|fewer than|times as|as many|as much|twice|thrice|double|triple|"
                         r"older|younger|taller|shorter|longer|faster|slower)\b", re.I)
_SEQUENCE_RE = re.compile(r"\b(?:then|after|before|remaining|rest|left|later|next|first|second|third|finally|each|"
                          r"every|per)\b", re.I)
_SENTENCE_RE = re.compile(r"[.?!](?:\s|$)")
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_WORD_RE = re.compile(r"\w+")
MATH_NAMES = ("log_quantities", "log_distinct_numbers", "log_sentences", "log_words", "fractions", "percents",
              "decimals", "unit_families", "log_comparisons", "log_sequence_words", "log_max_number", "log_questions")


def _max_number(numbers: list[str]) -> float:
    best = 0.0
    for x in numbers:
        try:
            best = max(best, float(x.replace(",", "")))
        except ValueError:       # "1.2.3": not one number
            continue
    return best


def math_features(text: str) -> np.ndarray:
    """Difficulty cues of a maths word problem (len(MATH_NAMES) values, each roughly in [0, 1])."""
    numbers = _NUMBER_RE.findall(text)
    return np.array([
        math.log1p(len(_QTY_RE.findall(text))) / 3.0,
        math.log1p(len(set(numbers))) / 3.0,
        math.log1p(len(_SENTENCE_RE.findall(text))) / 3.0,
        math.log1p(len(_WORD_RE.findall(text))) / 6.0,
        min(len(_FRACTION_RE.findall(text)), 3) / 3.0,
        min(len(_PERCENT_RE.findall(text)), 3) / 3.0,
        min(len(_DECIMAL_RE.findall(text)), 3) / 3.0,
        sum(1 for r in _UNIT_RES if r.search(text)) / 3.0,
        math.log1p(len(_COMPARE_RE.findall(text))) / 2.0,
        math.log1p(len(_SEQUENCE_RE.findall(text))) / 3.0,
        min(math.log10(1.0 + _max_number(numbers)) / 6.0, 2.0),
        math.log1p(text.count("?")) / 2.0,
    ])
