"""Reference routers: random, length (longer prompt -> strong) and oracle (knows the labels)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

from tokenomy.routing.quality.data import Row


class RandomRouter:
    """A uniform score per prompt, deterministic in (seed, prompt) so evaluations repeat."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def strong_win_rate(self, prompt: str) -> float:
        h = zlib.crc32(prompt.encode("utf-8"), zlib.crc32(str(self.seed).encode()))
        h = (h * 2654435761) & 0xFFFFFFFF  # spread nearby crc values
        return h / 2**32


class LengthRouter:
    """Longer prompts go to the strong model first: score = 1 - exp(-chars / 1000)."""

    name = "length"

    def strong_win_rate(self, prompt: str) -> float:
        return 1.0 - math.exp(-len(prompt) / 1000.0)


class OracleRouter:
    """Knows each row's outcome: score = (1 + strong - weak) / 2 (an upper bound, not a router)."""

    name = "oracle"

    def __init__(self, rows: Iterable[Row]):
        sums: dict[str, list[float]] = {}
        for r in rows:
            acc = sums.setdefault(r.prompt, [0.0, 0])
            acc[0] += r.strong - r.weak
            acc[1] += 1
        self._gain = {p: s / n for p, (s, n) in sums.items()}

    def strong_win_rate(self, prompt: str) -> float:
        return (1.0 + self._gain.get(prompt, 0.0)) / 2.0
