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
                 "plan", "route", "part", "prompt")

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
        self.route: dict | None = None  # extra["route"] of a routed alias (quality router / cascade)
        self.part: dict | None = None  # extra of an auxiliary call of a cascade ({"route_part", "parent"})
        self.prompt: str = ""  # the routed prompt (last user message)

    def sub(self, rid: str, group, *, stream: bool, body: dict | None = None) -> "_Ctx":
        """A context for one more upstream call of the same request (cascade weak call, judge):
        same principal, plan and response headers; its own id, group and body; no reservation
        (the request's reservation is settled by its main event)."""
        b = dict(self.body) if body is None else body
        if not stream:
            b["stream"] = False
            b.pop("stream_options", None)
        c = _Ctx(rid, self.t0, self.principal, group, b, stream, self.input_tokens, None, self.headers, self.kind,
                 client_usage=self.client_usage if stream else False)
        c.plan, c.prompt = self.plan, self.prompt
        return c


class _Unary:
    """Outcome of one non-stream dispatch over a group's deployments (before metering).
    status: ok | client_error (a 4xx passed through) | failed (every deployment failed)."""

    __slots__ = ("status", "d", "raw", "ctype", "obj", "counts", "estimated", "energy", "err")

    def __init__(self, status, d, raw=b"", ctype="application/json", obj=None, counts=(0, 0, 0, 0), estimated=False,
                 energy=None, err=None):
        self.status, self.d, self.raw, self.ctype, self.obj = status, d, raw, ctype, obj
        self.counts, self.estimated, self.energy, self.err = counts, estimated, energy, err


class _CallFailed(Exception):
    """A cascade call did not produce an answer (carries its _Unary)."""

    def __init__(self, result: "_Unary"):
        super().__init__(result.err.message if result.err is not None else f"HTTP {result.status}")
        self.result = result
