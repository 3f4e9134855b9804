"""The Manage page in Chromium (Playwright), on a real gateway (build_app, the lean front) with a
stub upstream on 127.0.0.1: the admin creates a tenant and a key, the key works against the
gateway, a budget set on the page is enforced, the key is revoked and then fails with 401, and
every change is in the audit table on the page. The official openai SDK is the API client."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from .test_browser import ARGS, ARTIFACTS, CHROMIUM, _login, sync_api  # noqa: F401  (skips without chromium)

_GW = Path(__file__).resolve().parents[1] / "gateway"
if str(_GW) not in sys.path:
    sys.path.insert(0, str(_GW))

from gw_helpers import ADMIN_KEY, FAST_TIMEOUTS, Stub, gateway, list_dep, stubs  # noqa: E402

from tokenomy.tokens import count_chat_tokens  # noqa: E402

MSGS = [{"role": "user", "content": "hello there"}]
INP = count_chat_tokens(MSGS)
WORST_USD = Decimal(int(INP * 1.1) + 16 + 10) / 1000  # one request's reservation (max_tokens 10, $0.001 a token)
ACTUAL_USD = Decimal(INP + 10) / 1000  # what one request costs
# room for a second request after the first (spent + worst fits), not for a third
BUDGET_USD = ACTUAL_USD + WORST_USD + Decimal("0.001")


class GatewayThread:
    """A stub upstream and the gateway on one event loop in a background thread."""

    def __init__(self, data_dir: Path):
        self.data_dir, self.loop = data_dir, asyncio.new_event_loop()
        self._ready, self._stop = threading.Event(), None
        self.g = self.stub = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            (self.stub,) = await stack.enter_async_context(stubs(Stub(out_tokens=10)))
            cfg = {"deployments": [list_dep("d", self.stub.base_url, 1000.0, 1000.0)],  # $0.001 a token
                   "model_groups": {"m": {"deployments": ["d"]}}, "timeouts": FAST_TIMEOUTS}
            self.g = await stack.enter_async_context(gateway(cfg, self.data_dir))
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> "GatewayThread":
        self._thread.start()
        assert self._ready.wait(60), "gateway did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def _chat(url: str, key: str) -> tuple[int, dict]:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, http_client=httpx.Client())
    try:
        r = client.chat.completions.create(model="m", messages=MSGS, max_tokens=10)
        return 200, {"completion_tokens": r.usage.completion_tokens}
    except openai.APIStatusError as exc:
        return exc.status_code, exc.response.json()["error"]
    finally:
        client.close()


def _loaded_after(page, before: str) -> None:
    page.wait_for_function("b => document.body.dataset.loaded && document.body.dataset.loaded !== b", arg=before)


def _submit(page, form: str) -> None:
    before = page.get_attribute("body", "data-loaded") or ""
    page.click(f"#{form} button[type=submit]")
    _loaded_after(page, before)
    assert page.locator("#status .error").count() == 0, page.inner_text("#status")


def test_admin_manages_tenants_keys_and_budgets_in_the_browser(tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with GatewayThread(tmp_path) as gt, sync_api.sync_playwright() as p:
        url = gt.g.url
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: d.accept())  # the revoke confirmation
        _login(page, url, ADMIN_KEY)
        page.goto(url + "/dashboard/manage")
        page.wait_for_selector("body[data-loaded]", state="attached")
        assert page.get_attribute("body", "data-loaded") != "error", page.inner_text("#status")

        # create a tenant, then a key of it: the secret is shown once
        page.fill("#mt-name", "acme")
        _submit(page, "mt-form")
        assert "acme" in page.inner_text("main section:has(h2:text('Tenants'))")
        page.select_option("#mk-tenant", "acme")
        page.fill("#mk-name", "browser-key")
        _submit(page, "mk-form")
        secret = page.get_attribute("#new-secret code", "data-secret")
        assert secret and secret.startswith("tk-")
        key_id = gt.g.metering.authenticate(secret).key_id

        # the key works against the gateway
        assert _chat(url, secret) == (200, {"completion_tokens": 10})

        # set the tenant's budget: room for one more request's worst case, then no more
        assert 2 * ACTUAL_USD + WORST_USD > BUDGET_USD
        page.select_option("#tb-tenant", "acme")
        page.fill("#tb-budget", str(BUDGET_USD))
        page.select_option("#tb-period", "monthly")
        _submit(page, "tb-form")
        assert page.locator("#new-secret").count() == 0  # the secret was shown once only
        assert _chat(url, secret)[0] == 200  # spent before: one request; its worst case still fits
        status, err = _chat(url, secret)
        assert status == 429 and err["code"] == "budget_exhausted" and "tenant 'acme'" in err["message"]
        assert gt.stub.calls == 2

        # revoke the key on the page: it fails with 401 at once
        before = page.get_attribute("body", "data-loaded")
        page.click(f'[data-key="{key_id}"] button.revoke')
        _loaded_after(page, before)
        status, err = _chat(url, secret)
        assert status == 401 and "revoked" in err["message"]

        # every change in the audit table, newest first, by the admin key
        rows = page.locator("#audit tbody tr")
        actions = [rows.nth(i).locator("td").nth(2).inner_text() for i in range(rows.count())]
        assert actions == ["key.revoke", "tenant.update", "key.create", "tenant.create"]
        actors = {rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())}
        assert actors == {"admin"}
        assert "budget_usd" in rows.nth(1).inner_text() and "→" in rows.nth(1).inner_text()
        assert secret not in page.inner_text("main")
        page.screenshot(path=str(ARTIFACTS / "admin-manage.png"), full_page=True)

        # a tenant's key sees no Manage tab and gets a 403 from its API
        _, tenant_key = gt.g.metering.create_key("acme")
        r = httpx.get(url + "/dashboard/api/manage", headers={"Authorization": f"Bearer {tenant_key}"})
        assert r.status_code == 403
        ctx2 = browser.new_context()
        page2 = ctx2.new_page()
        _login(page2, url, tenant_key)
        page2.wait_for_selector("body[data-loaded]", state="attached")
        assert page2.locator('nav a[data-nav="manage"]').count() == 0
        ctx2.close()
        browser.close()
        assert errors == [], errors
