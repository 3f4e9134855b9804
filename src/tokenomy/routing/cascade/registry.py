"""Verifier names -> verifier objects, and cascade artifacts on disk -> verifiers.

A verifier scores an answer: ``score(prompt, answer) -> float`` in [0, 1], higher = better
(keep the weak answer); batched ``scores(prompts, answers)`` when it has one. Async verifiers
(the LLM judge) expose ``ascore`` instead. A verifier with ``wants_logprobs`` (cascade-logprobs)
also takes the weak answer's token logprobs: ``score_response(prompt, answer, logprobs)``. One with
``wants_samples`` (agreement) scores k samples: ``score(prompt, [answer, ...])``.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from tokenomy.errors import TokenomyError, UnknownNameError

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"
DEFAULT_ARTIFACT = ARTIFACT_DIR / "cascade_default.npz"
VERIFIER_NAMES = ("cascade-default", "cascade", "cascade-logprobs", "answer-length", "agreement", "cascade-random",
                  "cascade-oracle")


class RandomVerifier:
    """A uniform score per (prompt, answer), deterministic in the seed."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, prompt: str, answer: str) -> float:
        h = zlib.crc32((prompt + "\x00" + answer).encode("utf-8"), zlib.crc32(str(self.seed).encode()))
        return ((h * 2654435761) & 0xFFFFFFFF) / 2**32


class AnswerLengthVerifier:
    """Longer answers are trusted more: 1 - exp(-chars / 1000) (the trivial baseline)."""

    name = "answer-length"

    def score(self, prompt: str, answer: str) -> float:
        return 1.0 - math.exp(-len(answer) / 1000.0)


class OracleVerifier:
    """Knows each row's outcome: escalates by the strong model's gain (an upper bound)."""

    name = "oracle"

    def __init__(self, rows: Iterable):
        self._gain = {(r.prompt, r.weak_output): r.strong - r.weak for r in rows}

    def score(self, prompt: str, answer: str) -> float:
        return (1.0 - self._gain.get((prompt, answer), 0.0)) / 2.0


def load_artifact(path: Path | str):
    path = Path(path)
    if not path.is_file():
        raise TokenomyError(f"no such verifier artifact: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        header = json.loads(str(data["header"]))
    except (OSError, ValueError, KeyError) as exc:
        raise TokenomyError(f"{path}: not a verifier artifact ({exc})") from None
    if header.get("kind") == "cascade-logprobs":  # fitted logprob weights over the default text verifier
        from tokenomy.routing.cascade.logprob_fit import from_header

        try:
            return from_header(header)
        except ValueError as exc:
            raise TokenomyError(f"{path}: {exc}") from None
    if header.get("kind") != "cascade-lr":
        raise TokenomyError(f"{path}: not a cascade verifier artifact (kind {header.get('kind')!r})")
    from tokenomy.routing.cascade.learned import LearnedVerifier

    try:
        return LearnedVerifier.from_npz(data, header)
    except ValueError as exc:
        raise TokenomyError(f"{path}: {exc}") from None


def is_verifier_name(name: str) -> bool:
    return name in VERIFIER_NAMES


def is_cascade_artifact(path: Path | str) -> bool:
    """Whether a .npz file is a cascade verifier artifact (not a prompt-router one)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return json.loads(str(data["header"])).get("kind") in ("cascade-lr", "cascade-logprobs")
    except (OSError, ValueError, KeyError):
        return False


def wants_cascade(router: str, model: Path | str | None = None) -> bool:
    """For `tokenomy route eval/train`: does this --router/--model pair name a cascade verifier?"""
    if model is not None and is_cascade_artifact(model):
        return True
    return is_verifier_name(router) or (str(router).endswith(".npz") and is_cascade_artifact(router))


def load_verifier(name: str | Path = "cascade-default", *, rows: Iterable | None = None, seed: int = 0):
    """A verifier by name or artifact path. `rows` (labelled cascade rows) only for `oracle`."""
    if isinstance(name, Path) or str(name).endswith(".npz"):
        return load_artifact(name)
    if name in ("cascade-default", "cascade", "learned"):
        return load_artifact(DEFAULT_ARTIFACT)
    if name in ("cascade-logprobs", "logprobs"):  # the default text verifier + the weak answer's logprobs
        from tokenomy.routing.cascade.logprobs import LogprobVerifier

        return LogprobVerifier(load_artifact(DEFAULT_ARTIFACT))
    if name == "agreement":  # k samples' final-answer agreement (the gateway asks the weak model for k)
        from tokenomy.routing.cascade.agreement import AgreementVerifier

        return AgreementVerifier()
    if name in ("cascade-random", "random"):
        return RandomVerifier(seed)
    if name == "answer-length":
        return AnswerLengthVerifier()
    if name in ("cascade-oracle", "oracle"):
        if rows is None:
            raise TokenomyError("the oracle verifier needs labelled rows (use it for evaluation)")
        return OracleVerifier(rows)
    raise UnknownNameError("verifier", str(name), VERIFIER_NAMES)


def score_answers(verifier, prompts: Sequence[str], answers: Sequence[str],
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Quality scores (higher = better answer) of many (prompt, answer) pairs."""
    out = np.empty(len(prompts))
    for i, (p, a) in enumerate(zip(prompts, answers)):
        out[i] = verifier.score(p, a)
        if progress and (i + 1) % 256 == 0:
            progress(256)
    if progress:
        progress(len(prompts) % 256)
    return out
