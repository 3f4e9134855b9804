"""Token log-probabilities of a weak answer as cascade verifier signals, and `LogprobVerifier`.

    stats = logprob_stats(resp["choices"][0]["logprobs"])   # LogprobStats | None
    v = LogprobVerifier()                                    # wraps `cascade-default`
    v.score_response(prompt, answer_text, stats)             # text score moved by the logprobs

`logprob_stats` reads either OpenAI wire shape: chat (``{"content": [{"token", "logprob",
"top_logprobs": [{"token", "logprob"}, ...]}, ...]}``) or legacy completions (``{"tokens",
"token_logprobs", "top_logprobs": [{token: logprob}, ...]}``). The object comes from an upstream,
so it is untrusted: at most MAX_TOKENS tokens and MAX_TOP alternatives per token are read, entries
that are not finite numbers (strings, booleans, NaN, +inf, nested junk) are skipped, a logprob
above LP_POSITIVE_TOL is skipped (no probability exceeds 1), the rest are clamped to [-100, 0];
nothing usable -> None. It never raises.

LogprobVerifier's weights are an UNFITTED PRIOR (module constants below, every reference scale
an assumption): no labelled data with token logprobs exists here (the cascade data holds answer
text only; the emulator's logprobs are hash-derived), so nothing could be fitted or measured
(no leave-one-source-out figure). Use it with `cascade.escalate_share`: the threshold then follows
the target share of live traffic, so only the ranking of the scores matters, not their
calibration. To fit the weights on labelled rows of your own: logprob_fit (`tokenomy route train
--router cascade-logprobs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from typing import Any

MAX_TOKENS = 8192   # tokens read from one answer (longer answers: the first MAX_TOKENS)
MAX_TOP = 20        # alternatives read per token (OpenAI's own maximum)
LP_FLOOR = -100.0   # clamp: an upstream's -9999 / -inf means "impossible", not a number to average
LP_POSITIVE_TOL = 1e-3  # logprobs up to this above 0 are rounding (clamped to 0); above: garbage
LOW_P_LOG = math.log(0.1)


@dataclass(frozen=True, slots=True)
class LogprobStats:
    n_tokens: int                   # tokens with a usable logprob
    mean_logprob: float             # nats; log of the geometric-mean token probability
    min_logprob: float              # nats; the least likely chosen token
    mean_entropy_nats: float | None  # mean entropy of the renormalised top alternatives (None: none sent)
    low_prob_share: float           # share of tokens with p < 0.1

    def to_json(self) -> dict:
        return {"n": self.n_tokens, "mean": round(self.mean_logprob, 4), "min": round(self.min_logprob, 4),
                "entropy": None if self.mean_entropy_nats is None else round(self.mean_entropy_nats, 4),
                "low_share": round(self.low_prob_share, 4)}

    def header(self) -> str:
        ent = "na" if self.mean_entropy_nats is None else f"{self.mean_entropy_nats:.3f}"
        return f"n={self.n_tokens}; mean={self.mean_logprob:.3f}; min={self.min_logprob:.3f}; entropy={ent}"


def _lp(x: Any) -> float | None:
    """One untrusted logprob -> a float in [LP_FLOOR, 0], or None when it is not one."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    if math.isnan(x) or x > LP_POSITIVE_TOL:   # NaN, +inf, a "probability" above 1
        return None
    return min(0.0, max(LP_FLOOR, x))          # -inf -> the floor


def _entropy(lps: list[float]) -> float:
    """Entropy (nats) of the distribution the top alternatives' logprobs give, renormalised."""
    m = max(lps)
    ws = [math.exp(v - m) for v in lps]
    z = sum(ws)
    return max(0.0, -sum(w / z * ((v - m) - math.log(z)) for w, v in zip(ws, lps) if w > 0.0))


def _chat_alts(top: Any) -> list[float]:
    if not isinstance(top, list):
        return []
    out = []
    for a in islice(top, MAX_TOP):
        if isinstance(a, dict):
            v = _lp(a.get("logprob"))
            if v is not None:
                out.append(v)
    return out


def _legacy_alts(top: Any) -> list[float]:
    if not isinstance(top, dict):
        return []
    return [v for v in (_lp(x) for x in islice(top.values(), MAX_TOP)) if v is not None]


def logprob_stats(obj: Any) -> LogprobStats | None:
    """Stats of a choice's `logprobs` object (chat or legacy completions shape); None if unusable."""
    if not isinstance(obj, dict):
        return None
    chosen: list[float] = []
    entropies: list[float] = []
    content = obj.get("content")
    if isinstance(content, list):
        for e in islice(content, MAX_TOKENS):
            if not isinstance(e, dict):
                continue
            v = _lp(e.get("logprob"))
            if v is None:
                continue
            chosen.append(v)
            alts = _chat_alts(e.get("top_logprobs"))
            if alts:
                entropies.append(_entropy(alts))
    else:
        lps = obj.get("token_logprobs")
        if not isinstance(lps, list):
            return None
        tops = obj.get("top_logprobs")
        tops = tops if isinstance(tops, list) else []
        for i, x in enumerate(islice(lps, MAX_TOKENS)):
            v = _lp(x)   # the first token of an echoed prompt is null: skipped here
            if v is None:
                continue
            chosen.append(v)
            alts = _legacy_alts(tops[i]) if i < len(tops) else []
            if alts:
                entropies.append(_entropy(alts))
    if not chosen:
        return None
    n = len(chosen)
    return LogprobStats(n, sum(chosen) / n, min(chosen),
                        sum(entropies) / len(entropies) if entropies else None,
                        sum(1 for v in chosen if v < LOW_P_LOG) / n)


def response_logprobs(obj: Any) -> Any:
    """`choices[0].logprobs` of an OpenAI-wire response (None when absent or malformed)."""
    if not isinstance(obj, dict):
        return None
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    return choices[0].get("logprobs")


# ---------------------------------------------------------------------------- the verifier
# The unfitted prior. Each term is a standardised signal, clipped to +-CLIP, times its weight, added
# to the text verifier's logit. Reference points and scales are ASSUMPTIONS about typical
# instruction-tuned chat models at temperature ~0 (not measured here):
#   mean logprob: a fluent, confident answer sits near -0.5 nats per token (geometric-mean p ~0.6),
#     one standard unit = 0.4 nats;
#   min logprob: -6 (one token at p ~0.25 %) is typical of a few hundred tokens, unit = 3 nats;
#   mean top-5 entropy: 0.6 nats typical, unit = 0.4 (higher = the model hesitated; sign -).
# Short answers carry little evidence: the terms are shrunk by n / (n + SHRINK_TOKENS).
@dataclass(frozen=True, slots=True)
class LogprobPrior:
    ref_mean: float = -0.5
    scale_mean: float = 0.4
    w_mean: float = 0.6
    ref_min: float = -6.0
    scale_min: float = 3.0
    w_min: float = 0.3
    ref_entropy: float = 0.6
    scale_entropy: float = 0.4
    w_entropy: float = 0.3
    clip: float = 3.0
    shrink_tokens: float = 8.0
    bias: float = 0.0  # added when logprobs are present (0 in the prior; fitted by logprob_fit)

    def logit_shift(self, s: LogprobStats) -> float:
        """What the logprob stats add to the text verifier's logit."""
        def term(x: float, ref: float, scale: float) -> float:
            return max(-self.clip, min(self.clip, (x - ref) / scale))

        z = self.w_mean * term(s.mean_logprob, self.ref_mean, self.scale_mean)
        z += self.w_min * term(s.min_logprob, self.ref_min, self.scale_min)
        if s.mean_entropy_nats is not None:
            z -= self.w_entropy * term(s.mean_entropy_nats, self.ref_entropy, self.scale_entropy)
        return self.bias + z * s.n_tokens / (s.n_tokens + self.shrink_tokens)


PRIOR = LogprobPrior()


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class LogprobVerifier:
    """A text verifier's logit plus the weak answer's logprob stats (an unfitted prior, module doc).

    `wants_logprobs` tells the gateway to ask the weak upstream for them. Without stats (an
    upstream that cannot send them, or an offline row) the score is the text verifier's own."""

    name = "cascade-logprobs"
    wants_logprobs = True

    def __init__(self, text=None, prior: LogprobPrior = PRIOR):
        if text is None:
            from tokenomy.routing.cascade.registry import load_verifier

            text = load_verifier("cascade-default")
        self.text, self.prior = text, prior
        self.meta: dict = {}  # a fitted artifact's report (logprob_fit)

    def _text_logit(self, prompt: str, answer: str) -> float:
        if hasattr(self.text, "logit"):
            return float(self.text.logit(prompt, answer))
        p = min(max(float(self.text.score(prompt, answer)), 1e-9), 1.0 - 1e-9)
        return math.log(p / (1.0 - p))

    def score(self, prompt: str, answer: str) -> float:
        """Text only (what offline rows without logprobs get)."""
        return self.score_response(prompt, answer, None)

    def score_response(self, prompt: str, answer: str, logprobs: Any) -> float:
        """`logprobs`: LogprobStats, a raw `logprobs` object, or None (text score)."""
        stats = logprobs if isinstance(logprobs, LogprobStats) or logprobs is None else logprob_stats(logprobs)
        z = self._text_logit(prompt, answer)
        if stats is not None:
            z += self.prior.logit_shift(stats)
        return _sigmoid(z)

    def scores(self, prompts, answers):
        import numpy as np

        return np.array([self.score(p, a) for p, a in zip(prompts, answers)])
