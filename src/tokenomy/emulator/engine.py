"""The emulator's engine: the shared engine model (`tokenomy.engine`) driven in real time.

One asyncio task runs the replica scheduler one step at a time (the same scheduler, KV block
manager, prefix cache and step-time source the fleet simulator runs in virtual time) and
sleeps each step's `step_seconds * time_scale`; then it wakes the sequences that got tokens.
So TTFT grows with prefill and queueing, a cached prefix skips its prefill compute, and the
time per output token grows with the batch.

Times reported per sequence are *model* seconds (sums of step times, unaffected by
`time_scale`); energy is `step_watts * step_seconds` split across the step's sequences in
proportion to the tokens each processed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from tokenomy.engine.predictor import StepPredictor
from tokenomy.engine.request import RequestTable
from tokenomy.engine.scheduler import ReplicaScheduler, SchedulerConfig

from .stepmodel import StepModelLike

log = logging.getLogger(__name__)

SLOW_FACTOR = 10  # a "slow" sequence advances on one step in ten (10x its TTFT and TPOT)
_MAX_LATE_S = 0.005  # how far behind schedule the loop may catch up (wall seconds)
DEFAULT_BLOCK_TOKENS = 16  # vLLM's default KV block size


@dataclass(eq=False)
class Sequence:
    rid: int
    prompt_tokens: int  # tokens the engine prefills (>= 1)
    target_tokens: int  # tokens it will generate (>= 1)
    slow: bool = False
    generated: int = 0
    finished: bool = False
    cancelled: bool = False
    error: str | None = None  # set when the engine failed this sequence (then `done` is set)
    energy_joules: float = 0.0
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    # model-time clock readings (seconds)
    arrival_s: float = 0.0
    admitted_s: float | None = None
    first_token_s: float | None = None
    finished_s: float | None = None
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set on every new token
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set once, when finished

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
                 prefill_chunk_tokens: int = 2048, time_scale: float = 1.0, kv_policy: str = "reserve",
                 prefix_caching: bool = True, block_tokens: int = DEFAULT_BLOCK_TOKENS):
        self._sm = sm
        self.max_batch = max_batch
        self.max_kv_tokens = max_kv_tokens
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.time_scale = time_scale
        self.config = SchedulerConfig(max_num_seqs=max_batch, max_batched_tokens=prefill_chunk_tokens,
                                      kv_policy=kv_policy, kv_watermark=0.0, macro_steps=False,
                                      prefix_caching=prefix_caching, block_tokens=block_tokens)
        self._new_scheduler()
        self.steps = 0
        self.energy_joules = 0.0
        self.prefill_tokens_total = 0
        self.decode_tokens_total = 0
        self.cached_tokens_total = 0
        self.prompt_tokens_total = 0
        self.max_running_seen = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deadline = 0.0

    def _new_scheduler(self) -> None:
        self.requests = RequestTable()
        self.sched = ReplicaScheduler(StepPredictor(self.sm), self.config, self.requests,
                                      max_kv_tokens=self.max_kv_tokens)
        self.live: dict[int, Sequence] = {}

    @property
    def sm(self) -> StepModelLike:
        return self._sm

    @sm.setter
    def sm(self, sm: StepModelLike) -> None:  # swap the step-time source (tests inject failures)
        self._sm = sm
        self.sched.pred = StepPredictor(sm)

    @property
    def clock_s(self) -> float:
        return self.sched.clock  # model time: sum of step times

    @property
    def block_tokens(self) -> int:
        return self.config.block_tokens

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
        for seq in self.live.values():
            if not seq.finished:
                seq.error = reason
                seq.done.set()
                seq.progress.set()
        clock = self.sched.clock
        self._new_scheduler()  # the KV state of a failed engine is gone, cache included
        self.sched.clock = clock

    # requests --------------------------------------------------------------------------
    def submit(self, prompt_tokens: int, target_tokens: int, *, slow: bool = False,
               block_hashes: Seq[int] = ()) -> Sequence:
        """Queue a sequence; `block_hashes`: chained hashes of its prompt's full KV blocks."""
        return self.submit_group(prompt_tokens, [target_tokens], slow=slow, block_hashes=block_hashes)[0]

    def submit_group(self, prompt_tokens: int, targets: Seq[int], *, slow: bool = False,
                     block_hashes: Seq[int] = ()) -> list[Sequence]:
        """Queue one sequence per target length, all on one prompt (OpenAI's `n`): the scheduler's
        submit_group shares the prompt's prefill through the prefix cache. They share one `progress`
        event, so a streaming handler wakes on any of them."""
        if any(prompt_tokens + t > self.max_kv_tokens for t in targets):
            raise ValueError("sequence larger than the KV cache")
        p, hashes = max(1, prompt_tokens), tuple(block_hashes)
        progress = asyncio.Event()
        seqs = []
        for t in targets:
            o = max(1, t)
            rid = self.requests.add(self.sched.clock, p, o, hashes, SLOW_FACTOR if slow else 1)
            seq = Sequence(rid, p, o, slow=slow, arrival_s=self.sched.clock, progress=progress)
            self.live[rid] = seq
            seqs.append(seq)
        self.sched.submit_group([s.rid for s in seqs])
        self._wake.set()
        return seqs

    def cancel(self, seq: Sequence) -> None:
        """Drop a sequence whose client went away (frees its batch slot and KV now)."""
        if seq.finished or seq.cancelled:
            return
        seq.cancelled = True
        if self.live.pop(seq.rid, None) is not None:
            self.sched.drop(seq.rid)
            self._wake.set()

    def stats(self) -> dict[str, float | int]:
        s = self.sched
        return {
            "model_seconds": s.clock,
            "steps": self.steps,
            "energy_joules": self.energy_joules,
            "prefill_tokens": self.prefill_tokens_total,
            "decode_tokens": self.decode_tokens_total,
            "running": s.n_dec + len(s.prefilling),
            "waiting": len(s.waiting),
            "kv_tokens_reserved": s.kv_reserved if s.reserve else s.kv_used,
            "kv_tokens_in_use": s.mem_tokens(),
            "prefix_cache_tokens": s.cache.tokens,
            "prefix_cache_hit_tokens": self.cached_tokens_total,
            "prefix_cache_hit_share": (self.cached_tokens_total / self.prompt_tokens_total)
            if self.prompt_tokens_total else 0.0,
            "kv_block_tokens": self.config.block_tokens,
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
        sched = self.sched
        while True:
            if sched is not self.sched:
                sched = self.sched
            rec = sched.step()
            if rec is None:  # nothing runnable: wait for a submission or a cancellation
                self._wake.clear()
                await self._wake.wait()
                continue
            self._admitted()
            self.max_running_seen = max(self.max_running_seen, rec.running)
            await self._sleep(loop, rec.seconds * self.time_scale)
            self.steps += 1
            self.energy_joules += rec.watts * rec.seconds
            self._apply(rec)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, wall_s: float) -> None:
        # Keep to the schedule across steps (our own overhead is absorbed, small lateness
        # is caught up), but never burst to catch up on a long stall.
        now = loop.time()
        self._deadline = max(self._deadline, now - _MAX_LATE_S) + wall_s
        delay = self._deadline - now
        await asyncio.sleep(delay if delay > 0 else 0)

    def _admitted(self) -> None:
        req = self.requests
        for entry in self.sched.prefilling:
            seq = self.live.get(entry[0])
            if seq is not None and seq.admitted_s is None:
                seq.admitted_s = req.admitted_s[seq.rid]
                seq.cached_tokens = req.cached_tokens[seq.rid]
                self.cached_tokens_total += seq.cached_tokens
                self.prompt_tokens_total += seq.prompt_tokens

    def _apply(self, rec) -> None:  # type: ignore[no-untyped-def]
        sched, req, live = self.sched, self.requests, self.live
        total = sum(c for _, c in rec.chunks) + len(rec.decoded) or 1
        step_j = rec.seconds * rec.watts
        for rid, c in rec.chunks:
            self.prefill_tokens_total += c
            seq = live.get(rid)
            if seq is not None:
                seq.energy_joules += step_j * c / total
                if seq.admitted_s is None:  # admitted and finished within one step
                    seq.admitted_s = req.admitted_s[rid]
                    seq.cached_tokens = req.cached_tokens[rid]
                    self.cached_tokens_total += seq.cached_tokens
                    self.prompt_tokens_total += seq.prompt_tokens
        for rid in rec.decoded:
            seq = live.get(rid)
            if seq is not None:
                seq.energy_joules += step_j / total
        for rid in [r for r, _ in rec.chunks] + rec.decoded:
            seq = live.get(rid)
            if seq is None:
                continue
            g = sched.generated(rid)
            if g != seq.generated:
                self.decode_tokens_total += g - seq.generated
                if seq.first_token_s is None:
                    seq.first_token_s = req.first_token_s[rid]
                seq.generated = g
                seq.progress.set()
        for rid in sched.finished_now:
            seq = live.pop(rid, None)
            if seq is not None:
                seq.generated = req.out[rid]
                seq.finished = True
                seq.finished_s = req.finished_s[rid]
                seq.done.set()
                seq.progress.set()
