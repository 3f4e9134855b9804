"""Helper for test_crash: commits events forever from 16 concurrent tasks, printing each id
only after its commit returned. The test kill -9s this process mid-flight."""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import Decimal
from pathlib import Path

from tokenomy.metering import Metering, UsageEvent


def event(i: int, worker: int) -> UsageEvent:
    return UsageEvent(
        id=f"w{worker}-{i}", ts=time.time(), tenant="crash", key_id="k", model="m", deployment="d",
        input_tokens=10, cached_input_tokens=0, output_tokens=1, reasoning_tokens=0,
        cost_usd=Decimal("0.001"), price_usd=Decimal("0.002"), energy_joules=1.0, ttft_ms=None,
        latency_ms=1.0, status="ok")


async def main(data_dir: str) -> None:
    m = Metering.open(Path(data_dir), admin_key="a")  # synchronous=FULL: durable at commit return
    m.create_tenant("crash", exist_ok=True)
    await m.start()
    print("ready", flush=True)

    async def worker(w: int) -> None:
        i = 0
        while True:
            await m.commit(event(i, w))
            sys.stdout.write(f"w{w}-{i}\n")
            sys.stdout.flush()
            i += 1

    await asyncio.gather(*(worker(w) for w in range(16)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
