"""kill -9 while committing: every event whose commit returned is in the ledger exactly once."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from tokenomy.metering import Metering

HELPER = Path(__file__).with_name("crash_writer.py")


def test_kill_9_loses_no_acknowledged_event(tmp_path):
    proc = subprocess.Popen([sys.executable, str(HELPER), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        acknowledged = []
        while len(acknowledged) < 400:
            line = proc.stdout.readline()
            assert line, "writer exited early"
            acknowledged.append(line.strip())
    finally:
        proc.kill()  # SIGKILL: no clean shutdown, no checkpoint
        rest = proc.communicate(timeout=30)[0]
    acknowledged += [line for line in rest.splitlines() if line.strip()]
    assert proc.returncode == -9
    m = Metering.open(tmp_path, admin_key="a")
    assert all(m.ledger.count_event(i) == 1 for i in acknowledged)
    recorded = m.usage("crash")["requests"]
    assert recorded >= len(acknowledged) == len(set(acknowledged))  # in-flight commits may also have landed
    assert Decimal(m.usage("crash")["price_usd"]) == Decimal("0.002") * recorded  # each counted once
    m.shutdown()
