"""Deterministic embedding vectors for the emulator's POST /v1/embeddings (pure functions).

A vector is the sum of one pseudo-random Gaussian vector per token (seeded by the token's
text or id), unit-normalised: the same input always gives the same vector, and inputs that share
tokens point in similar directions (cosine similarity tracks token overlap), which is enough
for a client's retrieval code to behave sensibly. `dimensions` keeps the first `dimensions`
components and renormalises, as OpenAI's text-embedding-3 models shorten vectors (the
generator yields the same leading values for any length, so a shortened vector is a prefix of
the full one before normalisation).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def _seed(token: str | int) -> int:
    raw = token.encode("utf-8") if isinstance(token, str) else b"#" + str(token).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")


def text_units(text: str) -> list[str]:
    """The units a text's vector is built from: lower-cased words and punctuation marks."""
    return _WORD.findall(text.lower()) or [text]


def vector(units: list[str] | list[int], dimensions: int) -> np.ndarray:
    """The unit-norm float32 vector of `units` (words of a text, or token ids)."""
    acc = np.zeros(dimensions, dtype=np.float64)
    for unit, n in Counter(units).items():
        acc += n * np.random.default_rng(_seed(unit)).standard_normal(dimensions)
    norm = float(np.linalg.norm(acc))
    if norm == 0.0:  # cannot happen for a non-empty input (a Gaussian sum is never exactly 0)
        acc[0], norm = 1.0, 1.0
    return (acc / norm).astype(np.float32)


def encode(vec: np.ndarray, encoding_format: str) -> list[float] | str:
    """OpenAI's wire forms (gateway/embeddings.encode_vector: floats, or base64 of float32)."""
    from tokenomy.gateway.embeddings import encode_vector

    return encode_vector(vec.tolist(), encoding_format)
