"""Parse --since/--until: ISO dates/datetimes (UTC if no zone) or relative ages like 24h, 7d."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from tokenomy.errors import TokenomyError

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_time(text: str, *, now: float, option: str = "--since") -> float:
    """Epoch seconds for '24h' (now - 24 h), '7d', '30m', '2026-11-01', '2026-11-01T12:00:00Z'
    or 'now'. Raises TokenomyError naming the option on anything else."""
    value = text.strip()
    if value.lower() == "now":
        return now
    match = _RELATIVE.match(value)
    if match:
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise TokenomyError(
            f"{option} '{text}' is not a time: use an ISO date/time (2026-11-01, 2026-11-01T12:00Z) "
            "or an age like 30m, 24h, 7d, 2w") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
