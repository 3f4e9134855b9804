"""Agreement verifier for maths/code: k samples of the weak model, scored by how many agree.

score = share of the k samples whose final answer equals the majority answer (0 when no
sample has a final answer). Self-consistency is a strong correctness signal on maths: when the
samples disagree, the weak model is guessing. The cascade keeps the majority answer's text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenomy.routing.cascade.answers import agreement, extract_final_answer


@dataclass(frozen=True, slots=True)
class Vote:
    """The tally of k samples: the majority final answer, its share of k, the first sample giving it,
    how many distinct final answers there were and how many samples had one."""

    answer: str | None
    share: float
    index: int | None
    distinct: int
    answered: int
    k: int


class AgreementVerifier:
    name = "agreement"
    wants_samples = True  # scores k samples of the weak model, not one answer

    def __init__(self, extract=extract_final_answer):
        self.extract = extract

    def vote(self, answers: Sequence[str]) -> tuple[str | None, float, int | None]:
        """(majority final answer, agreement share, index of the first sample giving it)."""
        finals = [self.extract(a) for a in answers]
        best, share = agreement(finals)
        idx = finals.index(best) if best is not None else None
        return best, share, idx

    def tally(self, answers: Sequence[str]) -> Vote:
        """vote(), with the counts the gateway records (extra.route.agreement)."""
        finals = [self.extract(a) for a in answers]
        best, share = agreement(finals)
        given = [f for f in finals if f is not None]
        return Vote(best, share, finals.index(best) if best is not None else None, len(set(given)), len(given),
                    len(finals))

    def score(self, prompt: str, answers: Sequence[str] | str) -> float:
        """Agreement share of k samples (a single string counts as one sample)."""
        samples = [answers] if isinstance(answers, str) else list(answers)
        return self.vote(samples)[1]
