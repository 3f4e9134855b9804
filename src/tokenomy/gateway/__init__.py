"""tokenomy.gateway: the OpenAI-compatible gateway (aiohttp) with cost-aware routing and metering.

    from tokenomy.gateway.app import build_app      # build_app(config | None, metering) -> aiohttp app

HTTP API
- POST /v1/chat/completions, POST /v1/completions (stream and not), GET /v1/models (model groups),
  GET /health, GET /metrics (Prometheus), GET /admin/usage?tenant=&since=&until= (admin key: any
  tenant; a tenant key: its own only, else 403), POST /admin/keys and GET /admin/keys (admin key).
- Auth: `Authorization: Bearer <key>`. Errors are OpenAI-style {"error": {message, type, param, code}}.
- Response headers: x-tokenomy-request-id (= the usage event id), x-tokenomy-deployment,
  x-tokenomy-cost-usd, x-tokenomy-energy-j, and when relevant x-tokenomy-warning (soft budget)
  and x-tokenomy-slo (cost-under-slo found no deployment meeting the SLO).
- Billing plans (config `plans:`, gateway/plans.py): at a tenant's cap, block -> 429
  `plan_cap_reached` naming the cap, with Retry-After and x-tokenomy-cap-reset (ISO UTC);
  downgrade -> served by the cap's cheaper model group, x-tokenomy-downgraded: <from>-><to>;
  overage -> served, x-tokenomy-overage: true. With plans, x-tokenomy-price-usd (and `price_usd`
  in the stream's x-tokenomy object) is the tenant's price recorded as the event's price_usd.
- Streams: headers go out before the cost is known, so cost and energy come at the end: an SSE
  comment `: x-tokenomy {"request_id", "deployment", "cost_usd", "energy_joules", ...}` right
  before `data: [DONE]`, and, when the client asked for `stream_options.include_usage`, the same
  object as the field `x_tokenomy` of the usage chunk. Without include_usage the client sees no
  choices-less chunk (`chunk.choices[0]` is always safe); the gateway still asks the upstream
  for usage to meter exactly.
- Serving (`tokenomy up`): non-stream POST /v1/chat/completions and /v1/completions are answered
  by a lean HTTP/1.1 front (gateway/fastpath.py, same handler and guarantees, less CPU); any other
  request hands its connection to aiohttp. TOKENOMY_GATEWAY_FASTPATH=0 serves all through aiohttp.
- Durability: the non-stream body and the final `data: [DONE]` are sent only after the request's
  usage event is committed to the ledger. A stream that breaks after its first byte ends with
  a `data: {"error": ...}` event, then `data: [DONE]` (no failover once bytes reached the client;
  never a second HTTP response inside the body).
- Request path: one pipeline admit -> dispatch -> settle (gateway/proxy.py, gateway/lifecycle/*).
  Failed attempts fall back to the next deployment, then retry the same one after an exponential,
  jittered backoff (connect errors, 429 with Retry-After, 5xx before the first byte), within
  `retry.max_attempts` and the global retry budget. An upstream's `usage` is bounded before it is
  priced (lifecycle/usage.py); anomalies are flagged in the event's extra and counted in
  /metrics as tokenomy_usage_anomalies_total{deployment}.
"""
