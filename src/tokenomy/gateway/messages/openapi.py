"""POST /v1/messages in the gateway's OpenAPI document (gateway/openapi.py merges these).

The request schema is no stricter than request.py (schemathesis' negative cases must all be
refused): a field it treats as absent when null is nullable here; what it checks only in
some cases (a tool's name, a block's fields) is left open."""

from __future__ import annotations

from tokenomy.gateway import validate as _validate
from tokenomy.gateway.messages.request import DROPPED

_UNIT = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_ERROR_CODES = ("400", "401", "402", "403", "404", "413", "429", "502", "503", "504")

SCHEMAS: dict = {
    "MessagesRequest": {
        "type": "object", "required": ["model", "max_tokens", "messages"], "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "description": "A model group or route alias from GET /v1/models."},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": _validate.MAX_OUTPUT_TOKENS},
            "messages": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["role", "content"],
                "properties": {"role": {"enum": ["user", "assistant"]},
                               "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {
                                   "type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}}}]}}}},
            "system": {"type": ["string", "array", "null"]},
            "stop_sequences": {"type": ["array", "null"], "items": {"type": "string"}},
            "stream": {"type": ["boolean", "null"]},
            "temperature": _UNIT, "top_p": _UNIT,
            "tools": {"type": ["array", "null"], "items": {"type": "object"}},
            "tool_choice": {"type": ["object", "null"], "required": ["type"],
                            "properties": {"type": {"enum": ["auto", "any", "tool", "none"]}}},
            "metadata": {"type": ["object", "null"], "additionalProperties": False,
                         "properties": {"user_id": {"type": ["string", "null"]}}},
            "output_config": {"type": ["object", "null"], "properties": {"format": {"type": ["object", "null"]}}},
            **{k: {"description": "Accepted and dropped (named in x-tokenomy-warning)."} for k in DROPPED},
        },
    },
    "AnthropicMessage": {
        "type": "object", "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
        "properties": {"id": {"type": "string"}, "type": {"const": "message"}, "role": {"const": "assistant"},
                       "model": {"type": "string"}, "content": {"type": "array", "items": {"type": "object"}},
                       "stop_reason": {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]},
                       "stop_sequence": {"type": ["string", "null"]},
                       "usage": {"type": "object", "required": ["input_tokens", "output_tokens"], "properties": {
                           k: {"type": "integer", "minimum": 0} for k in (
                               "input_tokens", "output_tokens", "cache_read_input_tokens",
                               "cache_creation_input_tokens")}}},
    },
    "AnthropicError": {
        "type": "object", "required": ["type", "error"],
        "properties": {"type": {"const": "error"}, "request_id": {"type": "string"},
                       "error": {"type": "object", "required": ["type", "message"],
                                 "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}},
    },
}

_ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/AnthropicError"}}}}


def path(headers: dict) -> dict:
    """The /v1/messages path item (`headers`: the inference response headers)."""
    return {"post": {
        "summary": "Anthropic Messages API (served by any deployment; errors are Anthropic-shaped)",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/MessagesRequest"}}}},
        "responses": {
            "200": {"description": "A message, or Anthropic's server-sent events when `stream` is true.",
                    "headers": headers,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AnthropicMessage"}},
                                "text/event-stream": {"schema": {"$ref": "#/components/schemas/SseEvent"}}}},
            **{c: {"description": "402: a spent budget or a blocking plan cap (billing_error, not retried); "
                                  "the rest as on the OpenAI paths." if c == "402" else f"HTTP {c}", **_ERR}
               for c in _ERROR_CODES}}}}
