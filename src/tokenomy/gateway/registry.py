"""Where running gateways say which ledger they use, so the CLI opens the same one.

`tokenomy up` writes `<pid>.json` ({pid, data_dir, host, port}) into the runtime directory
($TOKENOMY_RUNTIME_DIR, else $XDG_RUNTIME_DIR/tokenomy, else ~/.cache/tokenomy/run) and removes
it at exit; entries of processes that are gone are ignored and cleaned up. `keys create` without
--data-dir then writes to the ledger a gateway actually reads instead of a fresh ./.tokenomy.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path

ENV_RUNTIME_DIR = "TOKENOMY_RUNTIME_DIR"


def runtime_dir() -> Path:
    if os.environ.get(ENV_RUNTIME_DIR):
        return Path(os.environ[ENV_RUNTIME_DIR]).expanduser()
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "tokenomy"
    return Path.home() / ".cache" / "tokenomy" / "run"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True


def announce(data_dir: Path, host: str, port: int) -> Path | None:
    """Record this process as a gateway on `data_dir`; removed at exit. None if not writable."""
    directory = runtime_dir()
    entry = directory / f"{os.getpid()}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "data_dir": str(Path(data_dir).resolve()), "host": host, "port": port}, f)
    except OSError:
        return None
    atexit.register(lambda: entry.unlink(missing_ok=True))
    return entry


def running() -> list[dict]:
    """Gateways alive now, oldest first."""
    out = []
    directory = runtime_dir()
    for entry in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            info = json.loads(entry.read_text())
            pid = int(info["pid"])
            info["data_dir"] = str(info["data_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid == os.getpid() or _alive(pid):
            out.append(info)
        else:
            entry.unlink(missing_ok=True)
    return out
