"""Inline (event-loop) commits never overlap a WAL checkpoint of the same ledger: while one runs,
`append_nowait` declines (nothing written) and the metering writer thread commits instead."""

from __future__ import annotations

import time
from decimal import Decimal

from tokenomy.metering import Metering, UsageEvent
from tokenomy.metering.sqlite_ledger import SqliteLedger


def _event(i: int, key_id: str, tenant: str = "t1") -> UsageEvent:
    return UsageEvent(id=f"req_ck_{i}", ts=time.time(), tenant=tenant, key_id=key_id, model="m", deployment="d1",
                      input_tokens=10, cached_input_tokens=0, output_tokens=5, reasoning_tokens=0,
                      cost_usd=Decimal("0.001"), price_usd=Decimal("0.001"), energy_joules=0.0, ttft_ms=None,
                      latency_ms=1.0, status="ok", estimated=False, http_status=200, extra={"policy": "x"})


def test_append_nowait_declines_while_a_checkpoint_runs(tmp_path):
    m = Metering.open(tmp_path, admin_key="tk-admin-x", synchronous="NORMAL")
    try:
        key_id = m.create_key("t1")[0]
        ledger = m.ledger
        assert isinstance(ledger, SqliteLedger)
        with ledger._ckpt_lock:  # as the checkpointer thread holds it during wal_checkpoint
            assert ledger.append_nowait([_event(1, key_id)]) is None
        assert ledger.count_event("req_ck_1") == 0  # nothing written
        assert ledger.append_nowait([_event(1, key_id)]) == [True]
        assert ledger.count_event("req_ck_1") == 1
        assert not ledger._ckpt_lock.locked() and not ledger._wlock.locked()
    finally:
        m.shutdown()


async def test_commit_during_a_checkpoint_goes_through_the_writer_thread(tmp_path):
    m = Metering.open(tmp_path, admin_key="tk-admin-x", synchronous="NORMAL")
    try:
        await m.start()
        key_id = m.create_key("t1")[0]
        ledger = m.ledger
        assert await m.commit(_event(1, key_id)) is True  # inline
        batches = m._writer.batches
        with ledger._ckpt_lock:
            assert await m.commit(_event(2, key_id)) is True  # the writer thread committed it
        assert m._writer.batches == batches + 1
        assert ledger.count_event("req_ck_2") == 1
        assert await m.commit(_event(3, key_id)) is True  # inline again
        assert m._writer.batches == batches + 1
        assert m.usage("t1")["requests"] == 3
    finally:
        await m.close()


def _wal_frames(path) -> tuple[int, int]:
    """(frames in the WAL, frames copied into the database) as a PASSIVE checkpoint reports them."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames, copied
    finally:
        conn.close()


def test_the_checkpointer_restarts_the_wal_so_no_commit_syncs_its_header(tmp_path):
    import sqlite3

    from tokenomy.metering.sqlite_ledger import _connect, _restart_wal

    m = Metering.open(tmp_path, admin_key="tk-admin-x", synchronous="NORMAL")
    try:
        key_id = m.create_key("t1")[0]
        ledger = m.ledger
        ledger._start_checkpointer = lambda: None  # no checkpointer thread: this test drives the steps
        for i in range(20):
            assert ledger.append_nowait([_event(i, key_id)]) == [True]
        frames, copied = _wal_frames(ledger.path)
        assert frames > 20 and copied == frames  # complete: the next write restarts the WAL
        conn = _connect(ledger.path, "NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        _restart_wal(conn)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == version  # a no-op write
        conn.close()
        assert _wal_frames(ledger.path) == (1, 1)  # restarted: one frame from the start
        assert ledger.count_event("req_ck_19") == 1
    finally:
        m.shutdown()
    with sqlite3.connect(ledger.path) as conn:  # the ledger is intact
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 20


def test_the_checkpoint_thread_restarts_the_wal_after_a_complete_checkpoint(tmp_path):
    ledger = SqliteLedger.open(tmp_path, synchronous="NORMAL")
    ledger._checkpoint_interval_s = 0.01
    m = Metering(ledger)
    try:
        key_id = m.create_key("t1")[0]
        for i in range(20):
            assert ledger.append_nowait([_event(i, key_id)]) == [True]
        deadline = time.monotonic() + 30
        while _wal_frames(ledger.path)[0] != 1:  # the WAL restarted by the checkpointer (one no-op frame)
            assert time.monotonic() < deadline, "the checkpointer never restarted the WAL"
            time.sleep(0.02)
    finally:
        m.shutdown()
