"""Request entities: per-request state as parallel lists indexed by request id (rid).

A struct of lists, not objects: the scheduler's hot loop reads a few fields of many requests,
and the simulator holds tens of thousands of them. Request ids grow with arrival (the
preemption victim, "the latest arrived", is the largest rid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

WAITING, PREFILLING, DECODING, FINISHED, DROPPED = 0, 1, 2, 3, 4


class RequestTable:
    __slots__ = ("arrival_s", "prompt", "out", "hashes", "stride", "ctx", "remaining", "offset", "fin_at",
                 "first_token_s", "finished_s", "finish_count", "admitted_s", "cached_tokens", "blocks_held",
                 "state")

    def __init__(self) -> None:
        self.arrival_s: list[float] = []
        self.prompt: list[int] = []  # prompt tokens
        self.out: list[int] = []  # output tokens to generate
        self.hashes: list[Sequence[int]] = []  # chained hashes of the prompt's KV blocks (may be empty)
        self.stride: list[int] = []  # a request progresses on one step in `stride` (emulator "slow" fault)
        self.ctx: list[int] = []  # tokens to prefill: the prompt, plus generated tokens after a preemption
        self.remaining: list[int] = []  # tokens still to emit (while not decoding)
        self.offset: list[int] = []  # decoding: KV tokens = offset + the replica's decode-step counter
        self.fin_at: list[int] = []  # decoding: the decode-step counter at which it finishes
        self.first_token_s: list[float] = []
        self.finished_s: list[float] = []
        self.finish_count: list[int] = []
        self.admitted_s: list[float] = []  # first admission into the batch
        self.cached_tokens: list[int] = []  # prompt tokens served from the prefix cache (first admission)
        self.blocks_held: list[int] = []  # leading prompt blocks this request references in the cache
        self.state: list[int] = []

    def __len__(self) -> int:
        return len(self.prompt)

    def add(self, arrival_s: float, prompt_tokens: int, output_tokens: int, hashes: Sequence[int] = (),
            stride: int = 1) -> int:
        rid = len(self.prompt)
        self.arrival_s.append(arrival_s)
        self.prompt.append(prompt_tokens)
        self.out.append(output_tokens)
        self.hashes.append(hashes)
        self.stride.append(stride)
        self.ctx.append(prompt_tokens)
        self.remaining.append(output_tokens)
        self.offset.append(0)
        self.fin_at.append(0)
        self.first_token_s.append(math.nan)
        self.finished_s.append(math.nan)
        self.finish_count.append(0)
        self.admitted_s.append(math.nan)
        self.cached_tokens.append(0)
        self.blocks_held.append(0)
        self.state.append(WAITING)
        return rid

    def extend(self, arrival_s: list[float], prompt: list[int], out: list[int],
               hashes: Sequence[Sequence[int]] | None = None) -> None:
        """Bulk add (the simulator's whole trace)."""
        n = len(prompt)
        self.arrival_s += arrival_s
        self.prompt += prompt
        self.out += out
        self.hashes += list(hashes) if hashes is not None else [()] * n
        self.stride += [1] * n
        self.ctx += prompt
        self.remaining += out
        self.offset += [0] * n
        self.fin_at += [0] * n
        self.first_token_s += [math.nan] * n
        self.finished_s += [math.nan] * n
        self.finish_count += [0] * n
        self.admitted_s += [math.nan] * n
        self.cached_tokens += [0] * n
        self.blocks_held += [0] * n
        self.state += [WAITING] * n
