"""Hashed lexical features of a prompt, computed with numpy and zlib only.

The same function feeds training (scipy sparse rows) and serving (a dot product with a weight
vector), so the two cannot drift. Features, each group scaled by 1/sqrt(its count) so a long
prompt does not dominate:
- word unigrams and bigrams (lower-cased \\w+ runs and single punctuation marks);
- character 3..5-grams of the lower-cased UTF-8 bytes;
- a few dense shape features (length, digits, newlines, code fences, math symbols);
- optionally (`task_features`) general task-shape features: the length baseline's own score,
  quantities, multi-step cues, sentences, option count; and (`format_gate`) every dense feature
  again, split by prompt format (multiple choice or free form), so e.g. length can have one slope
  for multiple-choice questions and another for word problems.
Very long prompts are read as their first and last `cap_chars` characters (the question is
usually at one end); the length features still see the full prompt.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import asdict, dataclass

import numpy as np

_WORD_RE = re.compile(r"\w+|[^\w\s]")
_MASK32 = np.uint64(0xFFFFFFFF)
_PRIME = np.uint64(16777619)
_BIGRAM_MUL = np.uint64(1000003)
DENSE_NAMES = ("log_chars", "log_words", "digit_share", "log_lines", "has_code", "math_share", "log_numbers",
               "log_sentences")
# Dense features are few and informative; scaling them up means the shared L2 penalty shrinks
# them less than the tens of thousands of sparse n-gram weights.
DENSE_SCALE = 5.0
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_DIGIT_RE = re.compile(r"\d")
TASK_NAMES = ("length_score", "log_quantities", "log_distinct_quantities", "log_step_cues", "log_sentence_ends",
              "option_count", "is_multiple_choice", "log_money_percent", "log_longest_number")
_QUANTITY_RE = re.compile(r"\d+(?:[.,]\d+)?")
_OPTION_RE = re.compile(r"(?m)^\s*\(?[A-Ja-j][.)]\s")
# words that chain steps in a word problem or instruction (general English, not one benchmark's)
_STEP_CUE_RE = re.compile(r"\b(each|per|every|total|remaining|left|more than|less than|times|twice|half|percent|"
                          r"after|then|if|how many|how much|average|rate|profit|cost|costs)\b")
_SENTENCE_END_RE = re.compile(r"[.?!](?:\s|$)")


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    buckets_log2: int = 16
    char_ngrams: tuple[int, ...] = (3, 4)
    word_bigrams: bool = True
    cap_chars: int = 2048
    # Multiplies every n-gram value: below 1 the shared L2 penalty holds the n-gram weights
    # back relative to the dense shape features (n-grams fit the training sources, shapes transfer).
    sparse_scale: float = 0.3
    # Extra dense groups (see module doc); off by default so older artifacts and the MF router
    # (which reads only the shape features) keep their meaning.
    task_features: bool = False
    format_gate: bool = False
    # n-grams of multiple-choice prompts index the other half of the table (buckets shifted by
    # half), so a word's weight in an MC question is learned apart from the same word in free form
    format_gate_ngrams: bool = False

    @property
    def buckets(self) -> int:
        return 1 << self.buckets_log2

    def to_json(self) -> dict:
        d = asdict(self)
        d["char_ngrams"] = list(self.char_ngrams)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "FeatureSpec":
        return cls(int(d["buckets_log2"]), tuple(int(x) for x in d["char_ngrams"]),
                   bool(d["word_bigrams"]), int(d["cap_chars"]), float(d.get("sparse_scale", 1.0)),
                   bool(d.get("task_features", False)), bool(d.get("format_gate", False)),
                   bool(d.get("format_gate_ngrams", False)))

    @property
    def dense_size(self) -> int:
        base = len(DENSE_NAMES) + (len(TASK_NAMES) if self.task_features else 0)
        return base * 3 if self.format_gate else base


def _capped(text: str, cap: int) -> str:
    return text if len(text) <= 2 * cap else text[:cap] + "\n" + text[-cap:]


def _char_ngram_hashes(data: np.ndarray, n: int) -> np.ndarray:
    """Polynomial rolling hash (mod 2^32) of every n-byte window, vectorised."""
    m = data.size - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.full(m, np.uint64(n * 0x9E3779B1 & 0xFFFFFFFF), dtype=np.uint64)
    for j in range(n):
        h = ((h * _PRIME) & _MASK32) ^ data[j:j + m]
    return h


def sparse_features(text: str, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """(bucket indices, values) of the hashed features; indices may repeat (values add up)."""
    low = _capped(text, spec.cap_chars).lower()
    mask = np.uint64(spec.buckets - 1)
    idx_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []

    words = _WORD_RE.findall(low)
    if words:
        wh = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64,
                         count=len(words))
        groups = [wh]
        if spec.word_bigrams and len(words) > 1:
            groups.append(((wh[:-1] * _BIGRAM_MUL) & _MASK32) ^ (wh[1:] + np.uint64(0x5BD1E995)))
        for g in groups:
            idx_parts.append(g & mask)
            val_parts.append(np.full(g.size, spec.sparse_scale / math.sqrt(g.size)))

    data = np.frombuffer(low.encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    for n in spec.char_ngrams:
        h = _char_ngram_hashes(data, n)
        if h.size:
            # mix before masking so low bits depend on every byte
            h = (h * np.uint64(0x85EBCA6B)) & _MASK32
            h ^= h >> np.uint64(13)
            idx_parts.append(h & mask)
            val_parts.append(np.full(h.size, spec.sparse_scale / math.sqrt(h.size)))

    if not idx_parts:
        return np.empty(0, dtype=np.int64), np.empty(0)
    idx = np.concatenate(idx_parts)
    if spec.format_gate_ngrams and is_multiple_choice(text):
        idx = (idx + np.uint64(spec.buckets // 2)) & mask
    return idx.astype(np.int64), np.concatenate(val_parts)


def dense_features(text: str, cap_chars: int = 2048) -> np.ndarray:
    """Shape features of the prompt, each roughly in [0, 1] before DENSE_SCALE. Lengths see the
    whole prompt; the content shares see the same capped text as the n-grams."""
    head = _capped(text, cap_chars)
    n = max(len(head), 1)
    maths = sum(head.count(c) for c in "=+*/^<>%$\\")
    return DENSE_SCALE * np.array([
        math.log1p(len(text)) / 10.0,
        math.log1p(text.count(" ") + text.count("\n")) / 8.0,
        min(len(_DIGIT_RE.findall(head)) / n * 5.0, 1.0),
        math.log1p(text.count("\n")) / 5.0,
        1.0 if ("```" in head or "def " in head or "{" in head) else 0.0,
        min(maths / n * 20.0, 1.0),
        math.log1p(len(_NUMBER_RE.findall(head))) / 3.0,
        math.log1p(head.count(".") + head.count("?")) / 3.0,
    ])


def is_multiple_choice(text: str) -> bool:
    """Two or more lettered option lines ("A. ...", "(b) ...")."""
    return len(_OPTION_RE.findall(text)) >= 2


def task_features(text: str) -> np.ndarray:
    """General task-shape features, each roughly in [0, 1] (unscaled). `is_multiple_choice` (two or
    more lettered option lines) is also the format gate."""
    nums = _QUANTITY_RE.findall(text)
    options = len(_OPTION_RE.findall(text))
    return np.array([
        1.0 - math.exp(-len(text) / 1000.0),     # the `length` baseline's score, as an input
        math.log1p(len(nums)) / 3.0,
        math.log1p(len(set(nums))) / 3.0,
        math.log1p(len(_STEP_CUE_RE.findall(text.lower()))) / 3.0,
        math.log1p(len(_SENTENCE_END_RE.findall(text))) / 3.0,
        min(options, 10) / 10.0,
        1.0 if options >= 2 else 0.0,
        math.log1p(text.count("$") + text.count("%")) / 2.0,
        math.log1p(max((len(x) for x in nums), default=0)) / 2.0,
    ])


def router_dense(text: str, spec: FeatureSpec) -> np.ndarray:
    """The dense block the lexical router uses under `spec` (length `spec.dense_size`)."""
    shape = dense_features(text, spec.cap_chars)
    if not (spec.task_features or spec.format_gate):
        return shape
    task = task_features(text) if spec.task_features else np.empty(0)
    plain = np.concatenate([shape, DENSE_SCALE * task])
    if not spec.format_gate:
        return plain
    mc = 1.0 if is_multiple_choice(text) else 0.0
    return np.concatenate([plain, plain * mc, plain * (1.0 - mc)])


def featurize_many(texts: list[str], spec: FeatureSpec):
    """Sparse CSR matrix (len(texts) x buckets) and the dense matrix (len(texts) x len(DENSE_NAMES))."""
    from scipy import sparse

    indptr = [0]
    idx_all, val_all = [], []
    for t in texts:
        i, v = sparse_features(t, spec)
        idx_all.append(i)
        val_all.append(v)
        indptr.append(indptr[-1] + i.size)
    idx = np.concatenate(idx_all) if idx_all else np.empty(0, dtype=np.int64)
    val = np.concatenate(val_all) if val_all else np.empty(0)
    x = sparse.csr_matrix((val, idx, np.asarray(indptr)), shape=(len(texts), spec.buckets))
    x.sum_duplicates()
    dense = np.array([router_dense(t, spec) for t in texts]).reshape(len(texts), spec.dense_size)
    return x, dense
