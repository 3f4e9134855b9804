"""Group commit: one writer thread turns many pending events into one durable transaction.

Callers enqueue (event, reservation, future); the thread takes everything pending (up to
max_batch, optionally lingering a little to gather more), runs `apply` (one transaction +
counter settlement), then resolves the futures - per event loop, in one callback per batch.
While one transaction is being fsynced the next batch accumulates, so throughput grows with
concurrency while an idle ledger still commits each event immediately.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tokenomy.metering.store import AuditRecord
from tokenomy.metering.types import Reservation, UsageEvent

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Pending:
    event: UsageEvent
    reservation: Reservation | None
    future: Any  # asyncio.Future (with loop) or concurrent.futures.Future (loop None)
    loop: asyncio.AbstractEventLoop | None


Outcome = bool | BaseException  # recorded now / already recorded / this event failed
Apply = Callable[[Sequence[Pending], Sequence[AuditRecord]], list[Outcome]]


def _resolve(items: Sequence[Pending], outcomes: Sequence[Outcome]) -> None:
    for item, outcome in zip(items, outcomes):
        fut = item.future
        if fut.done():  # the caller gave up (cancelled); the event is recorded regardless
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


class GroupCommitWriter:
    def __init__(self, apply: Apply, *, max_batch: int = 512, linger_s: float = 0.0, name: str = "tokenomy-ledger"):
        self._apply = apply
        self._max_batch = max(1, int(max_batch))
        self._linger_s = max(0.0, float(linger_s))
        self._name = name
        self._cond = threading.Condition()
        self._events: deque[Pending] = deque()
        self._audits: list[AuditRecord] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # statistics: transactions and events committed
        self.committed = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._cond:
            if self.running:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Commit everything pending, then stop the thread (blocks until done)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        self._thread = None

    def submit(self, item: Pending) -> None:
        with self._cond:
            if self._stopping or not self.running:
                raise RuntimeError("ledger writer is not running")
            self._events.append(item)
            if len(self._events) == 1 or len(self._events) >= self._max_batch:
                self._cond.notify()

    def submit_audit(self, audit: AuditRecord) -> bool:
        with self._cond:
            if self._stopping or not self.running:
                return False
            self._audits.append(audit)
            self._cond.notify()
            return True

    def _take(self) -> tuple[list[Pending], list[AuditRecord]] | None:
        with self._cond:
            while not self._events and not self._audits and not self._stopping:
                self._cond.wait()
            if not self._events and not self._audits:
                return None  # stopping and drained
            if self._linger_s and not self._stopping and len(self._events) < self._max_batch:
                self._cond.wait_for(lambda: len(self._events) >= self._max_batch or self._stopping, self._linger_s)
            n = min(len(self._events), self._max_batch)
            batch = [self._events.popleft() for _ in range(n)]
            audits, self._audits = self._audits, []
            return batch, audits

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            batch, audits = taken
            try:
                outcomes = self._apply(batch, audits)
            except BaseException as exc:  # nothing was committed: callers see the error, reservations stay
                log.error("ledger commit of %d events failed: %s", len(batch), exc)
                outcomes = [exc] * len(batch)
            else:
                self.batches += 1
                self.committed += sum(not isinstance(o, BaseException) for o in outcomes)
            self._deliver(batch, outcomes)

    @staticmethod
    def _deliver(batch: list[Pending], outcomes: list[Outcome]) -> None:
        by_loop: dict[int, tuple[asyncio.AbstractEventLoop, list[int]]] = {}
        for i, item in enumerate(batch):
            if item.loop is None:
                _resolve([item], [outcomes[i]])
            else:
                by_loop.setdefault(id(item.loop), (item.loop, []))[1].append(i)
        for loop, idx in by_loop.values():
            try:
                loop.call_soon_threadsafe(_resolve, [batch[i] for i in idx], [outcomes[i] for i in idx])
            except RuntimeError:  # the caller's loop is closed; nobody is waiting any more
                pass


def blocking_future() -> concurrent.futures.Future:
    return concurrent.futures.Future()
