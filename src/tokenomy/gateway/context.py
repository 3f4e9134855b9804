"""Per-request state and small shared helpers of the dispatch path."""

from __future__ import annotations

from decimal import Decimal


def _fmt_usd(x: Decimal) -> str:
    return format(x.normalize(), "f") if x else "0"


def _header_safe(s: str) -> str:
    return s.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")


class _Attempt(Exception):
    """One failed upstream attempt (internal); kind: http_429 | http_5xx | timeout | connection | garbage."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


class _Ctx:
    """Per-request state passed down the dispatch path."""

    __slots__ = ("rid", "t0", "principal", "group", "body", "stream", "input_tokens", "reservation",
                 "headers", "kind", "client_usage", "attempts", "last_error", "committed", "retry_after",
                 "plan")

    def __init__(self, rid, t0, principal, group, body, stream, input_tokens, reservation, headers, kind,
                 client_usage):
        self.rid, self.t0, self.principal, self.group, self.body = rid, t0, principal, group, body
        self.stream, self.input_tokens, self.reservation, self.headers = stream, input_tokens, reservation, headers
        self.kind, self.client_usage = kind, client_usage
        self.attempts: list[dict] = []
        self.last_error: tuple[str, str] | None = None
        self.committed = False
        self.retry_after: str | None = None
        self.plan = None  # gateway.plans.PlanState when billing plans are configured
