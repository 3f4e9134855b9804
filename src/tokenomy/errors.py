"""Errors users see. Each carries a one-line message meant for a person."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TokenomyError(Exception):
    """Base class: a clear, user-facing problem (bad input, unknown name, bad config)."""


class UnknownNameError(TokenomyError, KeyError):
    """An unknown model/accelerator/site/... name, with the close matches in its message."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=4, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known[:12])}"
        self.kind, self.name, self.close = kind, name, close
        super().__init__(f"unknown {kind} '{name}'{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ConfigError(TokenomyError):
    """An invalid configuration file; the message names the offending field."""
