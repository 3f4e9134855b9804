"""Block hashes of a real prompt, so the emulator's prefix cache hits the way an engine's would.

The prompt (the canonical JSON of the messages, or the completion prompt) is split into
approximate tokens with the regex pre-tokenizer the emulator counts with (`tokenomy.tokens`,
one piece ~ one cl100k token), and the full `block_tokens`-piece blocks are chain-hashed
(`tokenomy.engine.blocks.chain_block_hashes`). Equal leading text -> equal leading hashes:
a multi-turn conversation re-sent with one more turn, or a shared system prompt, hits.
"""

from __future__ import annotations

from tokenomy.engine.blocks import chain_block_hashes
from tokenomy.tokens import _PRETOKEN


def prompt_block_hashes(canonical_prompt: bytes, block_tokens: int) -> list[int]:
    pieces = _PRETOKEN.findall(canonical_prompt.decode("utf-8", "replace"))
    return chain_block_hashes(pieces, block_tokens)
