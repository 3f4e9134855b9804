"""Prefix-affinity routing across replicas: a prefix index of what was sent where, with bounded load.

For each replica the router remembers (LRU, bounded by the replica's cache size in blocks) the
block hashes of the prompts it sent there: an approximation of that replica's prefix cache,
as in SGLang's cache-aware router. A request goes to the replica holding its longest leading
run of blocks, unless that replica's load would exceed ceil(`load_factor` x (total load + 1) / replicas): then the
next-longest match, and with no usable match the least-loaded replica. So affinity never piles
everything on one replica (consistent hashing with bounded loads, Mirrokni et al. 2018, uses
the same bound).

Cost: one dict lookup per leading block plus an LRU touch per block: O(blocks of the prompt).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence


class PrefixAffinityRouter:
    __slots__ = ("n", "capacity_blocks", "load_factor", "where", "lru", "last_affinity")

    def __init__(self, replicas: int, *, capacity_blocks: int, load_factor: float = 1.25) -> None:
        if replicas < 1 or replicas > 63:
            raise ValueError("prefix-affinity routes over 1..63 replicas")
        if capacity_blocks < 1 or load_factor < 1.0:
            raise ValueError("capacity_blocks must be >= 1 and load_factor >= 1")
        self.n = replicas
        self.capacity_blocks = capacity_blocks
        self.load_factor = load_factor
        self.where: dict[int, int] = {}  # block hash -> bit mask of replicas believed to hold it
        self.lru: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(replicas)]
        self.last_affinity = False  # the last choice holds more of its prompt than another eligible replica

    def matches(self, hashes: Sequence[int]) -> list[int]:
        """Bit masks of the replicas holding the first 1, 2, ... blocks (stops at the first miss)."""
        where = self.where
        mask = (1 << self.n) - 1
        out: list[int] = []
        for h in hashes:
            mask &= where.get(h, 0)
            if not mask:
                break
            out.append(mask)
        return out

    def choose(self, hashes: Sequence[int], loads: Sequence[float],
               allowed: Sequence[bool] | None = None) -> tuple[int, int]:
        """(replica, leading blocks it is believed to hold); 0 blocks = not an affinity choice.

        `loads`: outstanding requests per replica; `allowed`: replicas that may be chosen at all
        (e.g. meeting the SLO, breaker closed); the choice is recorded in the index."""
        n = self.n
        ok = [True] * n if allowed is None else list(allowed)
        if not any(ok):
            ok = [True] * n
        bound = math.ceil(self.load_factor * (sum(loads) + 1.0) / n)
        best, depth = -1, 0
        levels = self.matches(hashes)
        for d in range(len(levels), 0, -1):
            mask = levels[d - 1]
            cand = [i for i in range(n) if mask >> i & 1 and ok[i] and loads[i] + 1.0 <= bound]
            if cand:
                best = min(cand, key=lambda i: (loads[i], i))
                depth = d
                break
        if best < 0:
            best = min((i for i in range(n) if ok[i]), key=lambda i: (loads[i], i))
        # depth of the shallowest eligible replica: a block everyone holds is no reason to choose
        floor = sum(1 for m in levels if all(m >> i & 1 for i in range(n) if ok[i]))
        self.last_affinity = depth > floor
        self.record(best, hashes)
        return best, depth

    def record(self, replica: int, hashes: Sequence[int]) -> None:
        lru, where = self.lru[replica], self.where
        bit = 1 << replica
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                where[h] = where.get(h, 0) | bit
        while len(lru) > self.capacity_blocks:
            h, _ = lru.popitem(last=False)
            m = where[h] & ~bit
            if m:
                where[h] = m
            else:
                del where[h]
