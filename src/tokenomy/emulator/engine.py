"""A continuous-batching engine loop (one asyncio task) timed by a step model.

Each step: admit waiting sequences (FCFS) while the batch has room (`max_batch`) and the KV
cache can hold their prompt plus output; give up to `prefill_chunk_tokens` of prefill to the
sequences still prefilling (chunked prefill: the step that finishes a prompt also yields its
first token) and one decode token to every other running sequence; sleep the step model's
`step_seconds(...) * time_scale`; then emit. So TTFT grows with prefill and queueing, and
the time per output token grows with the batch.

Times reported per sequence are *model* seconds (sums of step times, unaffected by
`time_scale`); energy is `step_watts * step_seconds` split across the step's sequences in
proportion to the tokens each processed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field

from .stepmodel import StepModelLike

log = logging.getLogger(__name__)

SLOW_FACTOR = 10  # a "slow" sequence advances on one step in ten (10x its TTFT and TPOT)
_MAX_LATE_S = 0.005  # how far behind schedule the loop may catch up (wall seconds)


@dataclass(eq=False)
class Sequence:
    prompt_tokens: int  # tokens the engine prefills (>= 1)
    target_tokens: int  # tokens it will generate (>= 1)
    slow: bool = False
    # progress
    prefilled: int = 0
    generated: int = 0
    finished: bool = False
    cancelled: bool = False
    error: str | None = None  # set when the engine failed this sequence (then `done` is set)
    energy_joules: float = 0.0
    # model-time clock readings (seconds)
    arrival_s: float = 0.0
    admitted_s: float | None = None
    first_token_s: float | None = None
    finished_s: float | None = None
    _ticks: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set on every new token
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set once, when finished

    @property
    def kv_reservation(self) -> int:
        return self.prompt_tokens + self.target_tokens

    def timings(self) -> dict[str, float | None]:
        """Model-time figures of this sequence (seconds)."""
        def span(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else b - a

        decode_s = span(self.first_token_s, self.finished_s)
        return {
            "queue_seconds": span(self.arrival_s, self.admitted_s),
            "ttft_seconds": span(self.arrival_s, self.first_token_s),
            "tpot_seconds": (decode_s / (self.generated - 1))
            if decode_s is not None and self.generated > 1 else None,
            "total_seconds": span(self.arrival_s, self.finished_s),
        }


class Engine:
    def __init__(self, sm: StepModelLike, *, max_batch: int, max_kv_tokens: int,
                 prefill_chunk_tokens: int = 2048, time_scale: float = 1.0):
        self.sm = sm
        self.max_batch = max_batch
        self.max_kv_tokens = max_kv_tokens
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.time_scale = time_scale
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self.kv_reserved = 0
        self.clock_s = 0.0  # model time: sum of step times
        self.steps = 0
        self.energy_joules = 0.0
        self.prefill_tokens_total = 0
        self.decode_tokens_total = 0
        self.max_running_seen = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deadline = 0.0

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="emulator-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._fail_all("the emulator is shutting down")

    def _fail_all(self, reason: str) -> None:
        for seq in [*self.running, *self.waiting]:
            if not seq.finished:
                seq.error = reason
                seq.done.set()
                seq.progress.set()
        self.running, self.waiting, self.kv_reserved = [], collections.deque(), 0

    # requests --------------------------------------------------------------------------
    def submit(self, prompt_tokens: int, target_tokens: int, *, slow: bool = False) -> Sequence:
        if prompt_tokens + target_tokens > self.max_kv_tokens:
            raise ValueError("sequence larger than the KV cache")
        seq = Sequence(max(1, prompt_tokens), max(1, target_tokens), slow=slow, arrival_s=self.clock_s)
        self.waiting.append(seq)
        self._wake.set()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Drop a sequence whose client went away (its KV is freed at the next step)."""
        if seq.finished or seq.cancelled:
            return
        seq.cancelled = True
        try:
            self.waiting.remove(seq)
        except ValueError:
            pass

    def stats(self) -> dict[str, float | int]:
        return {
            "model_seconds": self.clock_s,
            "steps": self.steps,
            "energy_joules": self.energy_joules,
            "prefill_tokens": self.prefill_tokens_total,
            "decode_tokens": self.decode_tokens_total,
            "running": len(self.running),
            "waiting": len(self.waiting),
            "kv_tokens_reserved": self.kv_reserved,
            "max_running_seen": self.max_running_seen,
        }

    # the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                await self._loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or a step-model error: fail requests, keep serving
                log.exception("emulator engine step failed")
                self._fail_all(f"emulator engine error: {exc}")

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled()
            self._admit()
            if not self.running:
                self._wake.clear()
                if not self.waiting:
                    await self._wake.wait()
                continue
            work, prefill, decode, kv = self._plan()
            step_s = self.sm.step_seconds(prefill_tokens=prefill, decode_seqs=decode, kv_tokens=kv)
            watts = self.sm.step_watts(prefill_tokens=prefill, decode_seqs=decode, kv_tokens=kv)
            await self._sleep(loop, step_s * self.time_scale)
            self.clock_s += step_s
            self.steps += 1
            self.energy_joules += watts * step_s
            self._apply(work, step_s * watts)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, wall_s: float) -> None:
        # Keep to the schedule across steps (our own overhead is absorbed, small lateness
        # is caught up), but never burst to catch up on a long stall.
        now = loop.time()
        self._deadline = max(self._deadline, now - _MAX_LATE_S) + wall_s
        delay = self._deadline - now
        await asyncio.sleep(delay if delay > 0 else 0)

    def _drop_cancelled(self) -> None:
        if any(s.cancelled for s in self.running):
            for s in self.running:
                if s.cancelled:
                    self.kv_reserved -= s.kv_reservation
            self.running = [s for s in self.running if not s.cancelled]

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.max_batch:
            seq = self.waiting[0]
            if self.kv_reserved + seq.kv_reservation > self.max_kv_tokens:
                break  # FCFS: the head waits for KV space
            self.waiting.popleft()
            seq.admitted_s = self.clock_s
            self.running.append(seq)
            self.kv_reserved += seq.kv_reservation
        self.max_running_seen = max(self.max_running_seen, len(self.running))

    def _plan(self) -> tuple[list[tuple[Sequence, int, bool]], int, int, int]:
        budget = self.prefill_chunk_tokens
        work: list[tuple[Sequence, int, bool]] = []  # (seq, tokens processed, is_prefill)
        prefill = decode = kv = 0
        for seq in self.running:
            remaining = seq.prompt_tokens - seq.prefilled
            if remaining > 0:
                chunk = min(remaining, budget)
                if chunk == 0:
                    continue
                budget -= chunk
                prefill += chunk
                work.append((seq, chunk, True))
            else:
                decode += 1
                kv += seq.prompt_tokens + seq.generated
                work.append((seq, 1, False))
        return work, prefill, decode, kv

    def _apply(self, work: list[tuple[Sequence, int, bool]], step_joules: float) -> None:
        total = sum(tokens for _, tokens, _ in work) or 1
        finished = False
        for seq, tokens, is_prefill in work:
            seq.energy_joules += step_joules * tokens / total
            if seq.cancelled:
                continue
            if seq.slow:
                seq._ticks += 1
                if seq._ticks % SLOW_FACTOR:
                    continue
            if is_prefill:
                seq.prefilled += tokens
                self.prefill_tokens_total += tokens
                if seq.prefilled < seq.prompt_tokens:
                    continue
                seq.first_token_s = self.clock_s
            seq.generated += 1
            self.decode_tokens_total += 1
            if seq.generated >= seq.target_tokens:
                seq.finished = True
                seq.finished_s = self.clock_s
                seq.done.set()
                finished = True
            seq.progress.set()
        if finished:
            for s in self.running:
                if s.finished:
                    self.kv_reserved -= s.kv_reservation
            self.running = [s for s in self.running if not s.finished]
