"""Price classes (issue 17): dated, sourced prices per class; a class never mixed with another;
a named provider never priced at another provider's rate; one error naming what is missing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tokenomy.catalog import build_catalog, load_catalog
from tokenomy.catalog.loader import DEFAULT_FILES
from tokenomy.catalog.price_classes import PRICE_CLASSES, class_price, require_class_prices
from tokenomy.errors import TokenomyError

MELANGE = ("l4", "a10g", "a100-80g", "h100")


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def _accs(cat, ids=MELANGE):
    return [cat.accelerator(a) for a in ids]


def test_every_shipped_price_names_its_class_provider_date_and_source(cat):
    classes = set()
    for acc in cat.accelerators.values():
        for p in acc.rental_prices:
            assert p.price_class in (*PRICE_CLASSES, "none")
            assert p.provider and p.source and len(p.date) >= 7
            if p.price_class == "hyperscaler-on-demand":
                assert p.provider.split("-")[0] in ("aws", "gcp", "azure") and p.kind == "on-demand"
            if p.price_class == "spot":
                assert p.kind == "spot"
            classes.add(p.price_class)
    assert {"hyperscaler-on-demand", "neocloud-on-demand", "spot", "reserved-1y", "none"} <= classes
    # the default plan's accelerators all have a hyperscaler on-demand and a spot price
    hyper = require_class_prices(_accs(cat), "hyperscaler-on-demand")
    assert {k: (v.provider, v.usd_per_hour) for k, v in hyper.items()} == {
        "l4": ("gcp", 0.7068), "a10g": ("aws", 1.006), "a100-80g": ("aws", 3.4309), "h100": ("aws", 6.88)}
    spot = require_class_prices(_accs(cat), "spot")
    assert {k: v.usd_per_hour for k, v in spot.items()} == {"l4": 0.349, "a10g": 0.4246, "a100-80g": 1.2917,
                                                              "h100": 2.2036}
    assert all(spot[a].usd_per_hour < hyper[a].usd_per_hour for a in MELANGE)


def test_a_class_without_a_price_is_one_error_naming_exactly_the_missing_accelerators(cat):
    with pytest.raises(TokenomyError) as exc:
        require_class_prices(_accs(cat), "neocloud-on-demand")
    msg = str(exc.value)
    assert msg.startswith("no neocloud-on-demand price in the catalog for l4 (")  # only l4: a10g has lambda's A10
    for other in ("a10g,", "a100-80g,", "h100,"):
        assert f"for {other}" not in msg
    with pytest.raises(TokenomyError, match=r"no reserved-3y price in the catalog for l4, a10g, a100-80g, h100 \("):
        require_class_prices(_accs(cat), "reserved-3y")
    assert "\n" not in msg


def test_a_named_provider_is_never_priced_at_another_providers_rate(cat):
    a100 = cat.accelerator("a100-80g")
    assert class_price(a100, "hyperscaler-on-demand", "aws").usd_per_hour == pytest.approx(27.44705 / 8, abs=1e-4)
    assert class_price(a100, "hyperscaler-on-demand", "azure").usd_per_hour == pytest.approx(3.673)
    assert class_price(a100, "neocloud-on-demand", "lambda").usd_per_hour == 1.79
    with pytest.raises(TokenomyError, match=r"no aws neocloud-on-demand price in the catalog for a100-80g"):
        class_price(a100, "neocloud-on-demand", "aws")
    with pytest.raises(TokenomyError, match=r"no lambda hyperscaler-on-demand price in the catalog for l4, a10g, a100-80g, h100"):
        require_class_prices(_accs(cat), "hyperscaler-on-demand", "lambda")


def test_user_file_prices_get_a_derived_class_and_both_reserved_terms_are_kept(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("""
accelerators:
  h100:
    rental_prices:
      - {provider: aws, usd_per_hour: 4.1, kind: reserved, price_class: reserved-1y, source: quote, date: "2026-12"}
      - {provider: aws, usd_per_hour: 3.2, kind: reserved, price_class: reserved-3y, source: quote, date: "2026-12"}
      - {provider: my-colo, usd_per_hour: 1.85, kind: reserved, source: quote, date: "2026-12"}
      - {provider: azure-eu, usd_per_hour: 9.5, source: quote, date: "2026-12"}
      - {provider: vast, usd_per_hour: 1.5, kind: spot, source: quote, date: "2026-12"}
""")
    h100 = build_catalog([*DEFAULT_FILES, f]).accelerator("h100")
    got = {(p.provider, p.price_class): p.usd_per_hour for p in h100.rental_prices}
    assert got[("aws", "reserved-1y")] == 4.1 and got[("aws", "reserved-3y")] == 3.2  # same provider+kind: both kept
    assert got[("my-colo", "none")] == 1.85  # a reserved term not named: in no class
    assert got[("azure-eu", "hyperscaler-on-demand")] == 9.5
    assert got[("vast", "spot")] == 1.5
    assert got[("aws", "hyperscaler-on-demand")] == 6.88  # shipped price untouched
    assert class_price(h100, "reserved-3y").usd_per_hour == 3.2
    assert class_price(h100, "spot").usd_per_hour == 1.5  # cheapest spot of any provider in the class
    assert class_price(h100, "spot", "aws").usd_per_hour == pytest.approx(2.2036)


def test_plan_prices_every_candidate_in_the_class_and_provider(cat):
    from tokenomy.fleet.milp import PlanRequest, plan_rents

    base = dict(model=cat.model("llama-2-7b"), accelerators=tuple(_accs(cat)), slo_tpot_ms=120.0)
    assert plan_rents(PlanRequest(**base)) == {"l4": 0.7068, "a10g": 1.006, "a100-80g": 3.4309, "h100": 6.88}
    assert plan_rents(PlanRequest(**base, provider="aws")) == {"l4": 0.8048, "a10g": 1.006, "a100-80g": 3.4309,
                                                               "h100": 6.88}
    assert plan_rents(PlanRequest(**base, price_class="spot"))["h100"] == pytest.approx(2.2036)
    # an override is explicit: the accelerator it prices needs no catalog price in the class
    got = plan_rents(PlanRequest(**base, price_class="neocloud-on-demand", usd_per_hour_overrides={"l4": 0.5}))
    assert got == {"l4": 0.5, "a10g": 1.29, "a100-80g": 1.79, "h100": 2.69}
    with pytest.raises(TokenomyError, match=r"no gcp hyperscaler-on-demand price in the catalog for a10g, a100-80g \("):
        plan_rents(PlanRequest(**base, provider="gcp"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tokenomy", *args], capture_output=True, text=True, timeout=300)


def test_cli_price_class_errors_are_one_line_exit_2_and_prices_follow_the_class():
    r = _cli("plan", "--trace", "code", "--model", "llama-2-7b", "--slo-tpot-ms", "120",
             "--price-class", "neocloud-on-demand", "--no-verify")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "no neocloud-on-demand price in the catalog for l4 (" in r.stderr and "Traceback" not in r.stderr
    r = _cli("simulate", "--trace", "code", "--accelerator", "l4", "--provider", "lambda", "--limit", "5")
    assert r.returncode == 2 and "unknown rental provider for l4 'lambda'; known (2): aws, gcp" in r.stderr
    r = _cli("cost", "--model", "llama-3-8b", "--accelerator", "h100", "--price-class", "bogus")
    assert r.returncode == 2 and "unknown price class 'bogus'" in r.stderr
    r = _cli("cost", "--model", "llama-3-8b", "--accelerator", "h100", "--price-class", "spot", "--json")
    out = json.loads(r.stdout)
    assert (out["price_class"], out["price_provider"], out["usd_per_hour_accelerators"]) == ("spot", "aws", 2.2036)
    r = _cli("simulate", "--trace", "code", "--accelerator", "a100-80g", "--provider", "aws", "--limit", "20",
             "--model", "llama-2-7b", "--json")
    dep = json.loads(r.stdout)["deployment"]
    assert dep["replica_usd_per_hour"] == pytest.approx(3.4309) and dep["price_class"] == "hyperscaler-on-demand"
