"""The KV block manager's prefix cache: full prompt blocks kept, by chained hash, after use.

A block is `block_tokens` tokens of KV. A request's prompt is a chain of blocks; block i's
hash covers blocks 0..i (so equal hashes mean equal prefixes, as in vLLM's automatic prefix
caching and Mooncake's `hash_ids`). A finished prefill publishes its full prompt blocks;
later requests whose leading hashes are present reference them instead of recomputing them.
Blocks nobody references stay cached and are evicted least-recently-used first when running
requests need the memory (freed tail-first, so a shared head outlives the turns built on it).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence


def chain_block_hashes(token_ids: Sequence[int], block_tokens: int, *, seed: bytes = b"") -> list[int]:
    """Chained 64-bit hashes of the FULL `block_tokens`-token blocks of `token_ids` (a partial
    tail block is never cached). `seed` separates unrelated namespaces (e.g. model names)."""
    out: list[int] = []
    prev = seed
    for i in range(0, len(token_ids) - block_tokens + 1, block_tokens):
        h = hashlib.blake2b(prev, digest_size=8)
        h.update(b",".join(str(t).encode() for t in token_ids[i:i + block_tokens]))
        prev = h.digest()
        out.append(int.from_bytes(prev, "big") >> 1)
    return out


class PrefixCache:
    __slots__ = ("block_tokens", "refs", "lru", "enabled", "evicted_blocks", "inserted_blocks")

    def __init__(self, block_tokens: int = 16, *, enabled: bool = True) -> None:
        if block_tokens < 1:
            raise ValueError("block_tokens must be >= 1")
        self.block_tokens = block_tokens
        self.enabled = enabled
        self.refs: dict[int, int] = {}  # hash -> running requests referencing the block
        self.lru: OrderedDict[int, None] = OrderedDict()  # unreferenced blocks, oldest first
        self.evicted_blocks = 0
        self.inserted_blocks = 0

    @property
    def tokens(self) -> int:
        """KV tokens the cache's blocks occupy (referenced or not)."""
        return len(self.refs) * self.block_tokens

    @property
    def evictable_tokens(self) -> int:
        return len(self.lru) * self.block_tokens

    def match(self, hashes: Sequence[int], max_blocks: int) -> tuple[int, int]:
        """(leading blocks present, how many of those are unreferenced), at most `max_blocks`."""
        if not self.enabled:
            return 0, 0
        refs = self.refs
        k = idle = 0
        for h in hashes:
            if k >= max_blocks:
                break
            r = refs.get(h)
            if r is None:
                break
            k += 1
            if r == 0:
                idle += 1
        return k, idle

    def acquire(self, hashes: Sequence[int], n: int) -> None:
        refs, lru = self.refs, self.lru
        for h in hashes[:n]:
            r = refs[h]
            if r == 0:
                del lru[h]
            refs[h] = r + 1

    def publish(self, h: int) -> bool:
        """Reference block `h`, adding it when absent; True when it was added (new memory)."""
        r = self.refs.get(h)
        if r is None:
            self.refs[h] = 1
            self.inserted_blocks += 1
            return True
        if r == 0:
            del self.lru[h]
        self.refs[h] = r + 1
        return False

    def release(self, hashes: Sequence[int], n: int) -> None:
        refs, lru = self.refs, self.lru
        for i in range(n - 1, -1, -1):  # tail first: evicted before the shared head
            h = hashes[i]
            r = refs[h] - 1
            refs[h] = r
            if r == 0:
                lru[h] = None

    def evict(self, tokens: int) -> int:
        """Evict unreferenced blocks, LRU first, until `tokens` are freed (or none is left)."""
        freed = 0
        lru, refs = self.lru, self.refs
        while freed < tokens and lru:
            h, _ = lru.popitem(last=False)
            del refs[h]
            freed += self.block_tokens
            self.evicted_blocks += 1
        return freed
