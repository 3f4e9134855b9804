"""The gateway's HTTP API as an OpenAPI 3.1 document, served at GET /openapi.json.

`spec()` is the static contract (request schemas mirror gateway/validate.py and the admin
handlers in app.py: what is rejected with a 400 there is outside the schema here).
`openapi_handler` serves it with the running gateway's model aliases as the `model` enum, so a
client (or a fuzzer) learns which names will not 404.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from tokenomy.gateway import embeddings as _emb
from tokenomy.gateway import validate as _validate
from tokenomy.gateway.messages import openapi as _messages
from tokenomy.gateway.responses import request as _responses
from tokenomy.metering.periods import PERIODS

OPENAPI_VERSION = "3.1.0"

_ERROR_STATUSES = {
    "400": "Invalid request: the body is not a JSON object, or a field has the wrong type or value (`param` names it).",
    "401": "Missing, malformed, invalid or revoked API key.",
    "403": "The key may not do this (admin endpoints need the admin key; a tenant key reads only its own tenant).",
    "404": "Unknown model, tenant, request id or endpoint.",
    "413": "Request body larger than `server.max_body_bytes`.",
    "429": "A rate limit, budget or plan cap was reached (see Retry-After), or every upstream is rate limited.",
    "502": "The upstream failed (5xx, garbage, connection reset) on every deployment tried.",
    "503": "No deployment available (circuit breakers open) or a store is unavailable.",
    "504": "The upstream timed out on every deployment tried.",
}


def _err(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _errors(*codes: str) -> dict:
    return {c: {"$ref": f"#/components/responses/E{c}"} for c in codes}


def _json_body(ref: str, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _ok(desc: str, ref: str | None = None, schema: dict | None = None, headers: dict | None = None) -> dict:
    out: dict[str, Any] = {"description": desc,
                           "content": {"application/json": {"schema": schema or {"$ref": f"#/components/schemas/{ref}"}}}}
    if headers:
        out["headers"] = headers
    return out


_POS_INT_OR_NULL = {"type": ["integer", "null"], "minimum": 1}
_STR = {"type": "string"}
_NULLABLE_STR = {"type": ["string", "null"]}
_MONEY = {"type": "string", "description": "USD, exact decimal"}
_HDR = {"schema": {"type": "string"}}
_MAX_STORED_INT = 2**63 - 1  # the ledgers store counts and pico-USD as signed 64-bit integers
_BUDGET_USD = {"type": ["number", "string", "null"], "minimum": 0, "maximum": 9223372.036854775,
               "description": "USD (a number or a decimal string), 0 .. 9,223,372."}
_LIMIT = {"type": ["integer", "null"], "minimum": 1, "maximum": _MAX_STORED_INT}

_INFERENCE_HEADERS = {
    "x-tokenomy-request-id": {**_HDR, "description": "The request's usage-event id (send it to POST /v1/feedback)."},
    "x-tokenomy-deployment": {**_HDR, "description": "The deployment that served the request."},
    "x-tokenomy-cost-usd": {**_HDR, "description": "What serving it cost (non-stream responses)."},
    "x-tokenomy-energy-j": {**_HDR, "description": "Energy in joules (non-stream responses)."},
}


def _bounded(maximum: int | None, **extra) -> dict:
    return {**_POS_INT_OR_NULL, **({"maximum": maximum} if maximum is not None else {}), **extra}


# The bounds validate.py enforces (read from it, so the spec cannot drift from the code).
_MAX_OUT = getattr(_validate, "MAX_OUTPUT_TOKENS", None)
_MAX_N = getattr(_validate, "MAX_N", None)

# Fields the gateway itself reads; every other field is passed through to the upstream untouched.
_COMMON_REQUEST = {
    "model": {"type": "string", "description": "A model group or route alias from GET /v1/models."},
    "stream": {"type": ["boolean", "null"], "description": "Server-sent events when true."},
    "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {
        "description": "Truthy: the usage chunk (with `x_tokenomy`) is sent to the client."}}},
    "max_tokens": _bounded(_MAX_OUT),
    "max_completion_tokens": _bounded(_MAX_OUT, description="Takes precedence over max_tokens."),
    "n": _bounded(_MAX_N),
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"],
            "properties": {"message": _STR, "type": _STR, "param": _NULLABLE_STR, "code": _NULLABLE_STR}}},
    },
    "ChatMessage": {
        "type": "object", "required": ["role"],
        "properties": {"role": _STR, "content": {"type": ["string", "array", "null"]}},
    },
    "ChatCompletionRequest": {
        "type": "object", "required": ["model", "messages"],
        "properties": {**_COMMON_REQUEST,
                       "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatMessage"}},
                       "tools": {"type": ["array", "null"]}, "functions": {"type": ["array", "null"]}},
    },
    "CompletionRequest": {
        "type": "object", "required": ["model", "prompt"],
        "properties": {**_COMMON_REQUEST,
                       "prompt": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                                            {"type": "array", "items": {"type": "integer"}}],
                                  "description": "Text, texts, or token ids."}},
    },
    "EmbeddingRequest": {  # gateway/embeddings.py: what it rejects is outside this schema
        "type": "object", "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "description": "A model group of embedding deployments."},
            "input": {"anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "maxItems": _emb.MAX_INPUTS, "items": {"anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "integer", "minimum": 0, "maximum": _emb.MAX_TOKEN_ID},
                    {"type": "array", "minItems": 1,
                     "items": {"type": "integer", "minimum": 0, "maximum": _emb.MAX_TOKEN_ID}}]}}],
                "description": "Text, texts, token ids, or arrays of token ids (at most 2,048 inputs)."},
            "dimensions": {"type": ["integer", "null"], "minimum": 1,
                           "description": "Shorten the vectors (up to the model's size)."},
            "encoding_format": {"enum": [*_emb.ENCODING_FORMATS, None]},
            "user": {"type": ["string", "null"], "minLength": 1, "maxLength": _validate.MAX_USER_CHARS}},
    },
    "EmbeddingList": {
        "type": "object", "required": ["object", "data", "model", "usage"],
        "properties": {"object": {"const": "list"}, "model": _STR,
                       "data": {"type": "array", "items": {
                           "type": "object", "required": ["object", "index", "embedding"],
                           "properties": {"object": {"const": "embedding"}, "index": {"type": "integer"},
                                          "embedding": {"type": ["array", "string"],
                                                        "description": "Floats, or base64 of float32"}}}},
                       "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"},
                                                                  "total_tokens": {"type": "integer"}}}},
    },
    "ResponsesRequest": {  # gateway/responses/request.py: what it rejects is outside this schema
        "type": "object", "required": ["model", "input"], "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "description": "A model group or route alias (served by chat deployments)."},
            "input": {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "object"}}],
                      "description": "Text, or items: messages, function_call and function_call_output."},
            "instructions": _NULLABLE_STR,
            "max_output_tokens": _bounded(_MAX_OUT),
            "temperature": {"type": ["number", "null"]}, "top_p": {"type": ["number", "null"]},
            "tools": {"type": ["array", "null"], "items": {"type": "object"}, "description": "Function tools."},
            "tool_choice": {"anyOf": [{"enum": ["auto", "none", "required"]}, {"type": "object"}, {"type": "null"}]},
            "parallel_tool_calls": {"type": ["boolean", "null"]}, "stream": {"type": ["boolean", "null"]},
            "store": {"type": ["boolean", "null"], "description": "Responses are never stored (true: a warning)."},
            "text": {"type": ["object", "null"], "description": "{format: text | json_object | json_schema}"},
            "user": {"type": ["string", "null"], "minLength": 1, "maxLength": _validate.MAX_USER_CHARS},
            "metadata": {"type": ["object", "null"], "maxProperties": _validate.MAX_TAGS,
                         "propertyNames": {"minLength": 1, "maxLength": _validate.MAX_TAG_KEY_CHARS},
                         "additionalProperties": {"type": "string", "maxLength": _validate.MAX_TAG_VALUE_CHARS}},
            **{name: {"type": "null", "description": "Needs stored state: not supported."}
               for name in _responses.STATEFUL},
            **{name: {"description": "Accepted and dropped (x-tokenomy-warning)."} for name in _responses.DROPPED}},
    },
    "Response": {
        "type": "object", "required": ["id", "object", "status", "output", "model"],
        "properties": {"id": _STR, "object": {"const": "response"}, "status": _STR, "model": _STR,
                       "output": {"type": "array", "items": {"type": "object"}},
                       "usage": {"type": ["object", "null"]}},
    },
    "SseEvent": {  # OpenAPI < 3.2: the schema of ONE server-sent event
        "type": "object", "required": ["data"],
        "description": "`data:` is a chunk (JSON), `{\"error\": ...}` if the stream broke, or `[DONE]`. Before "
                       "[DONE] an SSE comment `: x-tokenomy {request_id, deployment, cost_usd, energy_joules}`.",
        "properties": {"data": _STR, "event": _STR, "id": _STR, "retry": {"type": "integer"}},
    },
    "Usage": {
        "type": "object",
        "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                       "total_tokens": {"type": "integer"}},
    },
    "ChatCompletion": {
        "type": "object", "required": ["choices"],
        "properties": {"id": _STR, "object": _STR, "created": {"type": "integer"}, "model": _STR,
                       "choices": {"type": "array", "items": {"type": "object"}},
                       "usage": {"$ref": "#/components/schemas/Usage"}},
    },
    "Completion": {
        "type": "object", "required": ["choices"],
        "properties": {"id": _STR, "object": _STR, "created": {"type": "integer"}, "model": _STR,
                       "choices": {"type": "array", "items": {"type": "object"}},
                       "usage": {"$ref": "#/components/schemas/Usage"}},
    },
    "ModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
            "type": "object", "required": ["id", "object", "owned_by", "policy"],
            "properties": {"id": _STR, "object": {"const": "model"}, "created": {"type": "integer"},
                           "owned_by": _STR, "policy": _STR,
                           "deployments": {"type": "array", "items": _STR},
                           "candidates": {"type": "array", "items": _STR}}}}},
    },
    "FeedbackRequest": {
        "type": "object", "required": ["request_id", "score"],
        "properties": {"request_id": {"type": "string", "minLength": 1, "maxLength": 200,
                                      "description": "The x-tokenomy-request-id of a response of the caller's tenant."},
                       "score": {"type": "number", "minimum": 0, "maximum": 1}},
    },
    "FeedbackRecorded": {
        "type": "object", "required": ["request_id", "tenant", "score", "recorded"],
        "properties": {"request_id": _STR, "tenant": _STR, "score": {"type": "number", "minimum": 0, "maximum": 1},
                       "recorded": {"const": True}},
    },
    "Health": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"enum": ["ok", "degraded"]}, "in_flight": {"type": "integer", "minimum": 0},
                       "deployments": {"type": "object", "additionalProperties": {
                           "type": "object", "required": ["breaker", "in_flight"],
                           "properties": {"breaker": _STR, "in_flight": {"type": "integer"}, "base_url": _STR,
                                          "ttft_ms_ewma": {"type": ["number", "null"]},
                                          "tpot_ms_ewma": {"type": ["number", "null"]}, "price": _NULLABLE_STR}}}},
    },
    "UsageTotals": {
        "type": "object",
        "required": ["requests", "errors", "input_tokens", "cached_input_tokens", "output_tokens",
                     "reasoning_tokens", "cost_usd", "price_usd", "energy_joules"],
        "properties": {"requests": {"type": "integer", "minimum": 0}, "errors": {"type": "integer", "minimum": 0},
                       "input_tokens": {"type": "integer", "minimum": 0},
                       "cached_input_tokens": {"type": "integer", "minimum": 0},
                       "output_tokens": {"type": "integer", "minimum": 0},
                       "reasoning_tokens": {"type": "integer", "minimum": 0},
                       "cost_usd": _MONEY, "price_usd": _MONEY, "energy_joules": {"type": "number"}},
    },
    "CreateKeyRequest": {
        "type": "object", "required": ["tenant"],
        "properties": {"tenant": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$",
                                  "description": "1-128 letters, digits and _.@:+- (created if new)."},
                       "name": {"type": ["string", "null"]},
                       "budget_usd": _BUDGET_USD, "soft_budget_usd": _BUDGET_USD,
                       "budget_period": {"enum": [*PERIODS, None], "description": "UTC calendar period of the budgets."},
                       "rpm": _LIMIT, "tpm": _LIMIT},
    },
    "CreatedKey": {
        "type": "object", "required": ["key_id", "key", "tenant"],
        "properties": {"key_id": _STR, "key": {"type": "string", "description": "The secret; shown only once."},
                       "tenant": _STR},
    },
    "KeyList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
            "type": "object", "required": ["key_id", "tenant", "active"],
            "properties": {"key_id": _STR, "tenant": _STR, "name": _NULLABLE_STR, "created": _NULLABLE_STR,
                           "revoked_at": _NULLABLE_STR, "active": {"type": "boolean"},
                           "budget_usd": _NULLABLE_STR, "budget_period": _STR, "soft_budget_usd": _NULLABLE_STR,
                           "rpm": {"type": ["integer", "null"]}, "tpm": {"type": ["integer", "null"]}}}}},
    },
}
_SCHEMAS["UsageReport"] = {
    "allOf": [{"$ref": "#/components/schemas/UsageTotals"}, {
        "type": "object", "required": ["tenant", "since", "until", "by_model", "by_deployment"],
        "properties": {"tenant": _NULLABLE_STR, "since": _NULLABLE_STR, "until": _NULLABLE_STR,
                       "by_model": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/UsageTotals"}},
                       "by_deployment": {"type": "object",
                                         "additionalProperties": {"$ref": "#/components/schemas/UsageTotals"}}}}],
}

_TIME_PARAM = {"in": "query", "required": False, "schema": {"type": "string"},
               "description": "Unix seconds, an ISO date/datetime (UTC unless zoned) or an age like 24h / 7d."}
_PUBLIC: list = []  # `security: []`: no key needed


def _inference(summary: str, req: str, resp: str) -> dict:
    return {"post": {
        "summary": summary, "requestBody": _json_body(req),
        "responses": {
            "200": {"description": "The upstream's response (JSON), or server-sent events when `stream` is true.",
                    "headers": _INFERENCE_HEADERS,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{resp}"}},
                                "text/event-stream": {"schema": {"$ref": "#/components/schemas/SseEvent"}}}},
            **_errors("400", "401", "403", "404", "413", "429", "502", "503", "504")}}}


def _unary_inference(summary: str, req: str, resp: str) -> dict:
    return {"post": {
        "summary": summary, "requestBody": _json_body(req),
        "responses": {"200": _ok("The upstream's response", resp, headers=_INFERENCE_HEADERS),
                      **_errors("400", "401", "403", "404", "413", "429", "502", "503", "504")}}}


def spec(models: list[str] | None = None, embedding_models: list[str] | None = None) -> dict:
    """The OpenAPI document (a fresh dict). `models`: the running gateway's aliases, as the enum of
    the inference requests' `model` (None: any string); `embedding_models`: those of them that
    serve embeddings (the enum of /v1/embeddings; the others are chat's)."""
    paths = {
        "/v1/chat/completions": _inference("Chat completion (OpenAI-compatible)", "ChatCompletionRequest",
                                           "ChatCompletion"),
        "/v1/completions": _inference("Text completion (OpenAI-compatible)", "CompletionRequest", "Completion"),
        "/v1/responses": _inference("OpenAI Responses API (served by translation onto chat deployments)",
                                    "ResponsesRequest", "Response"),
        "/v1/embeddings": _unary_inference("Embeddings (OpenAI-compatible; priced on input tokens)",
                                           "EmbeddingRequest", "EmbeddingList"),
        "/v1/models": {"get": {"summary": "Model groups and routes",
                               "responses": {"200": _ok("The model aliases", "ModelList"), **_errors("401")}}},
        "/v1/models/{model_id}": {"get": {  # reach (issue 15)
            "summary": "One model alias",
            "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _ok("The model", schema=_SCHEMAS["ModelList"]["properties"]["data"]["items"]),
                          **_errors("401", "404")}}},
        "/v1/feedback": {"post": {
            "summary": "Label the outcome of a request of the caller's tenant (trains the quality router)",
            "requestBody": _json_body("FeedbackRequest"),
            "responses": {"200": _ok("Recorded", "FeedbackRecorded"), **_errors("400", "401", "404", "503")}}},
        "/health": {"get": {"summary": "Liveness; with the admin key (or the metrics token) also per-deployment "
                                       "breaker state, load and upstream URL", "security": _PUBLIC,
                            "responses": {"200": _ok("Health", "Health")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (admin key, or the scrape token of metrics.token_env)",
                             "responses": {"200": {
                                 "description": "Prometheus text exposition format",
                                 "content": {"text/plain": {"schema": {"type": "string"}}}},
                                 **_errors("401", "403")}}},
        "/admin/usage": {"get": {
            "summary": "Usage totals over [since, until) (admin key: any tenant or all; tenant key: its own)",
            "parameters": [{"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "since", **_TIME_PARAM}, {"name": "until", **_TIME_PARAM}],
            "responses": {"200": _ok("Usage", "UsageReport"), **_errors("400", "401", "403", "404")}}},
        "/admin/keys": {
            "post": {"summary": "Create an API key (and its tenant if new); admin key only",
                     "requestBody": _json_body("CreateKeyRequest"),
                     "responses": {"201": _ok("The new key", "CreatedKey"), **_errors("400", "401", "403")}},
            "get": {"summary": "List API keys (never secrets); admin key only",
                    "parameters": [{"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "responses": {"200": _ok("Keys", "KeyList"), **_errors("401", "403", "404")}},
        },
        "/admin/reload": {"post": {
            "summary": "Reload deployments, model groups and prices from the config file (admin key only); "
                       "an invalid file is refused (400, the reason) and the running config kept",
            "responses": {"200": _ok("What changed", schema={"type": "object"}), **_errors("400", "401", "403")}}},
        "/v1/messages": _messages.path(_INFERENCE_HEADERS),  # Anthropic Messages (issue 15)
        "/openapi.json": {"get": {"summary": "This document", "security": _PUBLIC,
                                  "responses": {"200": _ok("OpenAPI 3.1", schema={"type": "object"})}}},
    }
    schemas = copy.deepcopy({**_SCHEMAS, **_messages.SCHEMAS})
    if models:
        emb = set(embedding_models or ())
        chat = sorted(m for m in models if m not in emb)
        for name in ("ChatCompletionRequest", "CompletionRequest", "MessagesRequest", "ResponsesRequest"):
            if chat:
                schemas[name]["properties"]["model"]["enum"] = chat
        if emb:
            schemas["EmbeddingRequest"]["properties"]["model"]["enum"] = sorted(emb)
        paths["/v1/models/{model_id}"]["get"]["parameters"][0]["schema"] = {"type": "string", "enum": sorted(models)}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "tokenomy gateway", "version": _version(),
                 "description": "OpenAI-compatible LLM gateway with cost-aware routing and metering. Errors are "
                                "OpenAI-style: {\"error\": {\"message\", \"type\", \"param\", \"code\"}}."},
        "security": [{"bearerAuth": []}, {"apiKeyAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "A tenant key, or the admin key"},
                                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "x-api-key",
                                               "description": "The same key, Anthropic-style"}},
            "schemas": schemas,
            "responses": {f"E{code}": _err(desc) for code, desc in _ERROR_STATUSES.items()},
        },
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tokenomy")
    except Exception:  # not installed (a source checkout on sys.path)
        return "0"


async def openapi_handler(request: web.Request) -> web.Response:
    """GET /openapi.json: the spec with this gateway's model aliases."""
    from tokenomy.gateway.app import GATEWAY_KEY  # lazy: app.py imports this module

    gw = request.app.get(GATEWAY_KEY)
    if gw is None:
        return web.json_response(spec())
    models = [*gw.groups, *gw.routes]
    return web.json_response(spec(models, [a for a, g in gw.groups.items() if g.mode == "embedding"]))


__all__ = ["OPENAPI_VERSION", "openapi_handler", "spec"]
