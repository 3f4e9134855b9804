"""Browser tests: Playwright for Python driving Debian's Chromium (no browser download).

Screenshots go to test-artifacts/dashboard/. Without /usr/bin/chromium the tests fail in CI
(CI=true) and are skipped elsewhere with the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import ServerThread, make_event

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
PAGES = ["overview", "routing", "deployments", "tenants", "unit-cost", "plans"]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{CHROMIUM} is missing: CI must `apt-get install -y chromium` for the dashboard browser tests")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)", allow_module_level=True)

if os.environ.get("CI") == "true":  # in CI a missing playwright fails the browser tests, never skips them
    import playwright.sync_api as sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """The pages on the SQLite ledger only: the API tests run on both ledgers, and the pages
    only render what the API returns."""
    from .conftest import seed

    s = seed(tmp_path_factory.mktemp("dash-browser"))
    yield s
    s.metering.shutdown()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def plans_saved(seeded):
    d = seeded.data_dir / "plans"
    d.mkdir(exist_ok=True)
    (d / "fleet-llama8b.json").write_text(json.dumps({
        "usd_per_hour": 41.2, "usd_per_mtok": 0.061, "saving_fraction": 0.27, "slo_attainment": 0.994,
        "best_single": {"accelerator": "h100", "usd_per_hour": 56.4},
        "assignments": [{"accelerator": "l4", "count": 6, "site": "se", "usd_per_hour": 4.8},
                        {"accelerator": "h100", "count": 4, "site": "us-va", "usd_per_hour": 36.4}]}))
    (d / "pricing-2026.json").write_text(json.dumps({"plans": {
        "flat-20": {"revenue_usd": 200000, "cost_usd": 231000, "margin_usd": -31000, "unprofitable_share": 0.18},
        "metered": {"revenue_usd": 150000, "cost_usd": 98000, "margin_usd": 52000, "unprofitable_share": 0.0}}}))
    return d


def _login(page, url: str, key: str) -> None:
    page.goto(url + "/dashboard/overview")
    page.wait_for_url("**/dashboard/login**")
    page.fill("#key", key)
    page.click("#login-btn")
    page.wait_for_url("**/dashboard/overview**")


def _loaded(page) -> None:
    page.wait_for_selector("body[data-loaded]", state="attached")


def _points(page, title: str) -> int:
    return int(page.get_attribute(f'[data-chart="{title}"]', "data-points"))


def _canvases(page) -> int:
    return page.locator(".uplot canvas").count()


def test_admin_sees_every_page_with_charts(server, seeded, browser, plans_saved):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(server.url) else None)
    _login(page, server.url, seeded.admin_key)

    for name in PAGES:
        page.goto(f"{server.url}/dashboard/{name}?range=7d")
        _loaded(page)
        assert page.get_attribute("body", "data-loaded") != "error", page.inner_text("#status")
        if name == "overview":
            page.wait_for_selector(".uplot canvas")
            assert _points(page, "Requests") > 0
            assert _points(page, "Spend vs baselines (USD per bucket)") > 0
            assert _canvases(page) >= 4
            assert "1,200" in page.inner_text(".cards")  # every seeded request in 7 days
        elif name == "routing":
            page.wait_for_selector(".uplot canvas")
            assert _points(page, "Model mix (requests)") > 0
            assert _points(page, "Strong-call share") > 0
            assert page.locator('[data-chart="Requests by model and deployment"] svg rect').count() == 4
            assert page.locator('[data-empty="quality"]').count() == 1  # no feedback: empty state
        elif name == "deployments":
            page.wait_for_selector(".uplot canvas")
            assert _points(page, "Requests per deployment") > 0
            assert _points(page, "Latency p50 / p99") == 4
            for dep in ("small@l4", "small@h100", "large@h100", "large@api"):
                assert dep in page.inner_text("main")
        elif name == "tenants":
            assert _points(page, "Requests by tenant") == 3
            near = page.inner_text("main")
            assert "globex" in near and "tenant budget" in near
        elif name == "unit-cost":
            title = "$/Mtok output, cheapest site per accelerator, API offers ranked in (grey)"
            assert _points(page, title) > 0
            # each accelerator once (its cheapest site), not once per site
            sites = [c.inner_text() for c in page.locator("table tbody tr td:nth-child(3)").all()]
            accs = [c.inner_text() for c in page.locator("table tbody tr td:nth-child(1)").all()]
            assert len(accs) == len(set(accs)) > 5 and all("cheapest of" in x for x in sites)
            page.select_option("#uc-model", "llama-3-70b")
            page.fill("#uc-slo", "50")
            with page.expect_response(lambda r: "api/unit-cost" in r.url and "llama-3-70b" in r.url):
                page.click("#uc-form button")
            page.wait_for_url("**slo_tpot_ms=50**")
            assert "llama-3-70b" in page.url and "slo_tpot_ms=50" in page.url
            assert page.locator("table tbody tr").count() > 5
        elif name == "plans":
            assert page.locator("a.plan-link").count() == 2
            page.click("a.plan-link >> text=pricing-2026")
            _loaded(page)
            page.wait_for_selector('[data-chart="Revenue vs serving cost per plan"]')
            assert _points(page, "Revenue vs serving cost per plan") == 2
            page.click("a.plan-link >> text=fleet-llama8b")
            _loaded(page)
            page.wait_for_selector('[data-chart="Assignments (count)"]')
            assert _points(page, "Assignments (count)") == 2
        assert _clipped_texts(page) == [], name
        page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)

    assert errors == [], errors
    assert external == [], f"requests left the server (CDN?): {external}"
    ctx.close()


def _clipped_texts(page) -> list[str]:
    """Texts of every SVG chart whose bounding box is not inside its own SVG."""
    return page.evaluate("""() => {
      const out = [];
      for (const svg of document.querySelectorAll(".chart svg")) {
        const vb = svg.viewBox.baseVal;
        for (const t of svg.querySelectorAll("text")) {
          const b = t.getBBox();
          if (b.x < vb.x - 0.5 || b.y < vb.y - 0.5 || b.x + b.width > vb.x + vb.width + 0.5 || b.y + b.height > vb.y + vb.height + 0.5)
            out.push(t.textContent);
        }
      }
      return out;
    }""")


def _overflowing_legends(page) -> list[str]:
    """Labels of uPlot legend entries (time-series charts) that reach past their chart's box."""
    return page.evaluate("""() => {
      const out = [];
      for (const chart of document.querySelectorAll(".chart")) {
        const c = chart.getBoundingClientRect();
        for (const s of chart.querySelectorAll(".u-legend .u-series")) {
          const b = s.getBoundingClientRect();
          if (b.width > 0 && (b.left < c.left - 0.5 || b.right > c.right + 0.5)) out.push(s.textContent);
        }
      }
      return out;
    }""")


def test_long_labels_and_values_stay_inside_their_charts(server, seeded, browser):
    """A deployment name longer than the label column is shortened with an ellipsis (full name in
    its tooltip), never cut off at the chart's edge; the values at the bar ends stay inside too."""
    long_dep = "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo@together-ai-us-east-dedicated-endpoint"
    from .conftest import DEPLOYMENTS

    DEPLOYMENTS[long_dep] = ("large", 0.9, 0.9)
    try:
        e = make_event(990_001, seeded.now - 1, "acme", seeded.key_ids["acme"], long_dep, input_tokens=5_000_000,
                       output_tokens=9_000_000, latency_ms=123456.0)
        server.call(seeded.metering.commit(e))
        ctx = browser.new_context(viewport={"width": 1300, "height": 900})
        page = ctx.new_page()
        _login(page, server.url, seeded.admin_key)
        for name in ("deployments", "routing", "tenants"):
            page.goto(f"{server.url}/dashboard/{name}?range=7d")
            _loaded(page)
            assert _clipped_texts(page) == [], name
            assert _overflowing_legends(page) == [], name
            assert page.evaluate("""() => [...document.querySelectorAll('.table-wrap')].filter((w) =>
                getComputedStyle(w).overflowX !== 'auto' && w.scrollWidth > w.clientWidth + 1).length""") == 0, name
        # the long name is shortened in the Deployments table (full name in its tooltip), so the
        # table stays close to its panel's width (what is left scrolls inside the panel)
        page.goto(f"{server.url}/dashboard/deployments?range=7d")
        _loaded(page)
        cell = page.locator(f'.table-wrap td[title="{long_dep}"]')
        assert cell.count() == 1 and cell.evaluate("td => td.scrollWidth > td.clientWidth")  # ellipsis shown
        assert page.evaluate("""() => [...document.querySelectorAll('.table-wrap')].map((w) =>
            w.scrollWidth - w.clientWidth)""")[0] < 100
        page.goto(f"{server.url}/dashboard/deployments?range=7d")
        _loaded(page)
        label = page.locator(f'[data-chart="$/Mtok by deployment"] text[data-label="{long_dep}"]')
        assert label.count() == 1 and label.evaluate("t => t.firstChild.nodeValue").endswith("…")
        assert label.locator("title").text_content() == long_dep
        legend = page.locator(f'[data-chart="Requests per deployment"] .u-legend .u-label[title="{long_dep}"]')
        assert legend.count() == 1  # shortened in the legend, the full name in its tooltip
        page.screenshot(path=str(ARTIFACTS / "admin-deployments-long-names.png"), full_page=True)
        ctx.close()
    finally:
        del DEPLOYMENTS[long_dep]


def test_one_colour_per_deployment_on_every_chart(server, seeded, browser):
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    _login(page, server.url, seeded.admin_key)
    colours: dict[str, set[str]] = {}
    for name, chart in (("deployments", "$/Mtok by deployment"), ("routing", "Requests by model and deployment")):
        page.goto(f"{server.url}/dashboard/{name}?range=7d")
        _loaded(page)
        for rect in page.locator(f'[data-chart="{chart}"] svg rect[data-value]').all():
            label = rect.locator("title").text_content().split(": ")[0].split(" · ")[-1]
            colours.setdefault(label, set()).add(rect.get_attribute("fill"))
    assert set(colours) >= {"small@l4", "small@h100", "large@h100", "large@api"}
    assert all(len(c) == 1 for c in colours.values()), colours  # the same colour wherever it appears
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # and distinct names differ
    ctx.close()


def test_csv_link_downloads_with_the_key(server, seeded, browser):
    ctx = browser.new_context(accept_downloads=True)
    page = ctx.new_page()
    _login(page, server.url, seeded.admin_key)
    page.goto(f"{server.url}/dashboard/tenants?range=7d")
    _loaded(page)
    with page.expect_download() as dl:
        page.click("#api-csv")
    text = Path(dl.value.path()).read_text()
    assert text.splitlines()[0].startswith("tenant,requests,tokens,cost_usd")
    assert len(text.splitlines()) == 4  # header + acme, globex, initech
    ctx.close()


def test_range_selector_and_tenant_filter(server, seeded, browser):
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    _login(page, server.url, seeded.admin_key)
    _loaded(page)
    with page.expect_response(lambda r: "api/overview" in r.url and "range=1h" in r.url):
        page.select_option("#range", "1h")
    assert "range=1h" in page.url
    with page.expect_response(lambda r: "api/overview" in r.url and "tenant=initech" in r.url) as resp:
        page.select_option("#tenant", "initech")
    body = resp.value.json()
    assert body["meta"]["tenant"] == "initech"
    ctx.close()


def test_tenant_key_sees_only_its_tenant(server, seeded, browser):
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    _login(page, server.url, seeded.secrets["acme"])
    page.goto(f"{server.url}/dashboard/tenants?range=7d")
    _loaded(page)
    text = page.inner_text("main")
    assert "acme" in text and "globex" not in text and "initech" not in text
    assert page.is_disabled("#tenant")
    # its own usage, price and limits; never the operator's cost or margin; no tab it cannot open
    assert page.locator('nav a[data-nav="plans"]').count() == 0
    assert page.locator('nav a[data-nav="overview"]').count() == 1
    for word in ("Serving cost", "Margin", "margin", "Revenue"):
        assert word not in text, word
    assert "Spent this budget period" in text
    page.screenshot(path=str(ARTIFACTS / "tenant-acme-tenants.png"), full_page=True)
    page.goto(f"{server.url}/dashboard/overview?range=7d")
    _loaded(page)
    overview = page.inner_text("main")
    assert "Billed" in overview and "Spend (serving cost)" not in overview and "Saved" not in overview
    page.screenshot(path=str(ARTIFACTS / "tenant-acme-overview.png"), full_page=True)

    # another tenant's page: the API says 403 and the page shows it, with no data
    page.goto(f"{server.url}/dashboard/overview?range=7d&tenant=globex")
    _loaded(page)
    assert page.get_attribute("body", "data-loaded") == "error"
    assert "cannot see tenant 'globex'" in page.inner_text("#status")
    assert page.locator(".uplot").count() == 0
    page.screenshot(path=str(ARTIFACTS / "tenant-acme-forbidden.png"), full_page=True)

    key = seeded.secrets["acme"]
    r = page.request.get(f"{server.url}/dashboard/api/tenants?tenant=globex", headers={"Authorization": f"Bearer {key}"})
    assert r.status == 403
    r = page.request.get(f"{server.url}/dashboard/api/plans", headers={"Authorization": f"Bearer {key}"})
    assert r.status == 403
    ctx.close()


def test_bad_key_is_refused_at_login(server, browser):
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(server.url + "/dashboard/login")
    page.fill("#key", "tk-not-a-real-key")
    page.click("#login-btn")
    page.wait_for_selector("#login-error:not(:empty)")
    assert "invalid API key" in page.inner_text("#login-error")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "login-refused.png"))
    assert page.evaluate("sessionStorage.getItem('tokenomy_key')") is None
    ctx.close()


def test_auto_refresh_shows_new_events(seeded, browser):
    import time

    server = ServerThread(seeded.metering, config={"min_fold_interval_s": 0.0, "refresh_s": 1}).start()
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    try:
        page = ctx.new_page()
        _login(page, server.url, seeded.admin_key)
        # a fixed window (a sliding "last hour" would drop old events as minutes pass)
        t0 = int(time.time())
        page.goto(f"{server.url}/dashboard/overview?since={t0 - 3600}&until={t0 + 3600}")
        _loaded(page)
        requests_kpi = page.locator(".cards .kpi .value").first
        before = int(requests_kpi.inner_text().replace(",", ""))
        loads = page.get_attribute("body", "data-loaded")
        now = time.time()
        for i in range(3):
            e = make_event(900_000 + i, now, "acme", seeded.key_ids["acme"], "small@l4", input_tokens=10,
                           output_tokens=10, latency_ms=10.0)
            assert server.call(seeded.metering.commit(e))
        # no reload: the page refreshes itself (every second here)
        sync_api.expect(requests_kpi).to_have_text(f"{before + 3:,}", timeout=60_000)
        assert page.get_attribute("body", "data-loaded") != loads
    finally:
        ctx.close()
        server.stop()


def test_plans_page_shows_pricing_plans_as_cards_and_tenants_against_their_caps(seeded, browser):
    """The gateway's real plan gate (examples/plans.yaml) behind the dashboard: a card per plan
    with its price, tiers and caps, and each tenant's position against its caps."""
    import time
    from types import SimpleNamespace

    from aiohttp import web

    import yaml

    from tokenomy.billing.plans import parse_plans
    from tokenomy.gateway.app import GATEWAY_KEY
    from tokenomy.gateway.plans import PlanGate

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "plans.yaml").read_text())
    # the seeded tenant acme on the free plan (50 requests / 5 h), 30 of them used
    doc["tenants"]["acme"] = {"subscriptions": [{"plan": "free", "start": "2026-01-01"}]}
    gate = PlanGate(parse_plans(doc))
    for _ in range(30):
        gate.enforcer.record("acme", time.time(), tokens=100)
    app = web.Application()
    app[GATEWAY_KEY] = SimpleNamespace(plans=gate, deployments={}, groups={})
    server = ServerThread(seeded.metering, app=app).start()
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = ctx.new_page()
        _login(page, server.url, seeded.admin_key)
        page.goto(f"{server.url}/dashboard/plans")
        _loaded(page)
        assert page.get_attribute("body", "data-loaded") != "error", page.inner_text("#status")
        names = [c.get_attribute("data-plan") for c in page.locator(".plan-card").all()]
        assert set(names) >= {"pro-flat", "payg", "enterprise", "cost-plus", "free"}
        free = page.inner_text('.plan-card[data-plan="free"]')
        assert "50 requests per 5h → block" in free and "200,000 tokens per 1w" in free
        enterprise = page.inner_text('.plan-card[data-plan="enterprise"]')
        assert "Minimum" in enterprise and "$500.00" in enterprise
        row = page.locator("table tbody tr", has_text="acme").first.inner_text()
        assert "free" in row and "30 of 50" in row
        assert "{" not in page.inner_text("main")  # no raw JSON anywhere
        page.screenshot(path=str(ARTIFACTS / "admin-plans-pricing.png"), full_page=True)
        r = page.request.get(f"{server.url}/dashboard/api/pricing-plans",
                             headers={"Authorization": f"Bearer {seeded.secrets['acme']}"})
        assert r.status == 403
    finally:
        ctx.close()
        server.stop()


def test_deployments_page_shows_committed_first_against_cost_routing(tmp_path, browser):
    """The costs API's committed-first figures (tokenomy route savings) as cards on the Deployments page."""
    from decimal import Decimal

    from tokenomy.allocation.recorder import CapacityRecorder
    from tokenomy.allocation.savings import committed_savings
    from tokenomy.allocation.spec import CostSpec
    from tokenomy.allocation.store import CapacityStore
    from tokenomy.metering import Metering, UsageEvent

    from .conftest import ADMIN_KEY

    t0 = 1_800_000_000  # a fixed window: the page is asked for it
    m = Metering.open(tmp_path / "data", admin_key=ADMIN_KEY)
    m.create_tenant("acme", exist_ok=True)
    store = CapacityStore(path=tmp_path / "data" / "ledger.db")
    own = CostSpec("own@h100", "llama-3-8b", "h100", 1, "bf16", "us-va", 2048, None, 1.0, ownership=True)
    CapacityRecorder(store, [own], interval_s=60, clock=lambda: t0 + 0.5).tick()
    cf = {"deployment": "api", "usd_per_mtok": ["0.02", "0.02", "0.04", "0.04"], "committed": ["own@h100"]}
    for i, dep in enumerate(["own@h100"] * 12 + ["api"] * 5):
        assert m.commit_blocking(UsageEvent(
            id=f"r{i}", ts=t0 + 10 + i, tenant="acme", key_id="k", model="llama", deployment=dep, input_tokens=100,
            cached_input_tokens=0, output_tokens=500, reasoning_tokens=0, cost_usd=Decimal("0.000022"),
            price_usd=Decimal("0.000022"), energy_joules=1.0, ttft_ms=10.0, latency_ms=8000.0, status="ok",
            extra={"policy": "committed-first", "counterfactual": cf}))
    want = committed_savings(store, t0, t0 + 60)
    store.close()
    server = ServerThread(m).start()
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        _login(page, server.url, ADMIN_KEY)
        page.goto(f"{server.url}/dashboard/deployments?since={t0}&until={t0 + 60}")
        _loaded(page)
        assert page.get_attribute("body", "data-loaded") != "error", page.inner_text("#status")
        panel = page.locator("section", has_text="committed-first vs cost routing (same traffic)")
        text = panel.inner_text()
        assert "12 spilled of 17" not in text and "5 spilled of 17" in text  # 12 on the owned H100
        assert "Cost routing" in text and "Saved" in text and "Real serving cost" in page.inner_text("main")
        assert want["requests"] == 17 and want["spilled"] == 5 and not errors
    finally:
        ctx.close()
        server.stop()
        m.shutdown()


def test_spend_by_user_and_tag_with_filters_and_drill_down(server, seeded, browser):
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    _login(page, server.url, seeded.admin_key)
    page.goto(f"{server.url}/dashboard/spend?range=all")
    _loaded(page)
    users = {e.extra["user"] for e in seeded.events if e.extra.get("user")}
    shown = set(page.locator("a.drill").evaluate_all("els => els.map(e => e.dataset.value)"))
    assert shown == users and _points(page, f"Billed by end user (top {len(users)})") == len(users)
    # a user's row drills down to its spend by tag
    with page.expect_response(lambda r: "api/spend" in r.url and "user=user-3" in r.url and "by=tag" in r.url) as resp:
        page.click('a.drill[data-value="user-3"]')
    tags = {r["tag"] for r in resp.value.json()["tables"]["spend"]}
    _loaded(page)
    page.wait_for_function("document.querySelectorAll('a.drill').length > 0 && "
                           "[...document.querySelectorAll('a.drill')].every(a => a.dataset.value.includes('='))")
    assert set(page.locator("a.drill").evaluate_all("els => els.map(e => e.dataset.value)")) == tags
    assert "user=user-3" in page.url and page.input_value("#spend-user") == "user-3"
    page.screenshot(path=str(ARTIFACTS / "spend-user-by-tag.png"), full_page=True)
    # typed filters: only the search feature's requests, by user, names containing "user-1"
    page.fill("#spend-user", "")
    page.select_option("#spend-by", "user")
    page.fill("#spend-tag", "feature=search")
    page.fill("#spend-q", "user-1")
    with page.expect_response(lambda r: "api/spend" in r.url and "tag=feature%3Dsearch" in r.url) as resp:
        page.click('#spend-filters button[type="submit"]')
    body = resp.value.json()
    assert [r["user"] for r in body["tables"]["spend"]] == ["user-1"]
    want = sum(1 for e in seeded.events if e.extra.get("user") == "user-1"
               and (e.extra.get("tags") or {}).get("feature") == "search")
    assert body["tables"]["spend"][0]["requests"] == want > 0
    # a bad filter is the API's message on the page, not a blank one
    page.fill("#spend-tag", "no-equals")
    page.click('#spend-filters button[type="submit"]')
    page.wait_for_selector("#status .error")
    assert "tag must be key=value" in page.inner_text("#status")
    ctx.close()
