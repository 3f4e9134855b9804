"""Hypothesis over HTTP on the inputs schemathesis rarely hits: time query parameters of
GET /admin/usage and the numbers of POST /admin/keys (the values the bugs below were found with),
raw bodies and odd Authorization headers. No 5xx, always the OpenAI-style JSON error."""

from __future__ import annotations

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def _fixed(name: str) -> bool:
    """Whether the fix in /tmp/openapi_fixes.diff (the lead applies it) is in the tree."""
    if name == "json_413":
        import inspect

        from tokenomy.gateway import app

        return "_read_body(request)" in inspect.getsource(app.admin_create_key)
    if name == "token_bounds":
        from tokenomy.gateway import validate

        return hasattr(validate, "MAX_N")
    from tokenomy.metering import records

    return hasattr(records, "MAX_STORED_INT")


def _assert_json_error_or_ok(r: requests.Response, ok: set[int]) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert "Traceback (most recent call last)" not in r.text
    if r.status_code not in ok:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]


times = st.one_of(st.floats().map(repr), st.integers(-(10**20), 10**20).map(str),
                  st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**12), st.sampled_from("smhdw")),
                  st.text(max_size=25))


@SETTINGS
@given(since=times, until=times)
@example(since="nan", until="")
@example(since="inf", until="")
@example(since="-1e20", until="")
@example(since="99999999999999", until="")
@example(since="10000000000d", until="")
@example(since="0001-01-01T00:00:00+14:00", until="9999-12-31T23:59:59-14:00")
def test_admin_usage_time_parameters(fuzz_gateway, since, until):
    r = requests.get(fuzz_gateway.url + "/admin/usage", params={"since": since, "until": until},
                     headers={"Authorization": f"Bearer {fuzz_gateway.admin_key}"}, timeout=30)
    _assert_json_error_or_ok(r, {200})
    if r.status_code == 400:
        assert r.json()["error"]["param"] in ("since", "until")


money = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), st.decimals().map(str),
                  st.sampled_from(["1e30", "1e999999999", "NaN", "-0", "9223372", "9223373"]))
limits = st.one_of(st.none(), st.integers(-(2**64), 2**64 - 1), st.booleans(), st.floats(allow_nan=False, allow_infinity=False))


@pytest.mark.xfail(not _fixed("stored_int_range"), strict=True,
                   reason="BUG: POST /admin/keys with budget_usd > ~9.2e6 USD or rpm/tpm >= 2**63 -> 500 "
                          "(OverflowError: Python int too large to convert to SQLite INTEGER); "
                          "fix in /tmp/openapi_fixes.diff (metering/records.py)")
@SETTINGS
@given(budget=money, soft=money, rpm=limits, tpm=limits)
@example(budget=1e300, soft=None, rpm=None, tpm=None)
@example(budget="1e30", soft=None, rpm=None, tpm=None)
@example(budget="1e999999999", soft=None, rpm=None, tpm=None)
@example(budget=None, soft=None, rpm=None, tpm=2**63)
def test_admin_keys_numbers(fuzz_gateway, budget, soft, rpm, tpm):
    body = {k: val for k, val in (("tenant", "fuzz-keys"), ("budget_usd", budget), ("soft_budget_usd", soft),
                                  ("rpm", rpm), ("tpm", tpm)) if val is not None}
    r = requests.post(fuzz_gateway.url + "/admin/keys", json=body,
                      headers={"Authorization": f"Bearer {fuzz_gateway.admin_key}"}, timeout=30)
    _assert_json_error_or_ok(r, {201})


@SETTINGS
@given(path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/feedback", "/admin/keys"]),
       raw=st.binary(max_size=300), ctype=st.sampled_from(["application/json", "text/plain", "", "multipart/form-data"]),
       auth=st.one_of(st.sampled_from(["admin", "tenant", "", "Bearer", "Bearer ", "Basic abc", "bearer  x"]),
                      st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30)))
def test_raw_bodies_and_auth_headers(fuzz_gateway, path, raw, ctype, auth):
    auth = {"admin": f"Bearer {fuzz_gateway.admin_key}", "tenant": f"Bearer {fuzz_gateway.tenant_key}"}.get(auth, auth)
    headers = {"Content-Type": ctype, **({"Authorization": auth} if auth else {})}
    r = requests.post(fuzz_gateway.url + path, data=raw, headers=headers, timeout=30)
    _assert_json_error_or_ok(r, set())  # random bytes are never a valid request
    assert r.status_code in (400, 401, 403), (r.status_code, r.text[:300])


_JSON_413_BUG = pytest.mark.xfail(
    not _fixed("json_413"), strict=True,
    reason="BUG: /admin/keys and /v1/feedback answer an oversized body with aiohttp's text/plain 413, not the "
           "OpenAI error object; fix in /tmp/openapi_fixes.diff (app.py: gw._read_body)")


@pytest.mark.parametrize("path", [pytest.param("/admin/keys", marks=_JSON_413_BUG),
                                  pytest.param("/v1/feedback", marks=_JSON_413_BUG),
                                  "/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_a_json_413(fuzz_gateway, path, chunked):
    payload = b" " * (2 << 20)  # > the default server.max_body_bytes (1 MiB)
    r = requests.post(fuzz_gateway.url + path, data=iter([payload]) if chunked else payload, timeout=30,
                      headers={"Authorization": f"Bearer {fuzz_gateway.admin_key}", "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.headers["Content-Type"].startswith("application/json"), r.text[:200]
    assert r.json()["error"]["code"] == "request_too_large"


@pytest.mark.xfail(not _fixed("token_bounds"), strict=True,
                   reason="BUG: n and max_tokens near 2**64 -> 500 decimal.InvalidOperation in metering reserve "
                          "(worst-case pico-USD beyond Decimal precision); fix in /tmp/openapi_fixes.diff "
                          "(validate.py bounds, proxy.py uses v.n_choices)")
@settings(max_examples=30, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 2**64 - 1), max_tokens=st.integers(1, 2**64 - 1),
       field=st.sampled_from(["max_tokens", "max_completion_tokens"]), budget=st.booleans())
@example(n=2**64 - 1, max_tokens=2**64 - 1, field="max_tokens", budget=False)
@example(n=2**64 - 1, max_tokens=2**64 - 1, field="max_tokens", budget=True)
def test_huge_token_counts_are_a_400_or_served(fuzz_gateway, budgeted_key, n, max_tokens, field, budget):
    key = budgeted_key if budget else fuzz_gateway.tenant_key
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"n":%d,"%s":%d}' % (n, field.encode(), max_tokens)
    r = requests.post(fuzz_gateway.url + "/v1/chat/completions", data=raw, timeout=30,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    _assert_json_error_or_ok(r, {200})
    assert r.status_code in (200, 400, 429), r.text[:300]


@pytest.fixture(scope="module")
def budgeted_key(fuzz_gateway) -> str:
    r = requests.post(fuzz_gateway.url + "/admin/keys", json={"tenant": "fuzz-budget", "budget_usd": 5},
                      headers={"Authorization": f"Bearer {fuzz_gateway.admin_key}"}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["key"]


# The dashboard API takes the same time parameters (one bound: tokenomy.timebounds) and the
# unit-cost table two numbers; none may give a 5xx.
@SETTINGS
@given(since=times, until=times, path=st.sampled_from(["overview", "tenants", "routing", "deployments"]))
@example(since="-1e18", until="", path="overview")
@example(since="", until="nan", path="overview")
@example(since="0001-01-01T00:00+14:00", until="", path="tenants")
def test_dashboard_time_parameters(fuzz_gateway, since, until, path):
    r = requests.get(f"{fuzz_gateway.url}/dashboard/api/{path}", params={"since": since, "until": until},
                     headers={"Authorization": f"Bearer {fuzz_gateway.admin_key}"}, timeout=30)
    _assert_json_error_or_ok(r, {200, 503})
    if r.status_code == 400:
        assert r.json()["error"]["param"] in ("since", "until")


numbers = st.one_of(st.floats().map(repr), st.integers(-(10**30), 10**30).map(str), st.text(max_size=12),
                    st.sampled_from(["1e20", "nan", "inf", "-0", "0", "9" * 5000]))


@SETTINGS
@given(context=numbers, slo=numbers)
@example(context="1e20", slo="40")
@example(context="2048", slo="nan")
def test_dashboard_unit_cost_parameters(fuzz_gateway, context, slo):
    r = requests.get(f"{fuzz_gateway.url}/dashboard/api/unit-cost",
                     params={"model": "llama-3-8b", "context": context, "slo_tpot_ms": slo},
                     headers={"Authorization": f"Bearer {fuzz_gateway.admin_key}"}, timeout=60)
    _assert_json_error_or_ok(r, {200})


@SETTINGS
@given(depth=st.integers(1, 1100), kind=st.sampled_from(["[", "{"]))
@example(depth=254, kind="[")
@example(depth=1022, kind="{")
def test_nested_json_bodies(fuzz_gateway, depth, kind):
    inner = ("[" * depth + "]" * depth) if kind == "[" else ('{"a":' * depth + "1" + "}" * depth)
    body = '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + inner + "}"
    r = requests.post(fuzz_gateway.url + "/v1/chat/completions", data=body.encode(),
                      headers={"Authorization": f"Bearer {fuzz_gateway.tenant_key}",
                               "Content-Type": "application/json"}, timeout=30)
    _assert_json_error_or_ok(r, {200, 429})
    from tokenomy.gateway.validate import MAX_JSON_DEPTH

    if depth + 1 > MAX_JSON_DEPTH:
        msg = r.json()["error"]["message"]
        # past orjson's own parser limit (1024) its error is the answer; below it, the gateway's
        assert r.status_code == 400 and ("deeper than" in msg or "depth limit exceeded" in msg)


@SETTINGS
@given(cell=st.one_of(st.text(max_size=40), st.sampled_from(["=1+1", "+SUM(A1)", "-1", "-1+1", "@x", "\t=1", "\r=1"])))
def test_csv_cells_never_start_a_formula(cell):
    import csv
    import io

    from tokenomy.dashboard.api import to_csv

    rows = list(csv.reader(io.StringIO(to_csv([{"c": cell}]), newline="")))
    got = rows[1][0]
    if got.startswith(("=", "+", "-", "@", "\t", "\r")):
        float(got)  # only a plain signed number may start with a sign
    assert got in (cell, "'" + cell)
