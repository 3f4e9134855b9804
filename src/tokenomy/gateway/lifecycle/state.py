"""The typed state of one request: its context, the outcome of each upstream attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from tokenomy.gateway.errors import ApiError

if TYPE_CHECKING:
    from tokenomy.gateway.plans import PlanState
    from tokenomy.gateway.routing import DeploymentRuntime, GroupRuntime
    from tokenomy.metering.types import Principal, Reservation


def fmt_usd(x: Decimal) -> str:
    return format(x.normalize(), "f") if x else "0"


def header_safe(s: str) -> str:
    return s.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")


FailureKind = Literal["http_429", "http_5xx", "timeout", "connection", "garbage"]


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed upstream attempt, classified (dispatch.classify*): whether the same deployment
    may be tried again (after a backoff, or the upstream's Retry-After)."""

    kind: FailureKind
    message: str
    retry_same: bool  # connect errors, 429, 5xx before the first byte
    retry_after_s: float | None = None  # a 429's Retry-After (seconds), when it sent one
    retry_after_raw: str | None = None


@dataclass(slots=True)
class Allowance:
    """What a request may still settle: its reservation minus what its calls already settled
    (a cascade's auxiliary calls and its main event share it). A hard budget cannot be exceeded
    because no event settles more than this."""

    left_usd: Decimal


def speaks_openai(d) -> bool:
    """A deployment whose upstream speaks OpenAI's wire itself (openai: the emulator, vLLM, llama.cpp's
    server, ...; azure), so OpenAI-only body fields (logprobs) reach it and come back as sent."""
    return d.adapter is None or bool(d.adapter.passthrough)


@dataclass(slots=True)
class OpenAIExtra:
    """Body fields added only to attempts on deployments that speak OpenAI's wire and are not in
    `skip` (a cascade's logprobs ask; `skip` holds the deployments known to refuse it)."""

    fields: dict
    skip: set[str] = field(default_factory=set)

    def applies(self, d) -> bool:
        return speaks_openai(d) and d.name not in self.skip

    def apply(self, body: dict, d) -> None:
        if self.applies(d):
            body.update(self.fields)
        else:
            for k in self.fields:
                body.pop(k, None)


@dataclass(slots=True)
class RequestCtx:
    """Everything admission decided for one request, carried through dispatch to settle."""

    rid: str
    t0: float  # perf_counter at arrival
    principal: Principal
    kind: str  # "chat" | "completions"
    body: dict
    stream: bool
    input_tokens: int  # the gateway's own count of the prompt
    group: GroupRuntime
    headers: dict[str, str]  # response headers every answer of this request carries
    client_usage: bool = False  # the client asked for stream_options.include_usage
    max_tokens: int | None = None  # the client's max_tokens (None: not given)
    out_limit_tokens: int = 4096  # max tokens per choice the upstream may generate (bounds its usage)
    n_choices: int = 1
    reservation: Reservation | None = None
    reserved_usd: Decimal = Decimal(0)  # what the reservation (with its top-ups) holds
    extra_holds: list = field(default_factory=list)  # top-ups held as reservations of their own
    allowance: Allowance | None = None  # None: no hard budget to protect
    plan: PlanState | None = None
    route: dict | None = None  # extra["route"] of a routed alias (quality router / cascade)
    part: dict | None = None  # extra of an auxiliary cascade call ({"route_part", "parent"})
    counterfactual: dict | None = None  # committed-first: the deployment `cost` would have chosen
    prompt: str = ""  # the routed prompt (last user message)
    attempts: list[dict] = field(default_factory=list)  # failed attempts, as recorded in the event
    last_failure: Failure | None = None
    retry_after: str | None = None  # the last upstream 429's Retry-After
    committed: bool = False
    inbound: Any = None  # gateway/messages.Inbound: the answer is framed in another API's shape
    trace_headers: dict[str, str] | None = None  # W3C trace context of the current upstream attempt (observe/tracing.py)
    openai_extra: OpenAIExtra | None = None  # body fields for OpenAI-wire attempts only (cascade weak call)

    def sub(self, rid: str, group: GroupRuntime, *, stream: bool, body: dict | None = None) -> "RequestCtx":
        """A context for one more upstream call of the same request (cascade weak call, judge):
        same principal, plan and response headers; its own id, group and body; no reservation
        (the request's reservation is settled by its main event)."""
        b = dict(self.body) if body is None else body
        if not stream:
            b["stream"] = False
            b.pop("stream_options", None)
        return RequestCtx(rid, self.t0, self.principal, self.kind, b, stream, self.input_tokens, group,
                          self.headers, client_usage=self.client_usage if stream else False,
                          max_tokens=self.max_tokens, out_limit_tokens=self.out_limit_tokens, n_choices=self.n_choices,
                          allowance=self.allowance, plan=self.plan, prompt=self.prompt, inbound=self.inbound)


UnaryStatus = Literal["ok", "client_error", "failed"]


@dataclass(slots=True)
class UnaryResult:
    """Outcome of one non-stream dispatch over a group's deployments (before settling).
    ok: an answer; client_error: a 4xx passed through as is; failed: every attempt failed."""

    status: UnaryStatus
    d: DeploymentRuntime | None
    raw: bytes = b""
    ctype: str = "application/json"
    obj: dict | None = None
    usage: Any = None  # the upstream's `usage`, untrusted (settle bounds it)
    energy_j: float | None = None
    err: ApiError | None = None
    t_start: float = 0.0  # perf_counter when the answering attempt started / ended
    t_end: float = 0.0
    # the generated text the gateway counts when the upstream's usage is missing (None: obj's text);
    # set when obj was cut down to the served choice (a cascade's k agreement samples are all billed)
    own_text: str | None = None


@dataclass(slots=True)
class OpenStream:
    """A stream whose first event arrived (no fallback after this): relay then settle."""

    d: DeploymentRuntime
    resp: Any  # aiohttp.ClientResponse
    first: bytes
    t_start: float


class CallFailed(Exception):
    """A cascade call did not produce an answer (carries its UnaryResult)."""

    def __init__(self, result: UnaryResult):
        super().__init__(result.err.message if result.err is not None else f"HTTP {result.status}")
        self.result = result
