"""Where an export stands: a cursor in ledger order and the ids sent near it (exactly once).

Events are read in ledger order (recorded_at, id). A replica whose commit lands late can write an
event whose recorded_at is a little behind the cursor, so each run re-reads a look-back window
behind the cursor and skips the ids already sent there. Ids older than the window are dropped
from the state: the state stays small however long the export runs.

The file is written atomically (temp file + rename, 0600) after every acknowledged batch: a crash
loses at most the batch in flight, which the next run sends again with the same idempotency keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tokenomy.errors import TokenomyError

LOOKBACK_S = 300.0  # how late (in recorded_at order) a replica's commit may land and still be exported


@dataclass
class ExportState:
    target: str
    url: str
    cursor_recorded_at: float = 0.0
    sent: dict[str, float] = field(default_factory=dict)  # id -> recorded_at, within the look-back window
    exported_total: int = 0

    def mark(self, event_id: str, recorded_at: float) -> None:
        self.sent[event_id] = recorded_at
        self.exported_total += 1

    def advance(self, recorded_at: float, lookback_s: float) -> None:
        self.cursor_recorded_at = max(self.cursor_recorded_at, recorded_at)
        horizon = self.cursor_recorded_at - lookback_s
        self.sent = {i: r for i, r in self.sent.items() if r >= horizon}

    def to_json(self) -> dict:
        return {"version": 1, "target": self.target, "url": self.url, "cursor_recorded_at": self.cursor_recorded_at,
                "exported_total": self.exported_total, "sent": self.sent}


def default_state_path(data_dir: Path, target: str, url: str) -> Path:
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return Path(data_dir) / "exports" / f"{target}-{digest}.json"


def load_state(path: Path, target: str, url: str) -> ExportState:
    if not path.exists():
        return ExportState(target, url)
    try:
        d = json.loads(path.read_text())
        state = ExportState(str(d["target"]), str(d["url"]), float(d["cursor_recorded_at"]),
                            {str(k): float(v) for k, v in d["sent"].items()}, int(d.get("exported_total", 0)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TokenomyError(f"export state {path} is unreadable ({exc}); move it away to start over") from None
    if (state.target, state.url) != (target, url):
        raise TokenomyError(f"export state {path} belongs to --to {state.target} --url {state.url}, not {target} {url}")
    return state


def save_state(path: Path, state: ExportState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state.to_json(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
