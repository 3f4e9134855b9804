"""The OpenAPI document itself: a valid 3.1 spec (schemathesis loads it), every route of app.py,
every $ref resolvable, bearer auth except on the public endpoints, and the served variant."""

from __future__ import annotations

import json

import requests
import schemathesis

from tokenomy.gateway.openapi import spec

ROUTES = {("post", "/v1/chat/completions"), ("post", "/v1/completions"), ("post", "/v1/embeddings"), ("post", "/v1/responses"),
          ("get", "/v1/models"), ("get", "/v1/models/{model_id}"), ("post", "/v1/messages"),
          ("post", "/v1/feedback"), ("get", "/health"), ("get", "/metrics"), ("get", "/admin/usage"),
          ("post", "/admin/keys"), ("get", "/admin/keys"), ("post", "/admin/reload"), ("get", "/openapi.json")}


def _refs(node):
    if isinstance(node, dict):
        for k, val in node.items():
            if k == "$ref":
                yield val
            else:
                yield from _refs(val)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_spec_covers_the_routes_and_refs_resolve():
    doc = spec()
    assert doc["openapi"] == "3.1.0"
    assert {(m, p) for p, ops in doc["paths"].items() for m in ops} == ROUTES
    for ref in set(_refs(doc)):
        node = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]  # KeyError = dangling $ref
    json.dumps(doc)  # plain JSON
    loaded = schemathesis.openapi.from_dict(doc)
    assert {(op.ok().method, op.ok().path) for op in loaded.get_all_operations()} == ROUTES


def test_auth_errors_and_request_contracts():
    doc = spec()
    public = {p for p, ops in doc["paths"].items() for op in ops.values() if op.get("security") == []}
    assert public == {"/health", "/openapi.json"}
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "A tenant key, or the admin key"}
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert set(chat) == {"200", "400", "401", "403", "404", "413", "429", "502", "503", "504"}
    err = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert err["required"] == ["message", "type", "param", "code"]
    fb = doc["components"]["schemas"]["FeedbackRequest"]
    assert fb["required"] == ["request_id", "score"]
    assert (fb["properties"]["score"]["minimum"], fb["properties"]["score"]["maximum"]) == (0, 1)
    req = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert req["required"] == ["model", "messages"] and req["properties"]["messages"]["minItems"] == 1
    from tokenomy.gateway import validate

    bound = {"maximum": validate.MAX_OUTPUT_TOKENS} if hasattr(validate, "MAX_OUTPUT_TOKENS") else {}
    assert req["properties"]["max_tokens"] == {"type": ["integer", "null"], "minimum": 1, **bound}
    assert "enum" not in req["properties"]["model"]
    assert spec(["b", "a"])["components"]["schemas"]["CompletionRequest"]["properties"]["model"]["enum"] == ["a", "b"]
    assert "enum" not in spec()["components"]["schemas"]["CompletionRequest"]["properties"]["model"]  # no leak


def test_served_document_is_public_json(fuzz_gateway):
    r = requests.get(fuzz_gateway.url + "/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert set(doc["paths"]) == {p for _, p in ROUTES}
    served = doc["paths"]["/v1/models/{model_id}"]["get"]["parameters"][0]["schema"]["enum"]
    assert "m" in served and doc["paths"] == spec(served)["paths"]  # the live aliases, like the request schemas
