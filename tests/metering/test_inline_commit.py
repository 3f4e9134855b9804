"""Inline commits: with a ledger whose commit cannot block (SQLite at synchronous NORMAL), events
are committed on the event loop, one transaction per loop iteration; when the ledger is busy
(another process writing) they go to the writer thread, and the loop keeps running."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal

from tokenomy.metering import Metering
from tokenomy.metering.paths import ledger_path

from .conftest import make_event


async def test_concurrent_commits_inline_settle_budgets(tmp_path):
    m = Metering.open(tmp_path, admin_key="a", synchronous="NORMAL")
    kid, key = m.create_key("acme", budget_usd="100")
    p = m.authenticate(key)
    reservations = [m.reserve(p, Decimal("0.5")) for _ in range(200)]
    events = [make_event(tenant="acme", key_id=kid, price="0.25") for _ in range(200)]
    assert await asyncio.gather(*(m.commit(e, r) for e, r in zip(events, reservations))) == [True] * 200
    assert not m._writer.running  # every event was committed on the loop
    assert m.usage("acme")["requests"] == 200
    assert m.spend(p)["key"]["spent_usd"] == "50" and m.spend(p)["key"]["reserved_usd"] == "0"
    assert await m.commit(events[0]) is False  # idempotent: already recorded
    await m.close()


async def test_busy_ledger_falls_back_to_the_writer_thread(tmp_path):
    m = Metering.open(tmp_path, admin_key="a", synchronous="NORMAL")
    kid, _ = m.create_key("acme")
    other = sqlite3.connect(ledger_path(tmp_path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    task = asyncio.create_task(m.commit(make_event(tenant="acme", key_id=kid)))
    await asyncio.sleep(0.2)  # the loop is not blocked meanwhile
    assert not task.done() and m._writer.running
    other.execute("COMMIT")
    assert await asyncio.wait_for(task, 10) is True
    assert m.usage("acme")["requests"] == 1
    other.close()
    await m.close()


async def test_full_sync_never_commits_inline(tmp_path):
    m = Metering.open(tmp_path, admin_key="a", synchronous="FULL")
    kid, _ = m.create_key("acme")
    assert await m.commit(make_event(tenant="acme", key_id=kid)) is True
    assert m._writer.running  # FULL fsyncs each commit: only ever on the writer thread
    await m.close()


def test_events_queued_inline_are_committed_at_shutdown(tmp_path):
    m = Metering.open(tmp_path, admin_key="a", synchronous="NORMAL")
    kid, _ = m.create_key("acme")

    async def main():
        task = asyncio.create_task(m.commit(make_event(tenant="acme", key_id=kid)))
        await asyncio.sleep(0)  # queued, its flush not run yet
        await asyncio.to_thread(m.shutdown)  # shutdown hands the queued event to the writer
        return await task

    assert asyncio.run(main()) is True
    again = Metering.open(tmp_path, admin_key="a")
    assert again.usage("acme")["requests"] == 1
    again.shutdown()
