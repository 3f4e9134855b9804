"""Agreement verifier for maths/code: k samples of the weak model, scored by how many agree.

score = share of the k samples whose final answer equals the majority answer (0 when no
sample has a final answer). Self-consistency is a strong correctness signal on maths: when the
samples disagree, the weak model is guessing. The cascade keeps the majority answer's text.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenomy.routing.cascade.answers import agreement, extract_final_answer


class AgreementVerifier:
    name = "agreement"

    def __init__(self, extract=extract_final_answer):
        self.extract = extract

    def vote(self, answers: Sequence[str]) -> tuple[str | None, float, int | None]:
        """(majority final answer, agreement share, index of the first sample giving it)."""
        finals = [self.extract(a) for a in answers]
        best, share = agreement(finals)
        idx = finals.index(best) if best is not None else None
        return best, share, idx

    def score(self, prompt: str, answers: Sequence[str] | str) -> float:
        """Agreement share of k samples (a single string counts as one sample)."""
        samples = [answers] if isinstance(answers, str) else list(answers)
        return self.vote(samples)[1]
