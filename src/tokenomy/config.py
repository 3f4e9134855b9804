"""The one configuration model of tokenomy, loaded from one YAML file.

Every default works with no file at all: `load_config(None)` returns the default emulated
fleet (see `default_config`). Validation errors become one `ConfigError` whose message names
the field path (e.g. `deployments[1].pricing.list.output: Input should be a valid number`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokenomy.errors import ConfigError

Policy = Literal["cost", "latency", "cost-under-slo", "weighted", "prefix-affinity", "committed-first"]
# How a deployment is paid: owned / reserved self-hosted capacity costs its hourly price whether
# used or not (committed-first fills it first); on_demand capacity and pay_per_token APIs can be
# released or cost nothing unused. Default: on_demand for self_hosted pricing, else pay_per_token.
Commitment = Literal["owned", "reserved", "on_demand", "pay_per_token"]
COMMITTED = frozenset({"owned", "reserved"})
BudgetPeriod = Literal["total", "daily", "monthly"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ListPricing(_Strict):
    """List prices in USD per million tokens of each category."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)  # None: charged as input
    cache_write: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)  # None: charged as output


class SelfHostedPricing(_Strict):
    """Priced by the cost model: accelerator x count at a site (tokenomy.economics)."""

    model: str
    accelerator: str
    count: int = Field(default=1, ge=1)
    site: str = "us-va"
    dtype: str = "bf16"
    utilization: float = Field(default=1.0, gt=0, le=1)
    slo_tpot_ms: float | None = Field(default=None, gt=0)
    context: int = Field(default=2048, gt=0)


class Pricing(_Strict):
    """Exactly one of: `list` (USD/Mtok), `price_map` (id in the price map), `self_hosted`."""

    list_: ListPricing | None = Field(default=None, alias="list")
    price_map: str | None = None
    tier: str = "standard"  # price-map tier
    self_hosted: SelfHostedPricing | None = None
    # Energy per token when known (overrides the cost model / 0 for API providers).
    joules_per_token_input: float | None = Field(default=None, ge=0)
    joules_per_token_output: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Pricing":
        given = [n for n, v in (("list", self.list_), ("price_map", self.price_map),
                                ("self_hosted", self.self_hosted)) if v is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of list, price_map, self_hosted"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class Emulate(_Strict):
    """Start an in-process emulator for this deployment (tokenomy.emulator) instead of base_url."""

    model: str = "llama-3-8b"
    accelerator: str = "h100"
    count: int = Field(default=1, ge=1)
    dtype: str = "bf16"
    time_scale: float = Field(default=1.0, gt=0)
    max_batch: int | None = Field(default=None, ge=1)
    engine_efficiency: float = Field(default=1.0, gt=0)
    fault_rate_500: float = Field(default=0.0, ge=0, le=1)  # random upstream faults, to try fallbacks
    fault_rate_429: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0


class Deployment(_Strict):
    name: str = Field(min_length=1)
    # The upstream's wire protocol (tokenomy.gateway.providers): openai (any OpenAI-compatible
    # server, the default), anthropic, azure (Azure OpenAI), gemini, bedrock, vertex.
    provider: Literal["openai", "anthropic", "gemini", "bedrock", "azure", "vertex"] = "openai"
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1; other providers: their root URL
    api_key_env: str | None = None  # env var holding the upstream key
    model: str | None = None  # model name sent upstream; default: the deployment name
    pricing: Pricing
    emulate: Emulate | None = None
    # Extra headers sent upstream; a value may name environment variables (`env:NAME`, `${NAME}`).
    headers: dict[str, str] = Field(default_factory=dict)
    api_version: str | None = None  # azure: api-version (default 2024-10-21; `v1`: Azure's v1 API)
    region: str | None = None  # bedrock / vertex: the region (default: AWS chain / us-central1)
    project: str | None = None  # vertex: the GCP project (default: from the credentials)
    # Ask for a usage chunk in streams (stream_options.include_usage); turn off for servers
    # that reject the field (tokens are then counted by tokenomy.tokens, marked estimated).
    stream_usage: bool = True
    max_in_flight: int | None = Field(default=None, ge=1)
    # What the deployment serves: chat (chat + text completions) or embedding (POST /v1/embeddings).
    # A model group serves one mode (its deployments agree); LiteLLM's price map calls this `mode`.
    mode: Literal["chat", "embedding"] = "chat"
    # embedding: the model's native vector size; requests asking for more `dimensions` get a 400
    # (None: not checked by the gateway, the upstream decides).
    embedding_dimensions: int | None = Field(default=None, ge=1)
    # The model's output limit (tokens): caps the max_tokens the gateway sets for a budgeted
    # request that set none (default: defaults.max_tokens).
    max_output_tokens: int | None = Field(default=None, ge=1)
    # Tokenizer for the gateway's own counts (streams without usage, limits, reservations):
    # o200k | cl100k | llama-3 | regex | a path to a tokenizer.json. Default: by the model name
    # (OpenAI families), else the regex approximation. See tokenomy.tokencount.
    tokenizer: str | None = None
    commitment: Commitment | None = None  # owned (ownership cost), reserved, on_demand (rental), pay_per_token

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer(cls, v: str | None) -> str | None:
        from tokenomy.tokencount.resolve import check_tokenizer_spec

        return None if v is None else check_tokenizer_spec(v)

    @model_validator(mode="after")
    def _target(self) -> "Deployment":
        if (self.base_url is None) == (self.emulate is None):
            raise ValueError("give exactly one of base_url, emulate")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https:// (got {self.base_url!r})")
        if self.emulate is not None and self.provider != "openai":
            raise ValueError(f"emulate serves the OpenAI protocol: provider must be openai (got {self.provider!r})")
        hosted = self.pricing.self_hosted is not None
        if self.commitment is not None and (self.commitment == "pay_per_token") == hosted:
            raise ValueError(f"commitment {self.commitment} needs " + (
                "list or price_map pricing (self_hosted capacity is owned, reserved or on_demand)" if hosted
                else "self_hosted pricing (an hourly cost); a list- or price-map-priced deployment is pay_per_token"))
        return self

    @property
    def paid_as(self) -> str:
        """The commitment, defaulted: on_demand for self_hosted pricing, else pay_per_token."""
        if self.commitment is not None:
            return self.commitment
        return "on_demand" if self.pricing.self_hosted is not None else "pay_per_token"

    @property
    def committed(self) -> bool:
        """Paid by the hour whether used or not (owned or reserved)."""
        return self.paid_as in COMMITTED

    @property
    def upstream_model(self) -> str:
        return self.model or self.name


class Slo(_Strict):
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)


class ModelGroup(_Strict):
    deployments: list[str] = Field(min_length=1)
    policy: Policy = "cost"
    weights: dict[str, float] | None = None  # policy weighted
    slo: Slo | None = None  # policy cost-under-slo (and prefix-affinity, committed-first, when set)
    # policy prefix-affinity: the prefix cache of each replica, in tokens (what the router's
    # index of "what was sent where" remembers), and the load bound (x the mean in-flight + 1)
    affinity_cache_tokens: int = Field(default=1_000_000, ge=256)
    affinity_load_factor: float = Field(default=2.0, ge=1.0)
    max_in_flight: dict[str, int] | int | None = None  # per deployment (dict) or for all

    @model_validator(mode="after")
    def _policy_args(self) -> "ModelGroup":
        if self.policy == "weighted":
            if not self.weights:
                raise ValueError("policy weighted needs weights: {deployment: weight}")
            unknown = set(self.weights) - set(self.deployments)
            if unknown:
                raise ValueError(f"weights name deployments not in this group: {sorted(unknown)}")
            if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
                raise ValueError("weights must be >= 0 with a positive sum")
        if self.policy == "cost-under-slo" and (self.slo is None or
                                                (self.slo.ttft_ms is None and self.slo.tpot_ms is None)):
            raise ValueError("policy cost-under-slo needs slo: {ttft_ms, tpot_ms}")
        return self

    def in_flight_limit(self, deployment: str, default: int | None) -> int | None:
        if isinstance(self.max_in_flight, int):
            return self.max_in_flight
        if isinstance(self.max_in_flight, dict) and deployment in self.max_in_flight:
            return self.max_in_flight[deployment]
        return default


class Judge(_Strict):
    """LLM-as-judge verifier: a model group of this gateway grades the weak answer (its tokens are
    metered to the same tenant, event id `<request>:judge`)."""

    model: str = Field(min_length=1)
    rubric: str | None = None  # must contain {prompt} and {answer}; default: the cascade module's
    max_tokens: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _rubric(self) -> "Judge":
        if self.rubric is not None and ("{prompt}" not in self.rubric or "{answer}" not in self.rubric):
            raise ValueError("rubric must contain {prompt} and {answer}")
        return self


AGREEMENT = "agreement"  # the k-sample verifier's name (cascade.verifier)
MIN_SAMPLES, MAX_SAMPLES = 2, 16
# Providers whose translation returns one choice per request ('n' must be 1): no k samples in one call.
NO_N_PROVIDERS = ("anthropic", "bedrock")


class Cascade(_Strict):
    """Policy cascade: the weakest candidate answers first; escalate to the strongest when the
    verifier's score of that answer is below `threshold`."""

    verifier: str = "cascade-default"  # a verifier name (tokenomy.routing.cascade) or a .npz artifact
    judge: Judge | None = None  # instead of `verifier`: an LLM judge
    threshold: float = Field(default=0.5, ge=0, le=1)
    # instead of `threshold`: the target share of requests escalated; the cut follows live traffic's
    # verifier scores (the routing group's share_half_life / share_sync_every apply, as for strong_share)
    escalate_share: float | None = Field(default=None, ge=0, le=1)
    # verifier `agreement`: k samples of the weak model (one call with `n: k`); the score is the
    # share of samples whose final answer is the majority's (routing/cascade/agreement.py)
    samples: int = 5

    @field_validator("samples", mode="before")
    @classmethod
    def _samples(cls, v: object) -> object:
        if type(v) is not int or not MIN_SAMPLES <= v <= MAX_SAMPLES:
            raise ValueError(f"samples: the number of weak samples k must be an integer {MIN_SAMPLES}..{MAX_SAMPLES} "
                             f"(got {v!r})")
        return v

    @model_validator(mode="after")
    def _one_threshold(self) -> "Cascade":
        if self.escalate_share is not None and "threshold" in self.model_fields_set:
            raise ValueError("give either threshold or escalate_share, not both")
        if "samples" in self.model_fields_set and self.verifier != AGREEMENT:
            raise ValueError(f"samples: only with verifier: {AGREEMENT} (verifier is {self.verifier!r})")
        if self.verifier == AGREEMENT and self.judge is not None:
            raise ValueError(f"give either judge or verifier: {AGREEMENT}, not both")
        return self


class RoutingGroup(_Strict):
    """An alias (e.g. `auto`) routed per request over candidate model groups, weakest first."""

    candidates: list[str] = Field(min_length=2)  # model groups, weak..strong
    policy: Literal["router", "cascade"] = "router"
    router: str = "default"  # default | mf | lexical | a router artifact (.npz)
    # mf (multi-model) router: the router's name for each candidate group (e.g. llama-3-8b:
    # llama-2-7b-chat-hf); without it a multi-model router acts as a binary one.
    router_models: dict[str, str] | None = None
    # Exactly one threshold kind (policy router):
    strong_share: float | None = Field(default=None, ge=0, le=1)  # target strong-call share, calibrated at start
    # strong_share with Redis counters (counters.url / TOKENOMY_REDIS_URL): every this many decisions a
    # replica merges its score histogram with the other replicas' (one cut for the fleet); 0 = per replica
    share_sync_every: int = Field(default=32, ge=0, le=1_000_000)
    # strong_share: how fast the cut follows live traffic (half-life in decisions; the start-up sample decays too)
    share_half_life: float = Field(default=2000.0, ge=10, le=1e9)
    min_quality: float | None = Field(default=None, ge=0, le=1)  # cheapest candidate predicted >= this
    threshold: float | None = None  # raw router threshold
    max_usd_per_request: float | None = Field(default=None, gt=0)  # best candidate whose expected cost fits
    cascade: Cascade | None = None  # policy cascade

    @model_validator(mode="after")
    def _one_kind(self) -> "RoutingGroup":
        kinds = [n for n in ("strong_share", "min_quality", "threshold", "max_usd_per_request")
                 if getattr(self, n) is not None]
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError("candidates: duplicate model groups")
        if self.policy == "router":
            if len(kinds) != 1:
                raise ValueError("give exactly one of strong_share, min_quality, threshold, max_usd_per_request"
                                 + (f" (got {', '.join(kinds)})" if kinds else ""))
            if self.cascade is not None:
                raise ValueError("cascade: only with policy cascade")
        else:
            if kinds:
                raise ValueError(f"policy cascade takes its threshold in cascade.threshold (remove {', '.join(kinds)})")
        if self.router_models is not None:
            unknown = set(self.router_models) - set(self.candidates)
            if unknown:
                raise ValueError(f"router_models: names groups that are not candidates: {sorted(unknown)}")
        return self

    @property
    def cascade_spec(self) -> Cascade:
        return self.cascade or Cascade()


class Routing(_Strict):
    # Store the prompt text of routed requests (table route_prompts in the ledger database) so
    # feedback can retrain the router (`tokenomy route train --from-ledger`). Off by default:
    # prompts may hold personal or confidential data, kept as long as the ledger.
    store_prompts: bool = False


# tenant and key names: 1-200 characters without control characters (gateway/app.py check_name)
_NAME = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]+$"


class UserCapConfig(_Strict):
    """A cap on each end user (the requests' `user`) of a tenant: a hard budget per period and/or
    per-minute limits. Applied at start when the user has no cap in the ledger yet (the admin
    API and the dashboard change it afterwards)."""

    budget_usd: float | None = Field(default=None, ge=0)
    budget_period: BudgetPeriod = "total"
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _some_cap(self) -> "UserCapConfig":
        if self.budget_usd is None and self.rpm is None and self.tpm is None:
            raise ValueError("a user cap needs budget_usd, rpm or tpm")
        return self


class Tenant(_Strict):
    name: str = Field(min_length=1, max_length=200, pattern=_NAME)
    budget_usd: float | None = Field(default=None, ge=0)
    budget_period: BudgetPeriod = "total"
    soft_budget_usd: float | None = Field(default=None, ge=0)
    # end-user caps: "*" for every user of the tenant, or a user's own (it wins over "*")
    user_caps: dict[str, UserCapConfig] = Field(default_factory=dict)
    # Billing plan (a name in `plans:`) from the start of time; or give the tenant dated
    # subscriptions in the plans file instead (invoices read that file).
    plan: str | None = Field(default=None, min_length=1)


class Key(_Strict):
    """An API key imported at start (stored hashed) — the secret comes from an env var or inline."""

    tenant: str = Field(min_length=1, max_length=200, pattern=_NAME)
    secret_env: str | None = None
    secret: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=_NAME)
    budget_usd: float | None = Field(default=None, ge=0)
    budget_period: BudgetPeriod = "total"
    soft_budget_usd: float | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_secret(self) -> "Key":
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret, secret_env")
        return self


class Defaults(_Strict):
    max_tokens: int = Field(default=4096, ge=1)  # worst-case output for budget reservations
    predicted_output_tokens: float = Field(default=256, gt=0)  # routing prior before observations


class Ledger(_Strict):
    path: str | None = None  # data directory; default: tokenomy.metering.paths.default_data_dir()
    # SQLite WAL sync mode. NORMAL: a committed event survives a crash of the gateway process
    # (kill -9) without an fsync per group commit; FULL: also survives power loss / OS crash,
    # at one fsync (~2-12 ms on a typical disk) per group commit on the response path.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"


class Counters(_Strict):
    """Shared counters (budgets, rate limits, plan caps) in Redis, for several gateway replicas.
    Each field unset: its environment variable (TOKENOMY_REDIS_URL, TOKENOMY_REDIS_FAIL_MODE,
    TOKENOMY_REDIS_PREFIX); no URL at all: in-process counters (one gateway process)."""

    url: str | None = Field(default=None, min_length=1)  # redis://host:port/db (rediss://, unix:// too)
    # Redis unreachable: closed = refuse requests with a 503 naming the problem; open = serve with
    # per-replica counters (limits and caps then hold per replica, not across them)
    fail_mode: Literal["closed", "open"] | None = None
    prefix: str | None = Field(default=None, min_length=1)  # key prefix (default "tokenomy:")

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must start with redis://, rediss:// or unix:// (got '{url.partition(':')[0]}:...')")
        return url


class Budgets(_Strict):
    # A request whose budget is held by requests in flight waits up to this long for them to
    # settle (Metering.areserve) before a 429 with reason "held"; an exhausted budget never waits.
    wait_s: float = Field(default=2.0, ge=0, le=60)


class Timeouts(_Strict):
    connect_s: float = Field(default=5.0, gt=0)
    first_byte_s: float = Field(default=60.0, gt=0)  # response headers + first stream event
    total_s: float = Field(default=600.0, gt=0)  # whole non-stream response / idle gap in streams


class Retry(_Strict):
    max_attempts: int = Field(default=3, ge=1)  # per request, first try included
    budget_ratio: float = Field(default=0.2, ge=0)  # retries earned per request (global budget)
    min_budget: float = Field(default=10, ge=0)  # retries always allowed in a burst
    # Same-deployment retries (connect errors, 429, 5xx before the first byte; gateway/lifecycle/retry.py):
    backoff_base_s: float = Field(default=0.05, ge=0)  # wait before the k-th retry: base x 2^(k-1) x U[0.5, 1]
    backoff_max_s: float = Field(default=1.0, ge=0)
    retry_after_max_s: float = Field(default=2.0, ge=0)  # a longer upstream Retry-After is not waited for


class Breaker(_Strict):
    failure_threshold: int = Field(default=5, ge=1)  # consecutive failures that open it
    cooldown_s: float = Field(default=30.0, gt=0)  # then one half-open probe


class Server(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    shutdown_timeout_s: float = Field(default=30.0, ge=0)
    # Connection limits, on the lean front and aiohttp alike (gateway/fastpath.py): a request
    # head must arrive within head_timeout_s of its first byte and its body within as long again
    # (else 408 + close); a keep-alive
    # connection idle for idle_timeout_s is closed; at max_connections (default: min(10000, half
    # the open-file limit)) the longest-idle connection is closed to make room, else 503 + close.
    head_timeout_s: float = Field(default=10.0, gt=0)
    idle_timeout_s: float = Field(default=75.0, gt=0)
    max_connections: int | None = Field(default=None, ge=1)
    # An upstream answer (after decompression) larger than this is refused: 502 upstream_too_large.
    max_upstream_response_bytes: int = Field(default=32 << 20, ge=1024)


class MetricsAccess(_Strict):
    """Who may read /metrics (per-tenant names, requests, cost) and /health's details (upstream
    URLs): the admin key always; also a scrape-only bearer token read from the environment
    variable `token_env` (e.g. TOKENOMY_METRICS_TOKEN); or anyone with `public: true`."""

    public: bool = False
    token_env: str | None = Field(default=None, min_length=1)


class Costs(_Strict):
    """Real cost of self-hosted deployments (tokenomy.allocation): how often the gateway records
    that each one is provisioned (its bill is counted per recorded interval)."""

    interval_s: int = Field(default=60, ge=1, le=3600)
    record: bool = True


class Webhook(_Strict):
    """Where alerts go: a URL (Slack incoming webhooks render the body), the environment variable
    holding its HMAC secret, and which kinds of alert it wants."""

    url: str = Field(pattern=r"^https?://")
    secret_env: str | None = None
    kinds: list[Literal["budget", "cap", "anomaly"]] = Field(default_factory=lambda: ["budget", "cap", "anomaly"])


class Alerts(_Strict):
    """Budget thresholds (share of a hard budget, else of a soft one), plan caps reached, and spend
    in the last hour above `anomaly_factor` x the trailing week's hourly mean (0: off)."""

    webhooks: list[Webhook] = Field(default_factory=list)
    budget_thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0])
    anomaly_factor: float = Field(default=3.0, ge=0)
    anomaly_min_usd: float = Field(default=1.0, ge=0)
    interval_s: float = Field(default=30.0, gt=0)
    retry_base_s: float = Field(default=5.0, gt=0)

    @field_validator("budget_thresholds")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < t <= 10 for t in v):
            raise ValueError("budget_thresholds: fractions of a budget in (0, 10], e.g. [0.5, 0.8, 1.0]")
        return sorted(set(v))


class RequestLogConfig(_Strict):
    """One JSON line per request (tokenomy.observe.requestlog): to stdout, or to `path` rotating at
    `max_bytes` x `backups`; `sample` the share of requests kept (by request id); prompt and
    response captured only for `capture_tenants`, redacted with the default patterns (API keys,
    e-mail, card numbers) and `redact` (regular expressions)."""

    enabled: bool = False
    path: str | None = None
    max_bytes: int = Field(default=100 * 2**20, ge=4096)
    backups: int = Field(default=5, ge=0, le=1000)
    sample: float = Field(default=1.0, ge=0, le=1)
    capture_tenants: list[str] = Field(default_factory=list)
    redact: list[str] = Field(default_factory=list)
    redact_defaults: bool = True

    @field_validator("redact")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        import re

        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"redact: '{p}' is not a regular expression ({exc})") from None
        return v


class TracingConfig(_Strict):
    """OpenTelemetry traces over OTLP (tokenomy.observe.tracing; needs the `otel` extra): a server
    span per request with child spans for routing, each upstream attempt and the ledger commit.
    Off while `endpoint` is unset. `sample_ratio`: the share of new traces kept (by trace id);
    `parent_based`: a request whose client sent a W3C traceparent follows its sampled flag.
    `headers` go to the collector (a value may name environment variables: `env:NAME`, `${NAME}`)."""

    endpoint: str | None = None  # the collector: http://host:4318 (or its /v1/traces URL); grpc: http://host:4317
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    parent_based: bool = True
    service_name: str = Field(default="tokenomy-gateway", min_length=1, max_length=200)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # export batching (BatchSpanProcessor): a full queue drops spans, never blocks a request
    max_queue_size: int = Field(default=2048, ge=1)
    schedule_delay_ms: float = Field(default=5000, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        import re

        if v is not None and not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", v):
            raise ValueError(f"must be the http:// or https:// URL of an OTLP collector (got {v[:80]!r})")
        return v

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None


class GatewayConfig(_Strict):
    deployments: list[Deployment] = Field(min_length=1)
    model_groups: dict[str, ModelGroup] = Field(default_factory=dict)
    # Aliases routed per request over candidate model groups (quality router or cascade).
    routing_groups: dict[str, RoutingGroup] = Field(default_factory=dict)
    routing: Routing = Routing()
    tenants: list[Tenant] = Field(default_factory=list)
    keys: list[Key] = Field(default_factory=list)
    defaults: Defaults = Defaults()
    ledger: Ledger = Ledger()
    counters: Counters = Counters()
    budgets: Budgets = Budgets()
    timeouts: Timeouts = Timeouts()
    retry: Retry = Retry()
    breaker: Breaker = Breaker()
    server: Server = Server()
    metrics: MetricsAccess = MetricsAccess()
    costs: Costs = Costs()
    alerts: Alerts = Alerts()
    request_log: RequestLogConfig = RequestLogConfig()
    tracing: TracingConfig = TracingConfig()
    # Billing plans enforced by the gateway (caps, downgrade, overage, price per event): a path to
    # a plans YAML (relative to this config file) or the same mapping inline (tokenomy.billing.plans).
    plans: str | dict | list | None = None

    @model_validator(mode="after")
    def _references(self) -> "GatewayConfig":
        names = [d.name for d in self.deployments]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"deployments: duplicate names {dup}")
        for alias, group in self.model_groups.items():
            for d in group.deployments:
                if d not in names:
                    raise ValueError(f"model_groups.{alias}.deployments: unknown deployment '{d}' "
                                     f"(known: {', '.join(names)})")
            modes = sorted({next(x.mode for x in self.deployments if x.name == d) for d in group.deployments})
            if len(modes) > 1:
                raise ValueError(f"model_groups.{alias}.deployments: a group serves one mode; it mixes {' and '.join(modes)}"
                                 " deployments")
        known_groups = sorted(set(self.model_groups) | set(names))
        for alias, rg in self.routing_groups.items():
            if alias in known_groups:
                raise ValueError(f"routing_groups.{alias}: the alias is already a model group or deployment name")
            for c in rg.candidates:
                if c not in known_groups:
                    raise ValueError(f"routing_groups.{alias}.candidates: unknown model group '{c}' "
                                     f"(known: {', '.join(known_groups)})")
                if self._group_mode(c) != "chat":
                    raise ValueError(f"routing_groups.{alias}.candidates: '{c}' serves embeddings; routed aliases "
                                     "pick among chat models")
            if rg.policy == "cascade" and rg.cascade_spec.verifier == AGREEMENT:
                self._agreement_weak(alias, rg.candidates[0])
            judge = rg.cascade.judge if rg.cascade is not None else None
            if judge is not None and judge.model not in known_groups:
                raise ValueError(f"routing_groups.{alias}.cascade.judge.model: unknown model group '{judge.model}' "
                                 f"(known: {', '.join(known_groups)})")
        tenants = {t.name for t in self.tenants}
        for i, t in enumerate(self.tenants):
            if t.plan is not None and self.plans is None:
                raise ValueError(f"tenants[{i}].plan: no plans configured (add `plans:`, a plans file or inline)")
        for i, k in enumerate(self.keys):
            if tenants and k.tenant not in tenants:
                raise ValueError(f"keys[{i}].tenant: unknown tenant '{k.tenant}'")
        return self

    def _agreement_weak(self, alias: str, weak: str) -> None:
        """verifier agreement asks the weak group for k choices in one call (`n: k`): every deployment
        that may answer it must be able to return them (the emulator serves n up to 128)."""
        g = self.model_groups.get(weak)
        for name in (g.deployments if g is not None else [weak]):
            d = next(x for x in self.deployments if x.name == name)
            if d.provider in NO_N_PROVIDERS:
                why = f"provider {d.provider} returns one choice per request"
                raise ValueError(f"routing_groups.{alias}.cascade.verifier: agreement asks the weak group '{weak}' "
                                 f"for k samples in one call (n: k), but its deployment '{name}' cannot send them "
                                 f"({why}); use openai, azure, gemini or vertex deployments for the weak group")

    def _group_mode(self, alias: str) -> str:
        g = self.model_groups.get(alias)
        first = g.deployments[0] if g is not None else alias
        return next((d.mode for d in self.deployments if d.name == first), "chat")

    def groups(self) -> dict[str, ModelGroup]:
        """Model groups, plus one implicit single-deployment group per deployment name not
        already used as an alias (so a deployment can be addressed directly)."""
        out = dict(self.model_groups)
        for d in self.deployments:
            out.setdefault(d.name, ModelGroup(deployments=[d.name]))
        return out


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = "list" if part == "list_" else str(part)
            out += ("." if out else "") + part
    return out


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-after[_references(), GatewayConfig]",))
        msg = err["msg"].removeprefix("Value error, ")
        where = _path(loc)
        lines.append(f"{where}: {msg}" if where else msg)
    head = f"invalid config {source}: "
    return head + lines[0] if len(lines) == 1 else head + "; ".join(lines)


def parse_config(data: object, source: str = "<dict>") -> GatewayConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path | None) -> GatewayConfig:
    """Load and validate a YAML config; None -> the default emulated fleet."""
    if path is None:
        return default_config()
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {p}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("plans"), str):
        plans = Path(data["plans"]).expanduser()
        if not plans.is_absolute():
            data = {**data, "plans": str(p.parent / plans)}
    return parse_config(data if data is not None else {}, str(p))


def default_config(time_scale: float = 1.0) -> GatewayConfig:
    """The default emulated fleet: llama-3-8b on L4 and on H100 (one group, policy cost),
    llama-3-70b on 4 x H100, gpt-4o-mini and text-embedding-3-small (embeddings) emulated but
    priced from the real price map, and the
    routed alias `auto` (llama-3-8b -> llama-3-70b, quality router, strong_share 0.3)."""

    def emu(name: str, model: str, acc: str, count: int, pricing: dict, served: str) -> dict:
        return {"name": name, "model": served,
                "emulate": {"model": model, "accelerator": acc, "count": count, "time_scale": time_scale},
                "pricing": pricing}

    sh = lambda m, a, c: {"self_hosted": {"model": m, "accelerator": a, "count": c, "site": "us-va"}}  # noqa: E731
    data = {
        "deployments": [
            emu("llama-3-8b@l4", "llama-3-8b", "l4", 1, sh("llama-3-8b", "l4", 1), "llama-3-8b"),
            emu("llama-3-8b@h100", "llama-3-8b", "h100", 1, sh("llama-3-8b", "h100", 1), "llama-3-8b"),
            emu("llama-3-70b@4xh100", "llama-3-70b", "h100", 4, sh("llama-3-70b", "h100", 4), "llama-3-70b"),
            # An API provider's model: emulated here (timing of an 8B-class model on H100),
            # but priced from the real price map.
            emu("gpt-4o-mini@openai-emulated", "llama-3-8b", "h100", 1, {"price_map": "gpt-4o-mini"},
                "gpt-4o-mini"),
            # An embedding model (POST /v1/embeddings): emulated (prefill timing of an 8B-class model
            # on H100), priced from the price map ($0.02 / Mtok), 1,536 dimensions (OpenAI's docs).
            {**emu("text-embedding-3-small@openai-emulated", "llama-3-8b", "h100", 1,
                   {"price_map": "text-embedding-3-small"}, "text-embedding-3-small"),
             "mode": "embedding", "embedding_dimensions": 1536},
        ],
        "model_groups": {
            "llama-3-8b": {"deployments": ["llama-3-8b@l4", "llama-3-8b@h100"], "policy": "cost"},
            "llama-3-70b": {"deployments": ["llama-3-70b@4xh100"]},
            "gpt-4o-mini": {"deployments": ["gpt-4o-mini@openai-emulated"]},
            "text-embedding-3-small": {"deployments": ["text-embedding-3-small@openai-emulated"]},
        },
        # `model: auto`: the shipped quality router picks llama-3-8b or llama-3-70b per prompt,
        # sending about 30% of a typical prompt mix to the 70B model.
        "routing_groups": {
            "auto": {"candidates": ["llama-3-8b", "llama-3-70b"], "router": "default", "strong_share": 0.3},
        },
    }
    return parse_config(data, "<default fleet>")
