"""$/Mtok and J/token: the formulas, prices, attribution and API prices."""

from __future__ import annotations

import pytest

from tokenomy.catalog import load_catalog
from tokenomy.catalog.prices import default_price_map
from tokenomy.economics import api_unit_cost, ownership_price, rental_price, self_hosted_unit_cost
from tokenomy.economics.compare import api_reference_rows, compare_deployments
from tokenomy.errors import TokenomyError, UnknownNameError
from tokenomy.perf import make_step_model


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def test_rental_price_is_the_cheapest_in_one_class_never_another_class_or_provider(cat):
    acc = cat.accelerator("h100")
    # default class: hyperscaler on-demand (aws $6.88 beats gcp $10.98; neocloud $2.69 is another class)
    hp = rental_price(acc)
    assert (hp.usd_per_hour, hp.provider, hp.price_class) == (6.88, "aws", "hyperscaler-on-demand")
    assert rental_price(acc, price_class="neocloud-on-demand").usd_per_hour == 2.69  # runpod
    assert rental_price(acc, "gcp", "spot").usd_per_hour == pytest.approx(6.571)
    assert rental_price(acc, "aws", "spot").usd_per_hour == pytest.approx(2.2036)
    with pytest.raises(TokenomyError, match=r"no lambda spot price in the catalog for h100"):
        rental_price(acc, "lambda", "spot")  # lambda lists on-demand only: never priced at aws's spot rate
    with pytest.raises(TokenomyError, match=r"no reserved-3y price in the catalog for h100"):
        rental_price(acc, price_class="reserved-3y")
    with pytest.raises(TokenomyError, match="unknown price class"):
        rental_price(acc, price_class="cheapest")
    with pytest.raises(UnknownNameError, match="rental provider"):
        rental_price(acc, "no-such-cloud")


def test_ownership_amortises_purchase_over_four_years_plus_hosting(cat):
    acc = cat.accelerator("h100")
    hp = ownership_price(acc)
    assert hp.usd_per_hour == pytest.approx(acc.purchase.usd / (4 * 8766) * 1.5)
    assert hp.basis == "ownership"


def test_self_hosted_cost_follows_the_documented_formula(cat):
    m, acc, site = cat.model("llama-3-8b"), cat.accelerator("h100"), cat.site("us-va")
    uc = self_hosted_unit_cost(m, acc, site, slo_tpot_ms=40, context=2048)
    sm = make_step_model(m, acc)
    t_dec = sm.step_seconds(decode_seqs=uc.max_batch, kv_tokens=uc.max_batch * 2048)
    assert t_dec <= 0.040
    tps_out = uc.max_batch / t_dec
    assert uc.tokens_per_s == pytest.approx(tps_out)
    w = sm.step_watts(decode_seqs=uc.max_batch, kv_tokens=uc.max_batch * 2048)
    usd_per_s = rental_price(acc).usd_per_hour / 3600 + w * site.pue * site.usd_per_kwh / 3.6e6
    assert uc.usd_per_mtok_output == pytest.approx(usd_per_s / tps_out * 1e6)
    assert uc.joules_per_token == pytest.approx(w / tps_out)
    t_pre, w_pre = sm.step_seconds_and_watts(prefill_tokens=2048)
    usd_per_s_in = rental_price(acc).usd_per_hour / 3600 + w_pre * site.pue * site.usd_per_kwh / 3.6e6
    assert uc.usd_per_mtok_input == pytest.approx(usd_per_s_in / (2048 / t_pre) * 1e6)
    assert uc.usd_per_mtok_input < uc.usd_per_mtok_output  # prefill is far cheaper per token
    assert uc.source == "profile" and uc.price_provider and uc.price_date


def test_time_share_attribution_adds_up_to_the_replica_bill(cat):
    m, acc, site = cat.model("llama-3-8b"), cat.accelerator("h100"), cat.site("us-va")
    uc = self_hosted_unit_cost(m, acc, site, slo_tpot_ms=40, include_energy=False)
    n_in, n_out = 3_000_000, 1_000_000
    bill = (n_in * uc.usd_per_mtok_input + n_out * uc.usd_per_mtok_output) / 1e6
    seconds = n_in / uc.tokens_per_s_input + n_out / uc.tokens_per_s
    assert bill == pytest.approx(uc.usd_per_hour_accelerators * seconds / 3600)


def test_lower_utilisation_costs_more_per_token(cat):
    m, acc, site = cat.model("llama-3-8b"), cat.accelerator("h100"), cat.site("us-va")
    full = self_hosted_unit_cost(m, acc, site, slo_tpot_ms=40)
    half = self_hosted_unit_cost(m, acc, site, slo_tpot_ms=40, utilization=0.5)
    assert 1.9 < half.usd_per_mtok_output / full.usd_per_mtok_output < 2.0  # idle power is cheaper than busy
    with pytest.raises(TokenomyError):
        self_hosted_unit_cost(m, acc, site, utilization=0)


def test_site_energy_price_and_pue_matter(cat):
    m, acc = cat.model("llama-3-8b"), cat.accelerator("h100")
    sites = sorted(cat.sites.values(), key=lambda s: s.usd_per_kwh * s.pue)
    cheap = self_hosted_unit_cost(m, acc, sites[0], slo_tpot_ms=40)
    dear = self_hosted_unit_cost(m, acc, sites[-1], slo_tpot_ms=40)
    assert cheap.usd_per_mtok_output < dear.usd_per_mtok_output
    assert cheap.joules_per_token == pytest.approx(dear.joules_per_token)  # device energy is site-independent
    assert cheap.usd_per_hour_energy < dear.usd_per_hour_energy


def test_ownership_vs_rental_and_infeasible_cases(cat):
    m, acc, site = cat.model("llama-3-70b"), cat.accelerator("h100"), cat.site("us-va")
    rent = self_hosted_unit_cost(m, acc, site, count=4, slo_tpot_ms=50)
    own = self_hosted_unit_cost(m, acc, site, count=4, slo_tpot_ms=50, ownership=True)
    assert own.price_basis == "ownership" and rent.price_basis == "rental"
    assert own.usd_per_hour_accelerators == pytest.approx(4 * ownership_price(acc).usd_per_hour)
    assert rent.max_batch == own.max_batch and rent.tpot_ms <= 50
    with pytest.raises(TokenomyError, match="does not fit"):
        self_hosted_unit_cost(m, acc, site, count=1)
    with pytest.raises(TokenomyError, match="below the batch-1"):
        self_hosted_unit_cost(m, acc, site, count=4, slo_tpot_ms=1)


def test_api_unit_cost_from_price_map():
    pm = default_price_map()
    uc = api_unit_cost(pm.get("gpt-4o-mini"))
    assert uc.usd_per_mtok_input == pytest.approx(0.15)
    assert uc.usd_per_mtok_output == pytest.approx(0.60)
    assert uc.source == "api" and uc.joules_per_token is None
    batch = api_unit_cost(pm.get("gpt-4o-mini"), tier="batch")
    assert batch.usd_per_mtok_output == pytest.approx(0.30)
    with pytest.raises(TokenomyError, match="tier"):
        api_unit_cost(pm.get("gpt-4o-mini"), tier="ultra")


def test_compare_sorted_cheapest_first_with_skips(cat):
    m = cat.model("llama-3-70b")
    rows, skipped = compare_deployments(m, cat.accelerators.values(), [cat.site("us-va")], slo_tpot_ms=50)
    assert rows, skipped
    outs = [r.usd_per_mtok_output for r in rows]
    assert outs == sorted(outs)
    by_acc = {r.accelerator: r for r in rows}
    assert by_acc["h100"].count >= 2  # 141 GB of weights need at least two H100s
    assert all(r.tpot_ms <= 50 for r in rows)
    assert {s["accelerator"] for s in skipped}.isdisjoint(by_acc)


def test_api_reference_rows_match_the_model_family(cat):
    rows = api_reference_rows(cat.model("llama-3-8b"))
    assert rows
    for r in rows:
        assert "8b" in r.model.lower() and "llama" in r.model.lower() and "70b" not in r.model.lower()
