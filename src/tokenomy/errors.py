"""Errors users see. Each carries a one-line message meant for a person."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TokenomyError(Exception):
    """Base class: a clear, user-facing problem (bad input, unknown name, bad config)."""


class UnknownNameError(TokenomyError, KeyError):
    """An unknown model/accelerator/site/... name, with the close matches in its message."""

    MAX_LISTED = 20

    def __init__(self, kind: str, name: str, known: Iterable[str], *, list_command: str | None = None):
        """`list_command`: the command that lists every name (named when the list is cut)."""
        known = sorted(set(known))
        close = difflib.get_close_matches(name, known, n=4, cutoff=0.4)  # best match first
        hint = f"; did you mean {', '.join(close)}? known" if close else "; known"
        # the close matches first, then the rest alphabetically; a cut list says how much is left out
        listed = list(dict.fromkeys([*close, *known]))[: self.MAX_LISTED]
        more = len(known) - len(listed)
        tail = f" and {more} more" + (f" (`{list_command}`)" if list_command else "") if more > 0 else ""
        self.kind, self.name, self.close = kind, name, close
        super().__init__(f"unknown {kind} '{name}'{hint} ({len(known)}): {', '.join(listed)}{tail}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ConfigError(TokenomyError):
    """An invalid configuration file; the message names the offending field."""
