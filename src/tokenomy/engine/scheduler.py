"""The continuous-batching scheduler of one replica (vLLM-like), timed by a step predictor.

Each step decodes one token for every running sequence and spends the rest of a token budget
on (chunked) prefill of admitted requests, FCFS. The prefill step that finishes a prompt emits
the request's first token; each later step emits one more. A request whose leading prompt
blocks are in the prefix cache skips their prefill compute (their KV is still read: it counts
as prefill context and as decode KV).

KV memory (`max_kv_tokens`) holds the admitted sequences' private tokens and the prefix
cache's blocks (see blocks.py): unreferenced cached blocks are evicted (LRU) before anything
is refused or preempted.
- "preempt" (vLLM): admit a request when its prompt fits; when decode growth would overflow,
  preempt the most recently arrived running sequence (free its KV, recompute later).
- "reserve": admit only when prompt + full output fits; never preempts.

Two drivers: `advance(until)` runs steps in virtual time (the simulator; decode-only stretches
between events are taken as one "macro step" whose time sums a linear-in-KV step time, exact
for a roofline); `step()` runs exactly one step (the emulator sleeps it in real time).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from heapq import heapify, heappop, heappush

from tokenomy.engine.blocks import PrefixCache
from tokenomy.engine.predictor import StepPredictor
from tokenomy.engine.request import DECODING, DROPPED, FINISHED, PREFILLING, WAITING, RequestTable
from tokenomy.errors import TokenomyError


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 256  # running sequences per replica (vLLM max_num_seqs)
    max_batched_tokens: int = 2048  # tokens per step: decodes + prefill chunks (chunked prefill)
    kv_policy: str = "preempt"  # "preempt" | "reserve"
    kv_watermark: float = 0.01  # share of KV kept free at admission (vLLM watermark)
    lb: str = "least-loaded"  # simulator routing: "least-loaded" | "round-robin" | "prefix-affinity"
    macro_steps: bool = True  # False: one decode step per event (slow; the reference for tests)
    prefix_caching: bool = True  # keep full prompt blocks for reuse (needs block hashes on requests)
    block_tokens: int = 16  # KV block size of the prefix cache (Mooncake traces hash 512-token blocks)

    def __post_init__(self) -> None:
        if self.kv_policy not in ("preempt", "reserve"):
            raise TokenomyError(f"unknown KV policy '{self.kv_policy}' (preempt or reserve)")
        if self.lb not in ("least-loaded", "round-robin", "prefix-affinity"):
            raise TokenomyError(f"unknown load balancer '{self.lb}' (least-loaded, round-robin or prefix-affinity)")
        if self.max_num_seqs < 1 or self.max_batched_tokens < 2:
            raise TokenomyError("max_num_seqs must be >= 1 and max_batched_tokens >= 2")
        if self.block_tokens < 1:
            raise TokenomyError("block_tokens must be >= 1")


@dataclass(slots=True)
class StepRecord:
    """What one step did (the emulator's view): duration, power, who processed how many tokens."""

    seconds: float
    watts: float
    chunks: list[tuple[int, int]]  # (rid, prefill tokens processed)
    decoded: list[int]  # rids that decoded a token
    running: int  # sequences admitted during the step (prefilling + decoding)


class ReplicaScheduler:
    __slots__ = (
        "pred", "cfg", "req", "cache", "cap", "admit_cap", "reserve", "clock", "waiting", "prefilling",
        "n_prefilling_tokens", "heap", "n_dec", "kv_dec", "kv_used", "kv_reserved", "held", "counter", "busy",
        "energy", "next_event", "peak_kv", "steps", "outstanding", "preemptions", "fin_time", "fin_count",
        "slot_seconds", "token_seconds", "finished_now", "B", "leaders",
    )

    def __init__(self, predictor: StepPredictor, cfg: SchedulerConfig, requests: RequestTable,
                 max_kv_tokens: int | None = None) -> None:
        self.pred = predictor
        self.cfg = cfg
        self.req = requests
        self.cache = PrefixCache(cfg.block_tokens, enabled=cfg.prefix_caching)
        self.B = cfg.block_tokens
        self.cap = int(max_kv_tokens if max_kv_tokens is not None else predictor.max_kv_tokens)
        self.admit_cap = self.cap - int(cfg.kv_watermark * self.cap)
        self.reserve = cfg.kv_policy == "reserve"
        self.clock = 0.0
        self.waiting: deque[int] = deque()
        self.prefilling: deque[list[int]] = deque()  # [rid, prompt tokens left, ticks]
        self.n_prefilling_tokens = 0
        self.heap: list[tuple[int, int]] = []  # (decode step at which rid finishes, rid)
        self.n_dec = 0  # sequences in decode
        self.kv_dec = 0  # KV tokens read by decoding sequences (cached prefix included)
        self.kv_used = 0  # context tokens of all admitted sequences (cached prefix included)
        self.kv_reserved = 0  # "reserve": prompt + output of admitted sequences
        self.held = 0  # tokens of cache blocks referenced by admitted sequences (counted once in the cache)
        self.counter = 0  # decode steps done
        self.busy = 0.0
        self.energy = 0.0
        self.next_event = math.inf
        self.peak_kv = 0
        self.steps = 0
        self.outstanding = 0
        self.preemptions = 0
        self.fin_time = -math.inf  # end of the last step that finished requests, and how many
        self.fin_count = 0
        self.slot_seconds = 0.0  # sum over steps of running sequences x step time
        self.token_seconds = 0.0  # sum over steps of tokens processed x step time
        self.finished_now: list[int] = []  # rids finished by the last step() (emulator)
        self.leaders: set[int] = set()  # group leaders not yet admitted (submit_group)

    # memory ------------------------------------------------------------------------------
    def mem_tokens(self) -> int:
        """KV memory in use: sequences' own tokens plus every cached block once."""
        base = self.kv_reserved if self.reserve else self.kv_used
        return base - self.held + self.cache.tokens

    def _fits(self, rid: int) -> tuple[bool, int]:
        """Whether `rid` can be admitted now (evicting idle cached blocks if needed); its cached blocks."""
        req = self.req
        if self.n_dec + len(self.prefilling) >= self.cfg.max_num_seqs:
            return False, 0
        ctx = req.ctx[rid]
        k, idle = self.cache.match(req.hashes[rid], (ctx - 1) // self.B)
        need = ctx - k * self.B + (req.remaining[rid] if self.reserve else 0)
        limit = self.cap if self.reserve else self.admit_cap
        room = limit - self.mem_tokens() + self.cache.evictable_tokens - idle * self.B
        return need <= room, k

    def can_admit(self, rid: int) -> bool:
        return self._fits(rid)[0]

    def _admit(self, rid: int, k: int) -> int:
        """Admit `rid` with its first k blocks cached; returns the tokens left to prefill."""
        req, cache, B = self.req, self.cache, self.B
        ctx = req.ctx[rid]
        if k:
            cache.acquire(req.hashes[rid], k)
            req.blocks_held[rid] = k
            self.held += k * B
        self.kv_used += ctx
        if self.reserve:
            self.kv_reserved += ctx + req.remaining[rid]
        limit = self.cap if self.reserve else self.admit_cap
        over = self.mem_tokens() - limit
        if over > 0:
            cache.evict(over)
        if req.state[rid] == WAITING and req.admitted_s[rid] != req.admitted_s[rid]:
            req.admitted_s[rid] = self.clock
            req.cached_tokens[rid] = k * B
        req.state[rid] = PREFILLING
        if self.leaders and rid in self.leaders:
            self.leaders.discard(rid)
            self._publish(rid)  # its siblings, queued right behind it, hit these blocks in this batch
        return ctx - k * B

    def _publish(self, rid: int) -> None:
        """A finished prefill publishes its full prompt blocks to the cache."""
        req, cache = self.req, self.cache
        if not cache.enabled:
            return
        hashes = req.hashes[rid]
        n = min(len(hashes), req.prompt[rid] // self.B)
        k = req.blocks_held[rid]
        if n <= k:
            return
        for i in range(k, n):
            cache.publish(hashes[i])
        req.blocks_held[rid] = n
        self.held += (n - k) * self.B

    def _unhold(self, rid: int) -> None:
        req = self.req
        k = req.blocks_held[rid]
        if k:
            self.cache.release(req.hashes[rid], k)
            self.held -= k * self.B
            req.blocks_held[rid] = 0

    # lifecycle of a request ----------------------------------------------------------------
    def submit(self, rid: int) -> None:
        self.req.state[rid] = WAITING
        self.waiting.append(rid)
        self.outstanding += 1
        self.next_event = self.clock

    def submit_group(self, rids: list[int]) -> None:
        """Submit requests that share one prompt (OpenAI's `n`): vLLM V1 fans an `n > 1` request out
        into n requests with n=1 and lets the prefix cache share the prompt, also within one batch
        (vllm-project/vllm#10980). So the leader's full prompt blocks enter the cache when it is
        admitted, not when its prefill ends, and its siblings (FCFS right behind it) reference them:
        one prefill of the prompt, each sibling computing only its partial tail block (at least one
        token, like any cache hit), n decoding sequences in the batch, the shared blocks held once.
        Needs prefix caching and the prompt's block hashes; without them each prefills the whole
        prompt, as vLLM does with prefix caching off."""
        if len(rids) > 1:
            self.leaders.add(rids[0])
        for rid in rids:
            self.submit(rid)

    def _finish(self, rid: int, t: float) -> None:
        req = self.req
        req.finished_s[rid] = t
        req.finish_count[rid] += 1
        req.state[rid] = FINISHED
        self._unhold(rid)
        self.outstanding -= 1
        self.finished_now.append(rid)
        if t == self.fin_time:
            self.fin_count += 1
        else:
            self.fin_time = t
            self.fin_count = 1

    def drop(self, rid: int) -> None:
        """Remove a request wherever it is (a client went away); frees its KV."""
        req = self.req
        st = req.state[rid]
        self.leaders.discard(rid)
        if st == WAITING:
            try:
                self.waiting.remove(rid)
            except ValueError:
                return
        elif st == PREFILLING:
            for i, entry in enumerate(self.prefilling):
                if entry[0] == rid:
                    del self.prefilling[i]
                    self.n_prefilling_tokens -= entry[1]
                    break
            self.kv_used -= req.ctx[rid]
            if self.reserve:
                self.kv_reserved -= req.ctx[rid] + req.remaining[rid]
        elif st == DECODING:
            heap = self.heap
            i = next(j for j, e in enumerate(heap) if e[1] == rid)
            heap[i] = heap[-1]
            heap.pop()
            heapify(heap)
            kv_now = req.offset[rid] + self.counter
            self.n_dec -= 1
            self.kv_dec -= kv_now
            self.kv_used -= kv_now
            if self.reserve:
                self.kv_reserved -= req.prompt[rid] + req.out[rid]
        else:
            return
        self._unhold(rid)
        req.state[rid] = DROPPED
        self.outstanding -= 1

    def generated(self, rid: int) -> int:
        """Tokens emitted so far by `rid`."""
        req = self.req
        st = req.state[rid]
        if st == FINISHED:
            return req.out[rid]
        if st == DECODING:
            s = req.stride[rid]
            return req.out[rid] - -(-(req.fin_at[rid] - self.counter) // s)
        return req.out[rid] - req.remaining[rid]

    def _preempt_one(self) -> None:
        # Victim: the latest-arrived decoding sequence (vLLM FCFS preempts the newest).
        req = self.req
        heap = self.heap
        i = max(range(len(heap)), key=lambda j: heap[j][1])
        fin, rid = heap[i]
        heap[i] = heap[-1]
        heap.pop()
        heapify(heap)
        s = req.stride[rid]
        left = -(-(fin - self.counter) // s)
        kv_now = req.offset[rid] + self.counter
        self.n_dec -= 1
        self.kv_dec -= kv_now
        self.kv_used -= kv_now
        if self.reserve:
            self.kv_reserved -= req.prompt[rid] + req.out[rid]
        self._unhold(rid)
        req.ctx[rid] = req.prompt[rid] + (req.out[rid] - left)
        req.remaining[rid] = left
        req.state[rid] = WAITING
        self.waiting.appendleft(rid)
        self.preemptions += 1

    def _make_room_for_decode(self, n_dec: int) -> int:
        """Evict idle cached blocks, then preempt, until one decode step of `n_dec` fits."""
        while n_dec:
            over = self.mem_tokens() + n_dec - self.cap
            if over <= 0:
                break
            if self.cache.lru:
                self.cache.evict(over)
                continue
            self._preempt_one()
            n_dec = self.n_dec
        return n_dec

    # steps ---------------------------------------------------------------------------------
    def has_prefill_work(self) -> bool:
        return bool(self.prefilling) or (bool(self.waiting) and self.can_admit(self.waiting[0]))

    def _mixed_step(self, record: bool = False) -> StepRecord | None:
        """One step with prefill work (and the decodes of all running sequences)."""
        req = self.req
        ctx, remaining, stride = req.ctx, req.remaining, req.stride
        budget = self.cfg.max_batched_tokens - self.n_dec
        if budget <= 0:
            budget = 1  # always make prefill progress
        waiting = self.waiting
        prefilling = self.prefilling
        queued_tokens = self.n_prefilling_tokens
        while waiting and queued_tokens < budget:
            ok, k = self._fits(waiting[0])
            if not ok:
                break
            rid = waiting.popleft()
            left = self._admit(rid, k)
            prefilling.append([rid, left, 0])
            queued_tokens += left
        # Chunks FCFS.
        done: list[int] = []
        chunks: list[tuple[int, int]] = []
        p_tokens = 0
        p_context = 0  # tokens already in KV for the chunks (attention cost of chunked prefill and hits)
        p_seqs = 0
        for entry in prefilling:
            c = entry[1] if entry[1] < budget - p_tokens else budget - p_tokens
            if c <= 0:
                break
            rid = entry[0]
            p_context += ctx[rid] - entry[1]
            p_seqs += 1
            p_tokens += c
            if record:
                chunks.append((rid, c))
            s = stride[rid]
            if s > 1:
                entry[2] += 1
                if entry[2] % s:
                    continue  # computed, but a slow request only progresses on one step in s
            entry[1] -= c
            queued_tokens -= c
            if entry[1] == 0:
                done.append(rid)
        if p_tokens == 0 and self.n_dec == 0:
            raise AssertionError("a step with no work")
        n_dec = self.n_dec
        if not self.reserve:
            n_dec = self._make_room_for_decode(n_dec)
        decoded = [rid for _, rid in self.heap] if record else []
        running = n_dec + len(prefilling)
        dt, w = self.pred.step(p_tokens, n_dec, self.kv_dec, p_context, p_seqs)
        t = self.clock + dt
        self.clock = t
        self.busy += dt
        self.energy += w * dt
        self.steps += 1
        self.slot_seconds += running * dt
        self.token_seconds += (n_dec + p_tokens) * dt
        self.n_prefilling_tokens = queued_tokens
        if done:
            gone = set(done)
            self.prefilling = prefilling = deque(e for e in prefilling if e[0] not in gone)
        if n_dec:
            self.counter += 1
            self.kv_dec += n_dec
            self.kv_used += n_dec
            self._pop_finished(t)
        heap = self.heap
        first_token_s, offset, fin_at, state = req.first_token_s, req.offset, req.fin_at, req.state
        for rid in done:
            self._publish(rid)
            if first_token_s[rid] != first_token_s[rid]:  # NaN: first time this request emits
                first_token_s[rid] = t
            left = remaining[rid] - 1
            kv = ctx[rid] + 1
            self.kv_used += 1
            if left == 0:
                self.kv_used -= kv
                if self.reserve:
                    self.kv_reserved -= req.prompt[rid] + req.out[rid]
                self._finish(rid, t)
            else:
                offset[rid] = kv - self.counter
                f = self.counter + left * stride[rid]
                fin_at[rid] = f
                heappush(heap, (f, rid))
                state[rid] = DECODING
                self.n_dec += 1
                self.kv_dec += kv
        m = self.mem_tokens()
        if m > self.peak_kv:
            self.peak_kv = m
        if record:
            return StepRecord(dt, w, chunks, decoded, running)
        return None

    def _pop_finished(self, t: float) -> None:
        req = self.req
        heap = self.heap
        c = self.counter
        while heap and heap[0][0] <= c:
            _, rid = heappop(heap)
            kv = req.offset[rid] + c
            self.n_dec -= 1
            self.kv_dec -= kv
            self.kv_used -= kv
            if self.reserve:
                self.kv_reserved -= req.prompt[rid] + req.out[rid]
            self._finish(rid, t)

    def step(self) -> StepRecord | None:
        """Exactly one step (the emulator's driver); None when there is nothing to run."""
        self.finished_now = []
        if self.has_prefill_work():
            return self._mixed_step(record=True)
        n_dec = self.n_dec
        if n_dec == 0:
            return None
        if not self.reserve:
            n_dec = self._make_room_for_decode(n_dec)
            if self.has_prefill_work():  # a preempted sequence went back to the queue
                return self._mixed_step(record=True)
        decoded = [rid for _, rid in self.heap]
        kv0 = self.kv_dec
        dt = self.pred.decode_seconds(n_dec, kv0)
        w = self.pred.decode_watts(n_dec, kv0)
        self.clock += dt
        self.busy += dt
        self.energy += w * dt
        self.steps += 1
        self.slot_seconds += n_dec * dt
        self.token_seconds += n_dec * dt
        self.counter += 1
        self.kv_dec += n_dec
        self.kv_used += n_dec
        m = self.mem_tokens()
        if m > self.peak_kv:
            self.peak_kv = m
        self._pop_finished(self.clock)
        return StepRecord(dt, w, [], decoded, n_dec)

    def advance(self, until: float) -> None:
        """Run steps until the clock reaches `until` (the last step may cross it): the simulator."""
        macro = self.cfg.macro_steps
        pred = self.pred
        while self.clock < until:
            if self.prefilling or (self.waiting and self.can_admit(self.waiting[0])):
                self._mixed_step()
                self.next_event = self.clock
                continue
            n_dec = self.n_dec
            if n_dec == 0:
                self.next_event = math.inf
                return
            c = self.counter
            k = self.heap[0][0] - c if macro else 1
            if not self.reserve:
                room = self.cap - self.mem_tokens()
                if room < n_dec and self.cache.lru:
                    self.cache.evict(n_dec - room)
                    continue
                k_kv = room // n_dec
                if k_kv <= 0:
                    self._preempt_one()
                    continue
                if k_kv < k:
                    k = k_kv
            kv0 = self.kv_dec
            t0 = pred.decode_seconds(n_dec, kv0)
            slope = 0.0
            if k > 1:
                slope = (pred.decode_seconds(n_dec, kv0 + n_dec * (k - 1)) - t0) / (k - 1)
            total = k * t0 + slope * k * (k - 1) * 0.5
            j = k
            if self.clock + total > until:
                # Smallest j with j*t0 + slope*j*(j-1)/2 >= until - clock.
                d = until - self.clock
                if slope > 1e-15:
                    b = t0 - 0.5 * slope
                    j = math.ceil((-b + math.sqrt(b * b + 2.0 * slope * d)) / slope - 1e-9)
                else:
                    j = math.ceil(d / t0 - 1e-9)
                j = 1 if j < 1 else (k if j > k else j)
                while j > 1 and (j - 1) * t0 + slope * (j - 1) * (j - 2) * 0.5 >= d:
                    j -= 1
                while j < k and j * t0 + slope * j * (j - 1) * 0.5 < d:
                    j += 1
                dt = j * t0 + slope * j * (j - 1) * 0.5
                self.next_event = self.clock + total  # the next completion, unless the batch changes
            else:
                dt = total
            w = pred.decode_watts(n_dec, kv0 + (n_dec * (j - 1)) // 2)
            self.clock += dt
            self.busy += dt
            self.energy += w * dt
            self.steps += j
            self.slot_seconds += n_dec * dt
            self.token_seconds += n_dec * dt
            self.counter = c + j
            self.kv_dec = kv0 + n_dec * j
            self.kv_used += n_dec * j
            m = self.mem_tokens()
            if m > self.peak_kv:
                self.peak_kv = m
            if j == k:
                self._pop_finished(self.clock)
                self.next_event = self.clock
        if not (self.prefilling or self.waiting or self.n_dec):
            self.next_event = math.inf
