"""Issue 14 §6 (metering side): the PostgreSQL deployment's local files are owner-only like the
SQLite ledger's: the data directory 0700, the outbox (events waiting for PostgreSQL) 0600."""

from __future__ import annotations

import stat

from tokenomy.metering.outbox import OutboxLedger


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outbox_file_and_its_directory_are_owner_only(tmp_path):
    path = tmp_path / "fresh" / "outbox.db"
    outbox = OutboxLedger.__new__(OutboxLedger)  # only the file handling, no drainer thread
    outbox.path, outbox._db = path, None
    db = outbox._open_db()
    try:
        assert _mode(path.parent) == 0o700 and _mode(path) == 0o600
    finally:
        db.close()
    path.chmod(0o644)  # left world-readable by an older version: tightened on the next open
    outbox._db = None
    outbox._open_db().close()
    assert _mode(path) == 0o600


def test_a_postgres_metering_data_dir_is_created_owner_only(tmp_path, pg):
    from tokenomy.metering.backends import open_metering

    data_dir = tmp_path / "pgdata"
    m = open_metering(data_dir, ledger_url=pg, admin_key="test-admin-key-0123")
    try:
        assert _mode(data_dir) == 0o700
    finally:
        m.shutdown()
