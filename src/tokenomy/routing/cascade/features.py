"""Features of an answer given its prompt, for the learned answer-quality verifier.

Fast (numpy + re, well under a millisecond for typical answers) and deliberately generic, so
the verifier transfers to prompt sets and models it never saw: nothing looks at the prompt's
words (that would learn which benchmark a prompt comes from). Dense features describe the
answer's shape: length and length ratio, refusals / apologies / hedges, repetition,
truncation, a final numeric answer and the correctness of the arithmetic it shows (for prompts
with numbers), self-corrections, formatting, overlap with the prompt. Hashed word uni/bigrams
of the answer (reusing the quality router's hashing) add style cues when AnswerSpec.ngram_scale
> 0: off in the shipped default (they learn the training answers' style), on in IN_DOMAIN_SPEC.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from tokenomy.routing.cascade.answers import NUMBER_RE, extract_final_answer
from tokenomy.routing.quality.features import FeatureSpec, sparse_features

# (name, prior sign): -1 / +1 constrain the learned weight to that sign ("a refusal never makes
# an answer better"), 0 leaves it free. Sign priors are what lets the verifier transfer: a
# feature that is rare in the training source cannot pick up a spurious sign there. Features
# whose meaning differs between maths and open-ended prompts (length, formatting, a stated
# final answer) come in two copies, gated by whether the prompt has numbers ("m_" / "o_").
_GENERIC = (
    ("short_answer", -1), ("refusal", -1), ("apology", -1), ("hedge", -1), ("as_an_ai", 0),
    ("repeat_3gram", -1), ("type_token", 0), ("truncated", -1), ("math_prompt", 0),
    ("math_ends_number", +1), ("math_eq_checked", 0), ("math_eq_wrong_any", -1), ("math_eq_wrong_share", -1),
    ("self_correction", -1), ("approximation", -1), ("has_code", 0), ("code_prompt_has_code", +1),
    ("code_prompt_no_code", -1), ("prompt_coverage", +1), ("question_share", -1), ("script_mismatch", -1),
    ("math_answers_disagree", -1),
)
_GATED = ("log_answer_chars", "log_len_ratio", "final_marker", "newline_density", "list_share", "copy_share",
          "log_numbers", "log_prompt_chars")
# A longer answer to an open-ended prompt is judged better: judges of open-ended answers
# reward length (Dubois et al. 2024, "Length-Controlled AlpacaEval"), and so do the soft
# labels here. Held at 0 before, the verifier could not use it and ranked AlpacaEval answers
# below the bare answer-length baseline; with the prior, leave-one-source-out AlpacaEval
# 0.616 -> 0.647 and, on answers of models outside the training pool (Yi-34B, tulu-2-70b,
# llama-2-70b, claude-2, mistral-medium), higher APGR for each; GSM8K 0.650 -> 0.614, still
# above prompt-only 0.602 (same n-gram scale and C as before; shipped figures with the current
# AnswerSpec: artifacts/cascade_default.npz.report.json, 2026-12-08).
_GATED_SIGN = {"m_final_marker": +1, "o_log_answer_chars": +1}
DENSE_NAMES = tuple([n for n, _ in _GENERIC] + [f"m_{n}" for n in _GATED] + [f"o_{n}" for n in _GATED])
DENSE_SIGNS = tuple([s for _, s in _GENERIC] + [_GATED_SIGN.get(f"m_{n}", 0) for n in _GATED]
                    + [_GATED_SIGN.get(f"o_{n}", 0) for n in _GATED])
_CAP = 2000  # answers are read as their first and last _CAP chars

# Phrase groups, matched in ONE pass over the lower-cased answer (one alternation with named
# groups is several times faster than a case-insensitive scan per group).
_PHRASES = {
    "refusal": r"i can(?:no|')t|i cannot|i'm (?:not able|unable)|i am (?:not able|unable)|i won't|i will not|"
               r"not appropriate|against my|i must decline|can't (?:help|assist|provide)|"
               r"cannot (?:help|assist|provide|fulfill|fulfil)|unable to (?:help|assist|provide)",
    "apology": r"i apologi[sz]e|i'm sorry|i am sorry|sorry,|my apologies",
    "hedge": r"i'm not sure|i am not sure|not certain|i don't know|i do not know|it depends|"
             r"i don't have (?:access|information|enough)|i do not have|may not be accurate|"
             r"difficult to (?:say|determine)|impossible to (?:say|determine|know)",
    "as_ai": r"as an ai|as a language model|ai language model|as an assistant",
    "self_corr": r"(?:however|wait|actually|mistake|correction|re-?evaluate|recalculate|let me re|let's re|"
                 r"i made an error|on second thought|instead)\b",
    "approx": r"(?:approximately|round(?:ed|ing)? (?:up|down|to)|can(?:no|')t have|cannot have|not possible|"
              r"doesn't make sense|does not make sense|assume|assuming)\b",
}
_PHRASE_RE = re.compile(r"\b(?:" + "|".join(f"(?P<{k}>{v})" for k, v in _PHRASES.items()) + r")")


def phrase_counts(lower_text: str) -> dict[str, int]:
    counts = dict.fromkeys(_PHRASES, 0)
    for m in _PHRASE_RE.finditer(lower_text):
        counts[m.lastgroup] += 1
    return counts


_FINAL = re.compile(r"####|\\boxed|answer is|answer:|final answer|therefore|the total")
_CODE_PROMPT = re.compile(r"\b(?:code|function|program|script|python|javascript|sql|regex|java|c\+\+|html|"
                          r"implement|algorithm|bash)\b", re.I)
_WORD = re.compile(r"[a-z0-9']+")
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.M)
_CALC = re.compile(r"<<([^=<>]+)=([^<>]+)>>")
_NUM = r"\$?\(?\d[\d,]*(?:\.\d+)?\)?"
_INLINE = re.compile(rf"({_NUM}(?:\s*[-+*/x×÷]\s*{_NUM})+)\s*=\s*\$?(-?\d[\d,]*(?:\.\d+)?)")
_SAFE_EXPR = re.compile(r"^[\d.\s+\-*/()]+$")


def _capped(text: str) -> str:
    return text if len(text) <= 2 * _CAP else text[:_CAP] + "\n" + text[-_CAP:]


def _safe_eval(expr: str) -> float | None:
    e = expr.replace(",", "").replace("$", "").replace("×", "*").replace("x", "*").replace("÷", "/")
    if not _SAFE_EXPR.match(e) or "**" in e or len(e) > 120:
        return None
    try:
        return float(eval(e, {"__builtins__": {}}, {}))  # noqa: S307 - digits/operators only (checked)
    except (SyntaxError, ZeroDivisionError, TypeError, ValueError, OverflowError):
        return None


def arithmetic_checks(text: str) -> tuple[int, int]:
    """(checked, wrong): equations `a op b = c` and calculator marks `<<a*b=c>>` in the text."""
    checked = wrong = 0
    # distinct equations only (a looping answer repeats them), at most 40: bounded latency
    for lhs, rhs in list(dict.fromkeys([*_CALC.findall(text), *_INLINE.findall(text)]))[:40]:
        val = _safe_eval(lhs)
        try:
            res = float(rhs.replace(",", "").replace("$", "").strip())
        except ValueError:
            continue
        if val is None:
            continue
        checked += 1
        if abs(val - res) > max(0.011, 0.005 * abs(res)):  # tolerate rounding to cents / 0.5%
            wrong += 1
    return checked, wrong


def _cap(n: int, cap: float = 3.0) -> float:
    return min(n, cap) / cap


def dense_features(prompt: str, answer: str) -> np.ndarray:
    a = _capped(answer)
    p = _capped(prompt)
    stripped = a.strip()
    la, lp = len(answer), len(prompt)
    al = a.lower()
    words = _WORD.findall(al)
    ph = phrase_counts(al)
    nw = len(words)
    if nw >= 4:
        tri = list(zip(words, words[1:], words[2:]))
        repeat = 1.0 - len(set(tri)) / len(tri)
    else:
        repeat = 0.0
    head = words[:400]
    ttr = len(set(head)) / len(head) if head else 0.0
    last = stripped[-1:] if stripped else ""
    truncated = 1.0 if stripped and last not in '.!?)"\'`]*|>:' and not last.isdigit() else 0.0

    p_numbers = NUMBER_RE.findall(p)
    math_p = 1.0 if len(p_numbers) >= 2 else 0.0
    a_numbers = NUMBER_RE.findall(a)
    ends_number = 1.0 if NUMBER_RE.search(stripped[-60:]) else 0.0
    checked, wrong = arithmetic_checks(a) if math_p else (0, 0)
    if math_p:
        # a final-answer marker that disagrees with the last number: the model changed its mind
        final = extract_final_answer(a[-1500:])
        last_num = extract_final_answer(a_numbers[-1]) if a_numbers else None
        disagree = 1.0 if final is not None and last_num is not None and final != last_num else 0.0
    else:
        disagree = 0.0

    lines = [ln for ln in a.split("\n") if ln.strip()]
    list_share = len(_LIST_LINE.findall(a)) / len(lines) if lines else 0.0
    has_code = 1.0 if "```" in a or re.search(r"^\s{4}\S", a, re.M) else 0.0
    code_p = 1.0 if _CODE_PROMPT.search(p) else 0.0

    p_words = {w for w in _WORD.findall(p.lower()) if len(w) > 3}
    a_set = set(words)
    coverage = len(p_words & a_set) / len(p_words) if p_words else 0.0
    copy = sum(1 for w in words if w in p_words) / nw if nw else 0.0
    sentences = max(a.count(".") + a.count("?") + a.count("!"), 1)

    def non_ascii(t: str) -> float:
        return 0.0 if t.isascii() else sum(1 for c in t[:2000] if ord(c) > 127) / min(len(t), 2000)


    generic = [
        1.0 if len(stripped) < 30 else 0.0,
        _cap(ph["refusal"]), _cap(ph["apology"]), _cap(ph["hedge"]), _cap(ph["as_ai"]),
        repeat, ttr, truncated, math_p, math_p * ends_number,
        math_p * math.log1p(checked) / 3.0, 1.0 if wrong else 0.0, wrong / checked if checked else 0.0,
        _cap(ph["self_corr"], 4.0), _cap(ph["approx"]),
        has_code, code_p * has_code, code_p * (1.0 - has_code),
        coverage, min(a.count("?") / sentences, 1.0),
        min(abs(non_ascii(a) - non_ascii(p)) * 5.0, 1.0), disagree,
    ]
    gated = np.array([
        math.log1p(la) / 10.0,
        max(-5.0, min(5.0, math.log((la + 1) / (lp + 1)))) / 5.0,
        1.0 if _FINAL.search(al[-400:]) else 0.0,
        min(a.count("\n") / max(nw, 1) * 5.0, 1.0),
        list_share, copy,
        math.log1p(len(a_numbers)) / 4.0,
        math.log1p(lp) / 10.0,
    ])
    return np.concatenate([np.array(generic), math_p * gated, (1.0 - math_p) * gated])


@dataclass(frozen=True, slots=True)
class AnswerSpec:
    """Feature settings stored in the artifact (serving recomputes exactly these).

    The default is the transfer design: only sign-prior features get a weight (free ones are
    held at 0) and no answer n-grams. Chosen by leave-one-source-out on the shared data over
    n-gram scale {0, 0.05, 0.1, 0.2} x C {0.25, 0.5, 2} (2026-12-08): the mean over held-out
    sources is 0.615-0.635, best with no n-grams and C = 2 (AlpacaEval 0.653, GSM8K 0.617); more
    n-grams fit unseen models of the training source better and GSM8K held out worse (0.2, C 2:
    0.582), i.e. they learn the training answers' style. IN_DOMAIN_SPEC uses them all, for
    training on one's own traffic.
    """

    buckets_log2: int = 14
    ngram_scale: float = 0.0
    cap_chars: int = 1000
    free_dense: bool = False

    @property
    def buckets(self) -> int:
        return 1 << self.buckets_log2

    @property
    def ngram_spec(self) -> FeatureSpec:
        return FeatureSpec(self.buckets_log2, (), True, self.cap_chars)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "AnswerSpec":
        return cls(int(d["buckets_log2"]), float(d["ngram_scale"]), int(d["cap_chars"]),
                   bool(d.get("free_dense", False)))


IN_DOMAIN_SPEC = AnswerSpec(ngram_scale=0.5, free_dense=True)


def answer_ngrams(answer: str, spec: AnswerSpec) -> tuple[np.ndarray, np.ndarray]:
    if spec.ngram_scale == 0.0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    idx, val = sparse_features(answer, spec.ngram_spec)
    return idx, val * spec.ngram_scale


def featurize_many(prompts: list[str], answers: list[str], spec: AnswerSpec):
    """(sparse CSR n-grams, dense matrix) for training."""
    from scipy import sparse

    indptr = [0]
    idx_all, val_all = [], []
    for a in answers:
        i, v = answer_ngrams(a, spec)
        idx_all.append(i)
        val_all.append(v)
        indptr.append(indptr[-1] + i.size)
    idx = np.concatenate(idx_all) if idx_all else np.empty(0, dtype=np.int64)
    val = np.concatenate(val_all) if val_all else np.empty(0)
    x = sparse.csr_matrix((val, idx, np.asarray(indptr)), shape=(len(answers), spec.buckets))
    x.sum_duplicates()
    dense = np.array([dense_features(p, a) for p, a in zip(prompts, answers)]).reshape(len(answers), len(DENSE_NAMES))
    return x, dense
