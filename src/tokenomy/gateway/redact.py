"""Secrets never reach a log line: API keys and bearer tokens are masked in every record.

aiohttp's HTTP parser quotes the offending raw header line in its errors (an `Authorization`
header ending in a control byte or a bare CR: a key file with CRLF endings), and its server
logs that error with the traceback. The gateway answers those itself without the raw line
(gateway/connguard.py); this filter is the second line: whatever a record says, a tenant key
(`tk-<id>-<secret>`), a bearer credential or an `Authorization:` value is masked before any
handler formats it.
"""

from __future__ import annotations

import logging
import re

# tk-<key id>-<secret> (metering/keyfmt.py), a bearer credential, an Authorization/x-api-key value
_PATTERNS = (
    re.compile(r"\btk-[A-Za-z0-9]+-[A-Za-z0-9_\-]+"),
    re.compile(r"(?i)(\bbearer\s+)[^\s'\"\\]+"),
    re.compile(r"(?i)((?:authorization|x-api-key|api-key)\s*[:=]\s*)[^\r\n'\"]+"),
)
MASK = "[redacted]"

# loggers that can carry a request's raw bytes (aiohttp's server/access/web, the gateway's own)
LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal", "tokenomy.gateway", "tokenomy")


def redact(text: str) -> str:
    """`text` with every key, bearer credential and Authorization value masked."""
    if "tk-" not in text and "earer" not in text and "uthorization" not in text.lower() and "api-key" not in text.lower():
        return text  # the common case: nothing to scan
    out = _PATTERNS[0].sub(MASK, text)
    out = _PATTERNS[1].sub(lambda m: m.group(1) + MASK, out)
    return _PATTERNS[2].sub(lambda m: m.group(1) + MASK, out)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and traceback text with `redact` (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: keep the raw template
            msg = str(record.msg)
        clean = redact(msg)
        if clean != msg or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
            record.exc_info = None  # formatters print exc_text; the raw exception is not formatted again
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def install() -> None:
    """Attach the filter to every logger that can see request bytes (idempotent)."""
    for name in LOGGERS:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
