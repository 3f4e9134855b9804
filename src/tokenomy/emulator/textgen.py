"""Deterministic synthetic completions: how many tokens, and which text pieces.

Each emitted token is one text piece chosen so that `tokenomy.tokens.count_tokens` of the
joined text equals the number of pieces (short words with a leading space, and single
punctuation marks never adjacent to each other).
"""

from __future__ import annotations

import hashlib
import random

# Output-length distribution: the 0th, 5th, ..., 100th percentiles of `num_decode_tokens`
# in the Azure LLM inference trace, conversation service (splitwise_conv.csv, 19,366
# requests, 2023, CC-BY-4.0, via microsoft/vidur); computed once with numpy.percentile on
# /work/shared/data/traces/splitwise_conv.csv (2026-11). Bimodal: median 129, p75 395, max 1000.
OUTPUT_TOKENS_PERCENTILES = (
    7, 41, 54, 67, 77, 85, 91, 96, 103, 113, 129, 151, 177, 217, 384, 395, 400, 411, 424, 451, 1000,
)

_WORDS = (
    "the of and to in is that for it as with was on be by this are at from or an have not "
    "which but all can more one will model token cost energy price data time rate query "
    "answer system server batch cache memory power value first also into each other these "
    "about than some when many then used would could there their what only over such most "
    "new may like well very much where just both three under world large small"
).split()
_CYCLE_LEN = 8192


def _build_cycle(seed: int = 12345) -> tuple[str, ...]:
    rng = random.Random(seed)
    pieces: list[str] = []
    capitalize = True
    since_punct = 0
    while len(pieces) < _CYCLE_LEN:
        word = rng.choice(_WORDS)
        pieces.append(" " + (word.capitalize() if capitalize else word))
        capitalize = False
        since_punct += 1
        if since_punct >= 4 and rng.random() < 0.12:
            mark = "." if rng.random() < 0.6 else ","
            pieces.append(mark)
            capitalize = mark == "."
            since_punct = 0
    return tuple(pieces[:_CYCLE_LEN])


_CYCLE = _build_cycle()


def request_digest(seed: int, canonical_prompt: bytes) -> int:
    """A 64-bit deterministic digest of the prompt (and the emulator's seed)."""
    h = hashlib.blake2b(canonical_prompt, digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little")


def natural_output_tokens(digest: int) -> int:
    """Output length the 'model' wants for this prompt, from the trace's distribution."""
    u = (digest & 0xFFFFFFFF) / 2**32 * 100.0  # percentile in [0, 100)
    i = min(int(u // 5), len(OUTPUT_TOKENS_PERCENTILES) - 2)
    lo, hi = OUTPUT_TOKENS_PERCENTILES[i], OUTPUT_TOKENS_PERCENTILES[i + 1]
    return max(1, round(lo + (hi - lo) * (u - 5 * i) / 5.0))


def pieces_for(digest: int, n: int) -> list[str]:
    """The `n` text pieces of the completion (first piece without its leading space)."""
    if n <= 0:
        return []
    start = (digest >> 32) % _CYCLE_LEN
    out: list[str] = []
    while len(out) < n:
        take = min(n - len(out), _CYCLE_LEN - start)
        out.extend(_CYCLE[start:start + take])
        start = 0
    first = out[0].lstrip()
    out[0] = first
    return out


__all__ = ["OUTPUT_TOKENS_PERCENTILES", "natural_output_tokens", "pieces_for", "request_digest"]
