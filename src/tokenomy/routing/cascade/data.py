"""Cascade evaluation rows: a prompt, the weak model's answer, and both models' quality.

A row is the quality router's row plus the weak model's answer:
``{"id", "prompt", "weak", "strong", "weak_output", "source"}`` and an optional ``"weak_model"``
(the model that wrote `weak_output`; training pools several weak models so the verifier judges
answers, not one model's style). Loaders turn ``../shared/data/routing/cascade/*`` into rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenomy.errors import TokenomyError, UnknownNameError
from tokenomy.routing.quality.data import ALPACAEVAL_EXCLUDED, _jsonl, read_jsonl_rows, write_rows  # noqa: F401 (write_rows re-exported)

AE_FIELD = "ae1_win_vs_davinci003"
AE_DEFAULT_WEAK = "llama-2-7b-chat-hf"
AE_DEFAULT_STRONG = "gpt4_1106_preview"
# Answers pooled to train the model-agnostic verifier: weak and mid-size open models of
# different families (the strong model's own answers are left out: it is the escalation target).
AE_TRAIN_WEAK = ("llama-2-7b-chat-hf", "llama-2-13b-chat-hf", "tulu-2-dpo-7b", "tulu-2-dpo-13b",
                 "vicuna-13b", "phi-2-dpo", "zephyr-7b-beta", "gpt-3.5-turbo-1106")
# Answers kept out of training, to check transfer to models the verifier never saw (larger and
# other-family models: the kind a cascade's weak tier is in practice, e.g. Mixtral).
AE_HELD_OUT_WEAK = ("mistral-medium", "Yi-34B-Chat", "tulu-2-dpo-70b", "llama-2-70b-chat-hf", "claude-2")
GSM8K_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GSM8K_STRONG = "gpt-4-1106-preview"


@dataclass(frozen=True, slots=True)
class CascadeRow:
    id: str
    prompt: str
    weak: float
    strong: float
    weak_output: str
    source: str = ""
    weak_model: str = ""

    def to_json(self) -> dict:
        out = {"id": self.id, "prompt": self.prompt, "weak": self.weak, "strong": self.strong,
               "weak_output": self.weak_output}
        if self.source:
            out["source"] = self.source
        if self.weak_model:
            out["weak_model"] = self.weak_model
        return out


def row_from_obj(obj: dict, where: str = "row") -> CascadeRow:
    try:
        weak, strong = float(obj["weak"]), float(obj["strong"])
        out = obj["weak_output"]
        if not isinstance(out, str):
            raise TypeError("weak_output must be a string")
        row = CascadeRow(str(obj["id"]), str(obj["prompt"]), weak, strong, out,
                         str(obj.get("source") or ""), str(obj.get("weak_model") or ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenomyError(f"{where}: need id, prompt, weak, strong, weak_output ({exc!r})") from None
    if not (0.0 <= weak <= 1.0 and 0.0 <= strong <= 1.0):
        raise TokenomyError(f"{where}: weak/strong quality must be in [0, 1]")
    return row


def as_rows(rows: Iterable) -> list[CascadeRow]:
    """CascadeRow objects from rows or dicts (so callers may pass parsed JSON)."""
    out = []
    for i, r in enumerate(rows):
        out.append(r if isinstance(r, CascadeRow) else row_from_obj(r if isinstance(r, dict) else
                                                                     _obj_of(r), f"row {i}"))
    return out


def _obj_of(r) -> dict:
    return {k: getattr(r, k) for k in ("id", "prompt", "weak", "strong", "weak_output", "source")
            if hasattr(r, k)}


def has_weak_output(path: Path | str) -> bool:
    """Whether the first row of a JSONL file carries `weak_output` (cascade rows)."""
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    return "weak_output" in json.loads(line)
                except json.JSONDecodeError:
                    return False
    return False


def read_rows(path: Path | str) -> list[CascadeRow]:
    return read_jsonl_rows(path, row_from_obj)


def convert_alpacaeval_outputs(path: Path | str, weak: str | Sequence[str] = AE_DEFAULT_WEAK,
                               strong: str = AE_DEFAULT_STRONG) -> list[CascadeRow]:
    """AlpacaEval answers: one row per (instruction, weak model) with the strong model's verdict.

    `weak` may name several models (rows for each). Rows lacking a verdict are dropped.
    """
    weak_models = [weak] if isinstance(weak, str) else list(weak)
    by_inst: dict[str, dict[str, dict]] = {}
    order: list[str] = []
    for obj in _jsonl(Path(path)):
        inst = obj["instruction"]
        if inst not in by_inst:
            by_inst[inst] = {}
            order.append(inst)
        by_inst[inst][obj["model"]] = obj
    known = sorted({m for d in by_inst.values() for m in d} - ALPACAEVAL_EXCLUDED)
    for m in [*weak_models, strong]:
        if m not in known:
            raise UnknownNameError("AlpacaEval model", m, known)
    rows = []
    for i, inst in enumerate(order):
        answers = by_inst[inst]
        s = answers.get(strong, {}).get(AE_FIELD)
        if s is None or not 0.0 <= float(s) <= 1.0:   # the source marks 22 unannotated answers with -1
            continue
        for m in weak_models:
            a = answers.get(m)
            if a is None or a.get(AE_FIELD) is None or a.get("output") is None or not 0.0 <= float(a[AE_FIELD]) <= 1.0:
                continue
            rows.append(CascadeRow(f"alpacaeval/{a.get('dataset', '')}/{i}/{m}", inst, float(a[AE_FIELD]),
                                   float(s), a["output"], "alpacaeval", m))
    return rows


def convert_gsm8k_outputs(path: Path | str, weak: str = GSM8K_WEAK, strong: str = GSM8K_STRONG) -> list[CascadeRow]:
    """GSM8K answers of Mixtral (weak) and GPT-4 (strong) with correctness; contaminated rows dropped."""
    by_idx: dict[int, dict[str, dict]] = {}
    for obj in _jsonl(Path(path)):
        if obj.get("contaminated"):
            continue
        by_idx.setdefault(int(obj["idx"]), {})[obj["model"]] = obj
    rows = []
    for idx in sorted(by_idx):
        d = by_idx[idx]
        if weak not in d or strong not in d:
            continue
        w = d[weak]
        rows.append(CascadeRow(f"gsm8k/{idx}", w["prompt"], float(w["correct"]), float(d[strong]["correct"]),
                               w["output"], "gsm8k", weak))
    if not rows:
        raise TokenomyError(f"{path}: no GSM8K rows with both '{weak}' and '{strong}' answers")
    return rows


def shared_rows(cascade_dir: Path | str, *, train_pool: bool = False) -> list[CascadeRow]:
    """All rows from the shared cascade directory: the default pairs, or (train_pool) every
    weak model of AE_TRAIN_WEAK on AlpacaEval plus Mixtral on GSM8K."""
    d = Path(cascade_dir)
    ae_weak = AE_TRAIN_WEAK if train_pool else AE_DEFAULT_WEAK
    return [*convert_alpacaeval_outputs(d / "alpacaeval_outputs.jsonl", ae_weak),
            *convert_gsm8k_outputs(d / "gsm8k_outputs.jsonl")]


def held_out_rows(cascade_dir: Path | str) -> list[CascadeRow]:
    """AlpacaEval answers of AE_HELD_OUT_WEAK (never in the training pool)."""
    return convert_alpacaeval_outputs(Path(cascade_dir) / "alpacaeval_outputs.jsonl", AE_HELD_OUT_WEAK)


CASCADE_SOURCES = {"cascade-alpacaeval": "alpacaeval_outputs.jsonl", "cascade-gsm8k": "gsm8k_outputs.jsonl"}


def load_source(source: str, cascade_dir: Path | str, *, input: Path | str | None = None,
                weak: str | Sequence[str] | None = None, strong: str | None = None) -> list[CascadeRow]:
    """Rows for `tokenomy route data --source cascade-alpacaeval|cascade-gsm8k` (weak may be a
    comma list for AlpacaEval; defaults: Llama-2-7b-chat vs GPT-4-1106, Mixtral vs GPT-4-1106)."""
    if source not in CASCADE_SOURCES:
        raise UnknownNameError("cascade source", source, tuple(CASCADE_SOURCES))
    path = Path(input) if input else Path(cascade_dir) / CASCADE_SOURCES[source]
    if isinstance(weak, str):
        weak = [w.strip() for w in weak.split(",") if w.strip()]
    if source == "cascade-alpacaeval":
        return convert_alpacaeval_outputs(path, weak or AE_DEFAULT_WEAK, strong or AE_DEFAULT_STRONG)
    return convert_gsm8k_outputs(path, (weak or [GSM8K_WEAK])[0], strong or GSM8K_STRONG)
