"""Saved results: `plan/simulate --save NAME` writes <data_dir>/plans/NAME.json for the dashboard's Plans page."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from tokenomy.errors import TokenomyError

# The names the dashboard's Plans page accepts (tokenomy.dashboard.plans._NAME).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,200}$")


def plans_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "plans"


def save_result(data_dir: Path | str, name: str, doc: dict) -> Path:
    """Write doc as <data_dir>/plans/NAME.json atomically (a reader never sees half a file)."""
    stem = name.removesuffix(".json")
    if not _NAME.match(stem) or ".." in stem:
        raise TokenomyError(f"bad --save name '{name}': use letters, digits and _ . @ + - (e.g. q3-h100-mix)")
    d = plans_dir(data_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=d)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=1)
            path = d / f"{stem}.json"
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise TokenomyError(f"cannot save '{stem}' in {d}: {exc.strerror or exc}") from None
    return path.resolve()
