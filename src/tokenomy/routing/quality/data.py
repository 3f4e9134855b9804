"""Evaluation rows in RouteLLM's format and loaders for the shared routing data.

A row is one prompt with the quality (in [0, 1]) the weak and the strong model reached on it:
``{"id", "prompt", "weak", "strong"}`` plus an optional ``"source"`` (benchmark name) used for
leave-one-source-out validation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenomy.errors import TokenomyError

# AlpacaEval 1 entries that must not be used (see shared/data/README.md): the falcon AE1
# annotations are duplicated in the source, NullModel is adversarial.
ALPACAEVAL_EXCLUDED = frozenset({"falcon-7b-instruct", "falcon-40b-instruct", "NullModel"})
ALPACAEVAL_DEFAULT_WEAK = "llama-2-7b-chat-hf"
ALPACAEVAL_DEFAULT_STRONG = "gpt4"


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    prompt: str
    weak: float
    strong: float
    source: str = ""

    def to_json(self) -> dict:
        out = {"id": self.id, "prompt": self.prompt, "weak": self.weak, "strong": self.strong}
        if self.source:
            out["source"] = self.source
        return out


def _row_from_obj(obj: dict, where: str) -> Row:
    try:
        weak, strong = float(obj["weak"]), float(obj["strong"])
        row = Row(str(obj["id"]), str(obj["prompt"]), weak, strong, str(obj.get("source") or ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenomyError(f"{where}: need id, prompt, weak, strong ({exc!r})") from None
    if not (0.0 <= weak <= 1.0 and 0.0 <= strong <= 1.0):
        raise TokenomyError(f"{where}: weak/strong quality must be in [0, 1]")
    return row


def read_rows(path: Path | str) -> list[Row]:
    """Read evaluation rows from a JSONL file (blank lines ignored)."""
    return read_jsonl_rows(path, _row_from_obj)


def read_jsonl_rows(path: Path | str, parse) -> list:
    """Rows of a JSONL file, each built by `parse(obj, "file:line")`; clear errors, blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise TokenomyError(f"no such data file: {path}")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TokenomyError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
            rows.append(parse(obj, f"{path}:{n}"))
    if not rows:
        raise TokenomyError(f"{path}: no rows")
    return rows


def write_rows(rows: Iterable, path: Path | str) -> int:
    """Write rows (anything with to_json()) as JSONL; returns the count."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def _jsonl(path: Path) -> Iterator[dict]:
    if not path.is_file():
        raise TokenomyError(f"no such file: {path}")
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def convert_routellm(path: Path | str) -> list[Row]:
    """RouteLLM MMLU/GSM8K correctness (Mixtral-8x7B weak, GPT-4-1106 strong); drops contaminated."""
    rows = []
    for obj in _jsonl(Path(path)):
        if obj.get("contaminated"):
            continue
        bench = obj["benchmark"]
        rows.append(Row(f"{bench}/{obj['subset']}/{obj['idx']}", obj["prompt"],
                        float(obj["weak"]), float(obj["strong"]), bench))
    return rows


def alpacaeval_models(path: Path | str, field: str = "ae1_win_vs_davinci003") -> list[str]:
    """Models with scores in `field`, minus the excluded entries, sorted."""
    seen: set[str] = set()
    for obj in _jsonl(Path(path)):
        seen.update(obj.get(field) or {})
    return sorted(seen - ALPACAEVAL_EXCLUDED)


def convert_alpacaeval(path: Path | str, weak: str = ALPACAEVAL_DEFAULT_WEAK,
                       strong: str = ALPACAEVAL_DEFAULT_STRONG,
                       field: str = "ae1_win_vs_davinci003") -> list[Row]:
    """AlpacaEval per-instruction scores of two models of a size ladder (rows lacking either dropped)."""
    for name in (weak, strong):
        if name in ALPACAEVAL_EXCLUDED:
            raise TokenomyError(f"model '{name}' is excluded from AlpacaEval data (unreliable source entry)")
    known = alpacaeval_models(path, field)
    for name in (weak, strong):
        if name not in known:
            from tokenomy.errors import UnknownNameError

            raise UnknownNameError("AlpacaEval model", name, known)
    rows = []
    for i, obj in enumerate(_jsonl(Path(path))):
        scores = obj.get(field) or {}
        w, s = scores.get(weak), scores.get(strong)
        if w is None or s is None:
            continue
        rows.append(Row(f"alpacaeval/{obj.get('dataset', '')}/{i}", obj["instruction"],
                        float(w), float(s), "alpacaeval"))
    return rows


@dataclass(frozen=True, slots=True)
class QualityMatrix:
    """Prompts x models quality matrix (NaN = missing) for the multi-model router."""

    prompts: list[str]
    models: list[str]
    scores: "object"  # numpy float array, shape (len(prompts), len(models)), NaN where unknown


def load_alpacaeval_matrix(path: Path | str, field: str = "ae1_win_vs_davinci003") -> QualityMatrix:
    import numpy as np

    models = alpacaeval_models(path, field)
    col = {m: j for j, m in enumerate(models)}
    prompts, mat = [], []
    for obj in _jsonl(Path(path)):
        row = np.full(len(models), np.nan)
        for m, v in (obj.get(field) or {}).items():
            if v is not None and m in col:
                row[col[m]] = float(v)
        prompts.append(obj["instruction"])
        mat.append(row)
    return QualityMatrix(prompts, models, np.array(mat))


# Size ladders for group labels (AlpacaEval 1, GPT-4 judge vs text-davinci-003). One pair of models
# is a noisy 0/1 per prompt; the mean over a group of small models vs a group of large ones is a
# graded "how much does a stronger model help here" on the same scale as RouteLLM's correctness gap.
ALPACAEVAL_WEAK_GROUP = ("llama-2-7b-chat-hf", "tulu-2-dpo-7b", "zephyr-7b-beta", "zephyr-7b-alpha", "alpaca-7b",
                         "minichat-3b", "minichat-1.5-3b", "phi-2-dpo", "phi-2-sft")
ALPACAEVAL_STRONG_GROUP = ("gpt4", "gpt4_0314", "gpt4_1106_preview", "claude-2", "llama-2-70b-chat-hf",
                           "tulu-2-dpo-70b", "mistral-medium", "Yi-34B-Chat")


def convert_alpacaeval_groups(path: Path | str, weak: Sequence[str] = ALPACAEVAL_WEAK_GROUP,
                              strong: Sequence[str] = ALPACAEVAL_STRONG_GROUP,
                              field: str = "ae1_win_vs_davinci003", min_models: int = 3) -> list[Row]:
    """AlpacaEval rows whose weak/strong quality is the mean score of a group of weak / strong models
    (a prompt needs `min_models` scored models in each group)."""
    bad = (set(weak) | set(strong)) & ALPACAEVAL_EXCLUDED
    if bad:
        raise TokenomyError(f"models {sorted(bad)} are excluded from AlpacaEval data (unreliable source entry)")
    rows = []
    for i, obj in enumerate(_jsonl(Path(path))):
        scores = obj.get(field) or {}
        w = [float(scores[m]) for m in weak if scores.get(m) is not None]
        s = [float(scores[m]) for m in strong if scores.get(m) is not None]
        if len(w) < min_models or len(s) < min_models:
            continue
        rows.append(Row(f"alpacaeval/{obj.get('dataset', '')}/{i}", obj["instruction"],
                        sum(w) / len(w), sum(s) / len(s), "alpacaeval"))
    return rows
