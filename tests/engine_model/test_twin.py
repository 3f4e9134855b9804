"""The emulator and the simulator run ONE engine model: the same arrivals give the same schedule.

The emulator's engine is driven on a virtual clock (time_scale 0, requests submitted when its
model clock reaches their arrival) and compared with `simulate` on one replica configured the
same way (reserve KV, no watermark, step-by-step): identical first-token and finish times.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tokenomy.catalog import load_catalog
from tokenomy.emulator.engine import Engine
from tokenomy.engine.scheduler import SchedulerConfig
from tokenomy.fleet.simulator import simulate
from tokenomy.fleet.workload import Trace
from tokenomy.perf import make_step_model


@pytest.fixture(scope="module")
def sm():
    cat = load_catalog()
    return make_step_model(cat.model("llama-3-8b"), cat.accelerator("h100"))


ARRIVALS = [0.0, 0.0, 0.01, 0.02, 0.05, 0.05, 0.3, 0.31]
PROMPTS = [900, 3000, 120, 2500, 64, 700, 4000, 16]
OUTPUTS = [40, 12, 60, 5, 30, 1, 20, 80]


async def _emulate(sm, hashes=None) -> tuple[list[float], list[float], list[int]]:
    eng = Engine(sm, max_batch=4, max_kv_tokens=12_000, prefill_chunk_tokens=1024, time_scale=0.0)
    eng.start()
    seqs = []
    try:
        for i, t in enumerate(ARRIVALS):
            while eng.clock_s < t and (eng.sched.waiting or eng.sched.prefilling or eng.sched.n_dec):
                await asyncio.sleep(0)
            if eng.clock_s < t:  # idle: the model clock jumps to the arrival, as the simulator's does
                eng.sched.clock = t
            seqs.append(eng.submit(PROMPTS[i], OUTPUTS[i], block_hashes=hashes[i] if hashes else ()))
        await asyncio.gather(*(s.done.wait() for s in seqs))
    finally:
        await eng.stop()
    return ([s.arrival_s + s.timings()["ttft_seconds"] for s in seqs], [s.finished_s for s in seqs],
            [s.cached_tokens for s in seqs])


def _simulate(sm, hashes=None):
    tr = Trace(np.array(ARRIVALS), np.array(PROMPTS), np.array(OUTPUTS), "twin",
               tuple(hashes) if hashes else None, 16 if hashes else 0)
    cfg = SchedulerConfig(max_num_seqs=4, max_batched_tokens=1024, kv_policy="reserve", kv_watermark=0.0,
                          macro_steps=False)
    from tokenomy.fleet.deployment import KVCapped

    return simulate(tr, KVCapped(sm, 12_000), replicas=1, config=cfg)


async def test_emulator_and_simulator_give_the_same_schedule(sm) -> None:
    first, fin, _ = await _emulate(sm)
    res = _simulate(sm)
    assert res.completed == len(ARRIVALS)
    # Both queue an arrival at the first step boundary at or after it (the emulator's loop
    # between steps, the simulator's advance-to-arrival): the same steps, the same times.
    assert np.allclose(first, res.first_token_at, rtol=1e-12, atol=1e-12)
    assert np.allclose(fin, res.finished_at, rtol=1e-12, atol=1e-12)


async def test_same_schedule_exactly_when_arrivals_are_together(sm) -> None:
    global ARRIVALS
    saved = ARRIVALS
    ARRIVALS = [0.0] * len(saved)
    try:
        first, fin, _ = await _emulate(sm)
        res = _simulate(sm)
    finally:
        ARRIVALS = saved
    assert np.allclose(first, res.first_token_at, rtol=1e-12, atol=1e-12)
    assert np.allclose(fin, res.finished_at, rtol=1e-12, atol=1e-12)


async def test_same_schedule_and_hits_with_the_prefix_cache(sm) -> None:
    # Requests sharing leading 16-token blocks: both engines hit the same blocks at the same steps.
    hashes = [list(range(1, 57)), list(range(1, 40)) + [900 + i for i in range(140)], list(range(1, 8)),
              [500 + i for i in range(156)], [1, 2, 3, 4], list(range(1, 44)), list(range(1, 200)), [1]]
    hashes = [h[: p // 16] for h, p in zip(hashes, PROMPTS)]
    first, fin, cached = await _emulate(sm, hashes)
    res = _simulate(sm, hashes)
    assert cached == res.cached_tokens.tolist()
    assert sum(cached) > 0
    assert np.allclose(first, res.first_token_at, rtol=1e-12, atol=1e-12)
    assert np.allclose(fin, res.finished_at, rtol=1e-12, atol=1e-12)
