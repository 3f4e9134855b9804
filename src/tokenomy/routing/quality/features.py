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
  for multiple-choice questions and another for word problems;
- optionally (`format_experts`, the shipped default's layout) a gated mixture inside one linear
  model: the prompt's format (multiple choice, maths word problem, open; `formats.prompt_format`,
  read from the prompt's form, not its benchmark) selects an expert head. Every n-gram appears
  twice, in the shared table and in its format's table (scaled by `expert_scale`), and the dense
  block holds the shared shape features, then per format its shape + task + maths-difficulty
  features and an intercept (zero for the other formats); `expert_scale` 0 drops the per-format
  n-gram tables (n-grams shared, only the dense heads per format). Training fits shared and per-format
  weights together (feature augmentation, Daume 2007): a format with little data leans on the
  shared weights, one with much data learns its own. With `expert_shared` False the gate is hard:
  a prompt of an expert format reads only its head (the shipped default: one head, for maths word
  problems; see `lexical.train_gated`).
Very long prompts are read as their first and last `cap_chars` characters (the question is
usually at one end); the length features still see the full prompt.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from tokenomy.routing.quality.formats import FORMAT_NAMES, MATH_NAMES, math_features, prompt_format

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
# per-format dense block of `format_experts`: shape + task + maths difficulty + the format's intercept
EXPERT_DENSE_SIZE = len(DENSE_NAMES) + len(TASK_NAMES) + len(MATH_NAMES) + 1


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
    # gated mixture of per-format expert heads (see the module doc); replaces the options above
    format_experts: bool = False
    expert_scale: float = 1.0
    # the formats that get an expert head (prompts of the others use the shared weights only)
    expert_formats: tuple[str, ...] = FORMAT_NAMES
    # True: an expert-format prompt reads the shared weights plus its head (joint fit); False: its
    # head alone (a hard gate; `lexical.train_gated` fits the shared head on all rows, then each
    # expert head on its format's rows)
    expert_shared: bool = True

    def __post_init__(self) -> None:
        if self.format_experts and (self.format_gate or self.format_gate_ngrams or self.task_features):
            raise ValueError("format_experts has its own per-format blocks: do not combine it with "
                             "task_features, format_gate or format_gate_ngrams")
        if not self.expert_formats or len(set(self.expert_formats)) != len(self.expert_formats) or \
                not set(self.expert_formats) <= set(FORMAT_NAMES):
            raise ValueError(f"expert_formats must be distinct names among {', '.join(FORMAT_NAMES)}")

    def expert_slot(self, fmt: int) -> int | None:
        """Position of format `fmt`'s expert head, or None (no head: shared weights only)."""
        name = FORMAT_NAMES[fmt]
        return self.expert_formats.index(name) if self.format_experts and name in self.expert_formats else None

    @property
    def buckets(self) -> int:
        return 1 << self.buckets_log2

    @property
    def table_size(self) -> int:
        """Length of the n-gram weight vector: one table, or a shared one plus one per format
        (per-format n-gram tables only when `expert_scale` > 0)."""
        return self.buckets * (1 + len(self.expert_formats)) if self.expert_ngrams else self.buckets

    @property
    def expert_ngrams(self) -> bool:
        return self.format_experts and self.expert_scale > 0

    def to_json(self) -> dict:
        d = asdict(self)
        d["char_ngrams"] = list(self.char_ngrams)
        d["expert_formats"] = list(self.expert_formats)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "FeatureSpec":
        return cls(int(d["buckets_log2"]), tuple(int(x) for x in d["char_ngrams"]),
                   bool(d["word_bigrams"]), int(d["cap_chars"]), float(d.get("sparse_scale", 1.0)),
                   bool(d.get("task_features", False)), bool(d.get("format_gate", False)),
                   bool(d.get("format_gate_ngrams", False)), bool(d.get("format_experts", False)),
                   float(d.get("expert_scale", 1.0)), tuple(d.get("expert_formats", FORMAT_NAMES)),
                   bool(d.get("expert_shared", True)))

    @property
    def dense_size(self) -> int:
        if self.format_experts:
            return len(DENSE_NAMES) + len(self.expert_formats) * EXPERT_DENSE_SIZE
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
    idx = np.concatenate(idx_parts).astype(np.int64)
    val = np.concatenate(val_parts)
    if spec.format_gate_ngrams and is_multiple_choice(text):
        idx = (idx + spec.buckets // 2) & (spec.buckets - 1)
    slot = spec.expert_slot(prompt_format(_capped(text, spec.cap_chars))) if spec.expert_ngrams else None
    if slot is not None and spec.expert_shared:   # the same n-grams again, in this format's own table
        idx = np.concatenate([idx, idx + spec.buckets * (1 + slot)])
        val = np.concatenate([val, spec.expert_scale * val])
    elif slot is not None:                          # hard gate: this format's table only
        idx = idx + spec.buckets * (1 + slot)
        val = spec.expert_scale * val
    return idx, val


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
    if spec.format_experts:   # content features read the capped text, as the n-grams do
        head = _capped(text, spec.cap_chars)
        out = np.zeros(spec.dense_size)
        slot = spec.expert_slot(prompt_format(head))
        if slot is None or spec.expert_shared:
            out[:shape.size] = shape
        if slot is None:
            return out
        start = shape.size + slot * EXPERT_DENSE_SIZE
        out[start:start + EXPERT_DENSE_SIZE] = np.concatenate(
            [shape, DENSE_SCALE * task_features(head), DENSE_SCALE * math_features(head), [1.0]])
        return out
    if not (spec.task_features or spec.format_gate):
        return shape
    task = task_features(text) if spec.task_features else np.empty(0)
    plain = np.concatenate([shape, DENSE_SCALE * task])
    if not spec.format_gate:
        return plain
    mc = 1.0 if is_multiple_choice(text) else 0.0
    return np.concatenate([plain, plain * mc, plain * (1.0 - mc)])


def featurize_many(texts: list[str], spec: FeatureSpec):
    """Sparse CSR matrix (len(texts) x spec.table_size) and the dense matrix (len(texts) x spec.dense_size)."""
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
    x = sparse.csr_matrix((val, idx, np.asarray(indptr)), shape=(len(texts), spec.table_size))
    x.sum_duplicates()
    dense = np.array([router_dense(t, spec) for t in texts]).reshape(len(texts), spec.dense_size)
    return x, dense
