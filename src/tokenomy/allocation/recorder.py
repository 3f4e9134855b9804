"""The gateway's side: every `interval_s`, one `capacity_intervals` row per self-hosted
deployment for the interval now running (whole aligned intervals, so replicas write the same key
and the first insert wins). Off the event loop (a thread), and a ledger that is briefly away only
delays the rows: the interval is written on the next tick (rows are keyed by interval, not by
tick). Injectable clock and sleep for tests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from tokenomy.allocation.spec import CostSpec
from tokenomy.allocation.store import CapacityStore, Interval

log = logging.getLogger("tokenomy.allocation")


class CapacityRecorder:
    def __init__(self, store: CapacityStore, specs: list[CostSpec], *, interval_s: int = 60,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.store, self.specs, self.interval_s = store, specs, int(interval_s)
        self.clock, self.sleep = clock, sleep
        self._pending: set[int] = set()  # interval starts not written yet (ledger away)

    def rows(self, start: int) -> list[Interval]:
        return [Interval(s.deployment, start, self.interval_s, s.key()) for s in self.specs]

    def tick(self) -> int:
        """Record the current interval (and any that could not be written before). Returns its start."""
        now = self.clock()
        start = int(now // self.interval_s * self.interval_s)
        self._pending.add(start)
        for s in sorted(self._pending):
            try:
                self.store.record(self.rows(s), now)
            except Exception as exc:  # noqa: BLE001 - the ledger may be away: retry next tick
                log.warning("capacity interval %s not recorded yet: %s", s, exc)
                return start
            self._pending.discard(s)
        return start

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.tick)
            now = self.clock()
            await self.sleep(self.interval_s - now % self.interval_s + 0.01)
