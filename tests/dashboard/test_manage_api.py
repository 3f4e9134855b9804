"""The management API (/dashboard/api/manage/): tenants, keys (create, rotate, revoke, budgets and
limits), end-user caps and the append-only audit trail, on the SQLite and the PostgreSQL ledger.
Real aiohttp server, real ledgers, httpx as the client; the metering clock is injected, so audit
times are exact."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tokenomy.metering import AuthError, Metering

from .conftest import ADMIN_KEY, ServerThread

T0 = 1_796_000_000.0  # 2026-11-30T... UTC: the injected metering clock starts here
BASE = "/dashboard/api/manage"


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", "postgres"])
def env(request, tmp_path):
    clock = Clock(T0)
    url = None
    if request.param == "sqlite":
        m = Metering.open(tmp_path, admin_key=ADMIN_KEY, synchronous="OFF", clock=clock)
    else:
        from tokenomy.metering.backends import open_metering

        from .pgschema import new_schema_url

        url = new_schema_url("manage")
        m = open_metering(tmp_path, ledger_url=url, admin_key=ADMIN_KEY, clock=clock)
    srv = ServerThread(m).start()
    try:
        yield srv, m, clock, request.param, url
    finally:
        srv.stop()
        m.shutdown()
        if url is not None:
            from .pgschema import drop_schema

            drop_schema(url)


def _call(srv, method: str, path: str, body=None, key: str = ADMIN_KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, srv.url + BASE + path, json=body, headers=headers, timeout=30, **kw)


def test_manage_round_trip_is_audited(env):
    srv, m, clock, backend, _ = env
    r = _call(srv, "POST", "/tenants", {"name": "acme", "budget_usd": "10", "budget_period": "monthly"})
    assert r.status_code == 201 and r.json()["budget_usd"] == "10" and r.json()["budget_period"] == "monthly"
    assert _call(srv, "POST", "/tenants", {"name": "acme"}).status_code == 409

    clock.t = T0 + 10
    r = _call(srv, "POST", "/keys", {"tenant": "acme", "name": "ci", "rpm": 60, "budget_usd": 2.5})
    assert r.status_code == 201
    created = r.json()
    key_id, secret = created["key_id"], created["key"]
    assert m.authenticate(secret).key_id == key_id and created["rpm"] == 60 and created["budget_usd"] == "2.5"
    listed = _call(srv, "GET", "").json()["tables"]["keys"]
    assert [k["key_id"] for k in listed] == [key_id]
    assert "key" not in listed[0] and not any("hash" in f or "secret" in f for f in listed[0])  # shown once

    clock.t = T0 + 20
    r = _call(srv, "PATCH", f"/keys/{key_id}", {"budget_usd": "1", "budget_period": "daily", "tpm": 1000, "rpm": None})
    assert r.status_code == 200
    assert (r.json()["budget_usd"], r.json()["budget_period"], r.json()["rpm"], r.json()["tpm"]) == ("1", "daily", None, 1000)
    assert m.ledger.get_key(key_id).tpm == 1000  # in the ledger, not only in the answer

    clock.t = T0 + 30
    r = _call(srv, "POST", f"/keys/{key_id}/rotate", {})
    assert r.status_code == 200
    new_secret = r.json()["key"]
    assert new_secret != secret and m.authenticate(new_secret).key_id == key_id
    with pytest.raises(AuthError, match="invalid API key"):
        m.authenticate(secret)  # the old secret stops working at once

    clock.t = T0 + 40
    r = _call(srv, "PATCH", "/tenants/acme", {"budget_usd": None, "soft_budget_usd": "3"})
    assert r.status_code == 200 and r.json()["budget_usd"] is None and r.json()["soft_budget_usd"] == "3"

    clock.t = T0 + 50
    r = _call(srv, "PUT", "/tenants/acme/users/*", {"budget_usd": "0.5", "budget_period": "daily", "rpm": 5})
    assert r.status_code == 200 and r.json()["default"] is True and r.json()["rpm"] == 5
    r = _call(srv, "PUT", "/tenants/acme/users/heavy user", {"budget_usd": "2"})
    assert r.status_code == 200 and r.json()["user"] == "heavy user"
    caps = _call(srv, "GET", "/tenants/acme/users").json()["data"]
    assert [(c["user"], c["budget_usd"]) for c in caps] == [("*", "0.5"), ("heavy user", "2")]
    clock.t = T0 + 60
    assert _call(srv, "DELETE", "/tenants/acme/users/heavy user").status_code == 204
    assert _call(srv, "DELETE", "/tenants/acme/users/heavy user").status_code == 404

    clock.t = T0 + 70
    r = _call(srv, "POST", f"/keys/{key_id}/revoke", {})
    assert r.status_code == 200 and r.json()["active"] is False
    with pytest.raises(AuthError, match="revoked"):
        m.authenticate(new_secret)
    assert _call(srv, "POST", f"/keys/{key_id}/revoke", {}).status_code == 200  # idempotent: not audited again
    assert _call(srv, "POST", f"/keys/{key_id}/rotate", {}).status_code == 409

    audit = _call(srv, "GET", "/audit").json()["data"]
    assert [(a["action"], a["ts"] - T0) for a in audit] == [
        ("key.revoke", 70), ("user_cap.delete", 60), ("user_cap.set", 50), ("user_cap.set", 50),
        ("tenant.update", 40), ("key.rotate", 30), ("key.update", 20), ("key.create", 10), ("tenant.create", 0)]
    assert {a["actor"] for a in audit} == {"admin"}
    by = {a["action"]: a for a in reversed(audit)}
    assert by["key.update"]["before"]["rpm"] == 60 and by["key.update"]["after"]["rpm"] is None
    assert by["tenant.update"]["before"]["budget_usd"] == "10" and by["tenant.update"]["after"]["budget_usd"] is None
    assert by["key.revoke"]["target"] == f"key:{key_id}" and by["key.revoke"]["after"]["active"] is False
    assert by["user_cap.delete"]["target"] == "user:acme/heavy user" and by["user_cap.delete"]["after"] is None
    assert not any(secret in str(a) or new_secret in str(a) for a in audit)  # never a secret
    only = _call(srv, "GET", "/audit", params={"target": f"key:{key_id}", "limit": "2"}).json()["data"]
    assert [a["action"] for a in only] == ["key.revoke", "key.rotate"]
    # the Manage page's tables, as CSV too
    csv = _call(srv, "GET", "", params={"format": "csv", "table": "audit"})
    assert csv.status_code == 200 and csv.text.count("\r\n") == 1 + len(audit)


def test_audit_trail_is_append_only(env):
    srv, m, clock, backend, url = env
    assert _call(srv, "POST", "/tenants", {"name": "acme"}).status_code == 201
    if backend == "sqlite":
        conn = sqlite3.connect(m.ledger.path)
        try:
            for sql in ("UPDATE admin_audit SET actor = 'mallory'", "DELETE FROM admin_audit"):
                with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                    conn.execute(sql)
        finally:
            conn.close()
    else:
        import sqlalchemy as sa

        from tokenomy.metering.postgres_ledger import create_engine_for

        engine = create_engine_for(url, pool_size=1)
        try:
            for sql in ("UPDATE admin_audit SET actor = 'mallory'", "DELETE FROM admin_audit", "TRUNCATE admin_audit"):
                with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                    with engine.begin() as conn:
                        conn.exec_driver_sql(sql)
        finally:
            engine.dispose()
    assert [a["actor"] for a in _call(srv, "GET", "/audit").json()["data"]] == ["admin"]


def test_admin_key_only_and_json_only(env):
    srv, m, clock, backend, _ = env
    _, tenant_key = m.create_key("acme")
    r = _call(srv, "POST", "/tenants", {"name": "evil"}, key=tenant_key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    assert _call(srv, "GET", "/audit", key=tenant_key).status_code == 403
    assert _call(srv, "GET", "", key=None).status_code == 401
    # CSRF: a cross-site form can post urlencoded, multipart or text/plain, never JSON without a preflight
    for ctype, data in (("application/x-www-form-urlencoded", "name=evil"), ("text/plain", '{"name": "evil"}'),
                        ("multipart/form-data; boundary=x", "--x--")):
        r = httpx.post(srv.url + BASE + "/tenants", content=data,
                       headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": ctype})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    assert [t["name"] for t in m.list_tenants()] == ["acme"]
    # bad input: a clear 4xx each, never a 500
    cases = [
        ("POST", "/tenants", {"name": "bad name!"}, 400), ("POST", "/tenants", {}, 400),
        ("POST", "/tenants", {"name": "x", "budget_usd": True}, 400), ("POST", "/tenants", {"name": "x", "extra": 1}, 400),
        ("POST", "/keys", {"tenant": "acme", "rpm": "60"}, 400), ("POST", "/keys", {"tenant": "acme", "rpm": 0}, 400),
        ("POST", "/keys", {"tenant": "acme", "budget_usd": "-1"}, 400), ("POST", "/keys", {"tenant": "acme", "budget_period": "weekly"}, 400),
        ("PATCH", "/keys/nope", {"rpm": 5}, 404), ("POST", "/keys/nope/rotate", {}, 404), ("POST", "/keys/nope/revoke", {}, 404),
        ("PATCH", "/tenants/nope", {"budget_usd": "1"}, 404), ("PUT", "/tenants/nope/users/u", {"rpm": 1}, 404),
        ("PUT", "/tenants/acme/users/u", {}, 400), ("PUT", "/tenants/acme/users/u", {"budget_usd": "1e999"}, 400),
        ("GET", "/audit?limit=0", None, 400),
    ]
    for method, path, body, status in cases:
        r = _call(srv, method, path, body)
        assert r.status_code == status, (method, path, body, r.text)
        assert r.json()["error"]["message"], r.text
    r = httpx.post(srv.url + BASE + "/tenants", content=b"{not json",
                   headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert _call(srv, "GET", "/audit").json()["data"][0]["action"] == "key.create"  # nothing else was recorded
