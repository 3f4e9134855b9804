"""The same events in a SQLite ledger and a PostgreSQL ledger: every dashboard endpoint returns
the same JSON (exact money and counts; float sums equal up to summation order)."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import ADMIN_KEY, ServerThread, seed

pytestmark = pytest.mark.timeout(300)
ENDPOINTS = ["overview", "routing", "deployments", "tenants"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from .pgschema import drop_schema, new_schema_url

    url = new_schema_url("dash_agree")
    now = time.time()
    lite = seed(tmp_path_factory.mktemp("agree-sqlite"), now=now)
    pg = seed(tmp_path_factory.mktemp("agree-pg"), now=now, ledger_url=url)
    servers = [ServerThread(s.metering, config={"min_fold_interval_s": 0.0}).start() for s in (lite, pg)]
    try:
        yield lite, pg, servers
    finally:
        for srv in servers:
            srv.stop()
        lite.metering.shutdown()
        pg.metering.shutdown()
        drop_schema(url)


def _normalise(body, key_tenant: dict[str, str]):
    """Key ids differ between the two ledgers (random): name each key by its tenant instead."""
    if isinstance(body, dict):
        return {k: _normalise(key_tenant.get(v, v) if isinstance(v, str) else v, key_tenant) for k, v in body.items()}
    if isinstance(body, list):
        return [_normalise(v, key_tenant) for v in body]
    return body


def _same(a, b, path: str = "") -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), path
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def _both(pair, endpoint: str, **params):
    """The endpoint on both servers within one wall-clock second: some figures depend on now
    (the tenants page's peaks of "the last hour"; mean in-flight over the elapsed part of a
    window that ends in the future)."""
    lite, pg, servers = pair
    for _ in range(20):
        second = int(time.time())
        out = [httpx.get(f"{srv.url}/dashboard/api/{endpoint}", params=params,
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120) for srv in servers]
        if int(time.time()) == second:
            break
    for r in out:
        assert r.status_code == 200, r.text
    names = [{v: k for k, v in s.key_ids.items()} for s in (lite, pg)]
    return [_normalise(r.json(), n) for r, n in zip(out, names)]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("window", [
    {"hours": 6},                       # minute buckets
    {"hours": 24},                      # hour buckets
    {"hours": 24 * 8, "res": "day"},    # day buckets, the whole week
    {"hours": 24 * 8, "tenant": "globex"},
])
def test_every_endpoint_agrees(pair, endpoint, window):
    lite = pair[0]
    params = {"since": str(int(lite.now - window["hours"] * 3600)), "until": str(int(lite.now) + 1)}
    params.update({k: v for k, v in window.items() if k != "hours"})
    a, b = _both(pair, endpoint, **params)
    assert a["meta"]["rollups"] == b["meta"]["rollups"] == {"behind": 0}
    _same(a, b)
    if endpoint == "overview":
        assert a["totals"]["requests"] > 0


def test_range_all_and_csv_agree(pair):
    a, b = _both(pair, "overview", range="all", res="day")
    _same(a, b)
    assert a["totals"]["requests"] == 1200 and a["totals"]["cost_usd"] == b["totals"]["cost_usd"]
    lite, pg, servers = pair
    csvs = [httpx.get(f"{srv.url}/dashboard/api/deployments", params={"range": "all", "res": "day", "format": "csv"},
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120).text for srv in servers]
    assert csvs[0].splitlines()[0] == csvs[1].splitlines()[0]
    assert len(csvs[0].splitlines()) == len(csvs[1].splitlines()) == 5  # header + 4 deployments
