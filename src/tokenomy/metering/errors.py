"""Errors the gateway turns into OpenAI-style responses (status, code, one-line message)."""

from __future__ import annotations

from tokenomy.errors import TokenomyError, UnknownNameError


class MeteringError(TokenomyError):
    """Base: carries the HTTP status, an OpenAI-style error code and a clear message."""

    status: int = 400
    code: str = "metering_error"

    def __init__(self, message: str, *, retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class AuthError(MeteringError):
    """Missing, malformed, unknown or revoked key (401); or not allowed (403, via status)."""

    status = 401
    code = "invalid_api_key"

    def __init__(self, message: str = "invalid API key", *, status: int = 401, code: str | None = None):
        super().__init__(message)
        self.status = status
        if code:
            self.code = code


class RateLimited(MeteringError):
    """Requests/min or tokens/min limit of a key hit; retry_after_s says when it will fit."""

    status = 429
    code = "rate_limit_exceeded"


class BudgetExceeded(MeteringError):
    """A hard budget (end user, key or tenant) would be exceeded by this request's worst-case cost.

    reason: "exhausted" (the committed spend alone leaves no room for this request: waiting
    does not help before `reset_at`) or "held" (requests in flight hold the rest: it may fit
    once they settle). reset_at: epoch s when the budget's period ends (None: a total budget).
    retry_after_s: when a retry can succeed (None: not before someone raises the budget)."""

    status = 429
    code = "budget_exceeded"
    REASONS = ("exhausted", "held")

    def __init__(self, message: str, *, reason: str = "exhausted", reset_at: float | None = None,
                 retry_after_s: float | None = None, scope: str | None = None):
        if reason not in self.REASONS:
            raise ValueError(f"BudgetExceeded reason must be one of {self.REASONS}, not {reason!r}")
        super().__init__(message, retry_after_s=retry_after_s)
        self.reason = reason
        self.reset_at = reset_at
        self.scope = scope  # which budget refused: "user" | "key" | "tenant"


class InvalidInput(MeteringError):
    """A bad setting (negative budget, unknown period, bad name...): 400."""

    status = 400
    code = "invalid_value"


class Conflict(MeteringError):
    """Creating something that already exists (a tenant): 409."""

    status = 409
    code = "already_exists"


class NotFound(MeteringError, UnknownNameError):
    """An unknown tenant or key id (404), with close matches in the message."""

    status = 404
    code = "not_found"

    def __init__(self, kind: str, name: str, known):
        UnknownNameError.__init__(self, kind, name, known)
        self.message = self.args[0]
        self.retry_after_s = None
