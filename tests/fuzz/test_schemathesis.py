"""Schemathesis against a REAL gateway (in-process aiohttp on 127.0.0.1, stub upstream), every
operation of the served /openapi.json, positive and negative cases, with the admin key, a tenant
key, a wrong key and no key: no 5xx, documented status codes and content types, conforming
bodies, and never a Python traceback in a body."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES_PER_OPERATION = 50
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
# For request bodies also negative_data_rejection: a body the spec calls invalid gets a 4xx, i.e. the
# request schemas are no looser than validate.py and the handlers. (Not for GETs: unknown query
# parameters are ignored, as HTTP APIs do, and the test replaces the Authorization header the
# negative mode would drop.)
BODY_CHECKS = [*CHECKS, negative_data_rejection]
OPERATIONS = [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"), ("POST", "/v1/responses"),
              ("GET", "/v1/models"), ("GET", "/v1/models/{model_id}"), ("POST", "/v1/messages"),
              ("POST", "/v1/feedback"), ("GET", "/health"), ("GET", "/metrics"), ("GET", "/admin/usage"),
              ("POST", "/admin/keys"), ("GET", "/admin/keys"), ("POST", "/admin/reload"), ("GET", "/openapi.json")]

SUCCESS = {("POST", "/admin/keys"): 201}


@pytest.fixture(scope="module")
def schema(fuzz_gateway):
    return schemathesis.openapi.from_url(fuzz_gateway.url + "/openapi.json")


def test_served_spec_lists_every_operation_and_the_live_models(schema, fuzz_gateway):
    got = sorted((op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations())
    # Schemathesis leaves out the document's own path; it is fuzzed explicitly below.
    assert got == sorted(o for o in OPERATIONS if o[1] != "/openapi.json")
    raw = requests.get(fuzz_gateway.url + "/openapi.json", timeout=10).json()
    assert raw["openapi"] == "3.1.0"
    models = requests.get(fuzz_gateway.url + "/v1/models", timeout=10,
                          headers={"Authorization": f"Bearer {fuzz_gateway.tenant_key}"}).json()
    served = sorted(m["id"] for m in models["data"])
    assert "m" in served and "e" in served
    for req in ("ChatCompletionRequest", "CompletionRequest"):  # chat models only
        assert raw["components"]["schemas"][req]["properties"]["model"]["enum"] == [m for m in served
                                                                                   if m not in ("e", "e1")]
    assert raw["components"]["schemas"]["EmbeddingRequest"]["properties"]["model"]["enum"] == ["e", "e1"]


def _assert_no_traceback(response) -> None:
    text = response.content.decode("utf-8", "replace") if isinstance(response.content, bytes) else str(response.text)
    assert "Traceback (most recent call last)" not in text, text[:2000]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_operation(schema, fuzz_gateway, method, path):
    op = schema[path][method]
    keys = st.sampled_from([fuzz_gateway.admin_key, fuzz_gateway.tenant_key, "tk-wrong-key", None])
    cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))
    seen: dict[int, int] = {}
    session = requests.Session()

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=cases, key=keys, real_request=st.booleans())
    def run(case, key, real_request):
        rid = case.body.get("request_id") if isinstance(case.body, dict) else None
        if path == "/v1/feedback" and real_request and isinstance(rid, str) and 1 <= len(rid) <= 200:
            # a request that exists (else always 404); only where request_id itself is valid, so a
            # negative case whose violation *is* the request_id is not turned into a valid request
            case.body["request_id"] = fuzz_gateway.request_id
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = case.call(base_url=fuzz_gateway.url, session=session, headers=headers, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        _assert_no_traceback(response)
        case.validate_response(response, checks=BODY_CHECKS if method == "POST" else CHECKS)

    run()
    print(method, path, dict(sorted(seen.items())))
    assert not any(s >= 500 for s in seen), seen
    # The fuzzer reached the handler's real work, not only the auth gate.
    assert seen.get(SUCCESS.get((method, path), 200), 0) > 0, seen
