"""Load generation against one endpoint: open-loop Poisson arrivals, trace replay, or a
closed loop of C concurrent clients. Always bounded by a request count and/or a duration
(no new request starts after `duration_s`; in-flight ones end by their timeout)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from .client import RequestResult, chat_body, stream_chat
from .prompts import make_messages


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved endpoint: where to send and how."""

    name: str
    chat_url: str
    model: str
    headers: dict[str, str]
    timeout_s: float


@dataclass(frozen=True)
class LoadPlan:
    lengths: list[tuple[int, int]]  # (prompt tokens, output tokens), cycled over requests
    rate_per_s: float | None = None  # open loop (math.inf: all at once)
    concurrency: int | None = None  # closed loop
    arrivals_s: list[float] | None = None  # trace replay offsets (seconds from the start)
    max_requests: int | None = None
    duration_s: float | None = None
    seed: int = 0
    seed_texts: list[str] | None = None  # real prompts to start the sized prompts with
    keep_text: bool = False

    def __post_init__(self) -> None:
        if self.max_requests is None and self.duration_s is None:
            raise ValueError("a load plan needs max_requests or duration_s")
        if not self.lengths:
            raise ValueError("a load plan needs at least one (prompt, output) length")


@dataclass
class LoadResult:
    results: list[RequestResult] = field(default_factory=list)
    duration_s: float = 0.0  # first send to last completion (vLLM's benchmark duration)
    rate_per_s: float | None = None
    concurrency: int | None = None


def arrival_offsets(plan: LoadPlan) -> list[float]:
    """Open-loop send times (seconds from the start): trace offsets or seeded Poisson gaps."""
    cap = plan.max_requests if plan.max_requests is not None else 10**7
    horizon = plan.duration_s if plan.duration_s is not None else math.inf
    if plan.arrivals_s is not None:
        return [t for t in plan.arrivals_s[:cap] if t <= horizon]
    rate = plan.rate_per_s
    if rate is None:
        raise ValueError("open loop needs rate_per_s or arrivals_s")
    if math.isinf(rate):
        n = plan.max_requests if plan.max_requests is not None else 1000
        return [0.0] * n
    rng = np.random.default_rng(plan.seed)
    out: list[float] = []
    t = 0.0
    while len(out) < cap:
        t += float(rng.exponential(1.0 / rate))
        if t > horizon:
            break
        out.append(t)
    return out


def _request(plan: LoadPlan, target: Target, i: int) -> tuple[dict, int]:
    prompt, output = plan.lengths[i % len(plan.lengths)]
    seed_text = plan.seed_texts[i % len(plan.seed_texts)] if plan.seed_texts else None
    messages = make_messages(prompt, i, plan.seed, seed_text=seed_text)
    return chat_body(target.model, messages, output), prompt


async def run_load(target: Target, plan: LoadPlan, *,
                   on_result: Callable[[RequestResult], None] | None = None) -> LoadResult:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, target.timeout_s))
    out = LoadResult(rate_per_s=plan.rate_per_s, concurrency=plan.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> RequestResult:
            body, prompt = _request(plan, target, i)
            res = await stream_chat(session, target.chat_url, body, headers=target.headers,
                                    timeout_s=target.timeout_s, index=i, prompt_tokens=prompt,
                                    keep_text=plan.keep_text)
            out.results.append(res)
            if on_result is not None:
                on_result(res)
            return res

        start = time.perf_counter()
        if plan.concurrency is not None:
            await _closed_loop(plan, one, start)
        else:
            await _open_loop(plan, one, start)
        out.duration_s = max(time.perf_counter() - start, 1e-9)  # all requests have ended here
    out.results.sort(key=lambda r: r.index)
    return out


async def _open_loop(plan: LoadPlan, one: Callable, start: float) -> None:
    tasks: list[asyncio.Task] = []
    for i, t in enumerate(arrival_offsets(plan)):
        delay = start + t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    if tasks:
        await asyncio.gather(*tasks)


async def _closed_loop(plan: LoadPlan, one: Callable, start: float) -> None:
    counter = iter(range(plan.max_requests if plan.max_requests is not None else 10**9))
    deadline = start + plan.duration_s if plan.duration_s is not None else math.inf

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() >= deadline:
                return
            await one(i)

    await asyncio.gather(*(worker() for _ in range(max(1, plan.concurrency or 1))))
