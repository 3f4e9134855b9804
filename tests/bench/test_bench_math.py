"""Pure arithmetic: vLLM-style metrics, goodput, pricing, contract checks, judge score parsing."""

from __future__ import annotations

import pytest

from tokenomy.bench.client import RequestResult
from tokenomy.bench.judge import parse_score
from tokenomy.bench.metrics import Slo, compute_metrics
from tokenomy.bench.pricing import list_pricing, price_map_pricing, replica_usd_per_hour, self_hosted_pricing
from tokenomy.bench.spec import parse_price
from tokenomy.bench.terms import Measured, ProviderTerms, check_terms, load_terms
from tokenomy.catalog import load_catalog
from tokenomy.catalog.prices import default_price_map
from tokenomy.errors import ConfigError


def _ok(i: int, ttft: float, gaps: list[float], prompt: int = 100) -> RequestResult:
    r = RequestResult(index=i, prompt_tokens=prompt, max_tokens=len(gaps) + 1)
    r.ok, r.ttft_s, r.itl_s = True, ttft, gaps
    r.e2e_s = ttft + sum(gaps)
    r.output_tokens = len(gaps) + 1
    r.usage_reported = True
    return r


def _err(i: int, kind: str) -> RequestResult:
    r = RequestResult(index=i, prompt_tokens=100, max_tokens=4)
    r.error_kind, r.error = kind, f"{kind} happened"
    return r


def sample() -> list[RequestResult]:
    return [
        _ok(0, 0.100, [0.010, 0.010, 0.010, 0.010]),  # TPOT 10 ms
        _ok(1, 0.200, [0.020, 0.020, 0.020, 0.020]),  # TPOT 20 ms
        _ok(2, 0.300, [0.030, 0.030]),  # TPOT 30 ms, 3 tokens
        _ok(3, 0.050, []),  # one token: no TPOT, no ITL
        _err(4, "http_5xx"),
        _err(5, "connect"),
    ]


def test_metrics_follow_vllm_definitions():
    m = compute_metrics(sample(), duration_s=2.0)
    assert m.requests == 6 and m.requests_ok == 4
    assert m.errors["http_5xx"] == 1 and m.errors["connect"] == 1 and m.errors["timeout"] == 0
    assert m.error_examples == {"http_5xx": "http_5xx happened", "connect": "connect happened"}
    assert m.output_tokens == 5 + 5 + 3 + 1 and m.input_tokens == 400
    assert m.output_tokens_per_s == pytest.approx(14 / 2.0) and m.requests_per_s == pytest.approx(2.0)
    assert m.availability == pytest.approx(4 / 6)
    # TPOT = (e2e - ttft) / (out - 1): 10, 20, 30 ms (the one-token request has none)
    assert m.tpot_ms["mean"] == pytest.approx(20.0) and m.tpot_ms["p50"] == pytest.approx(20.0)
    assert m.tpot_ms["p90"] == pytest.approx(28.0)  # numpy linear: 20 + 0.8 * 10
    # ITL pools every gap: 4x10, 4x20, 2x30 ms
    assert m.itl_ms["mean"] == pytest.approx((40 + 80 + 60) / 10) and m.itl_ms["p50"] == pytest.approx(20.0)
    assert m.ttft_ms["p50"] == pytest.approx(150.0)  # of 50, 100, 200, 300
    assert m.e2e_ms["p99"] == pytest.approx(float(__import__("numpy").percentile([140, 280, 360, 50], 99)))
    assert m.goodput_rps == pytest.approx(m.requests_per_s) and m.slo_attainment is None  # no SLO: all ok count
    assert m.prefill_seconds_sum == pytest.approx(0.65) and m.decode_seconds_sum == pytest.approx(0.04 + 0.08 + 0.06)


def test_goodput_counts_requests_meeting_both_slos():
    m = compute_metrics(sample(), duration_s=2.0, slo=Slo(ttft_ms=250, tpot_ms=25))
    # request 0 (100 ms, 10 ms) and 1 (200, 20) and 3 (50 ms, no TPOT) meet both; 2 misses TTFT and TPOT
    assert m.goodput_rps == pytest.approx(3 / 2.0)
    assert m.slo_attainment == pytest.approx(3 / 6)
    assert compute_metrics(sample(), 2.0, Slo(tpot_ms=15)).goodput_rps == pytest.approx(2 / 2.0)


def test_list_and_price_map_pricing_per_1k_requests():
    m = compute_metrics(sample(), duration_s=2.0)  # 100 input and 3.5 output tokens per ok request
    p = list_pricing(parse_price("in:0.15/out:0.60"), 0.15, 0.60, m)
    assert p.usd_per_1k_requests == pytest.approx(1000 * (100 * 0.15 + 3.5 * 0.60) / 1e6)
    mini = default_price_map().get("gpt-4o-mini")
    pm = price_map_pricing(parse_price("gpt-4o-mini"), mini, m)
    assert pm.usd_per_mtok_input == pytest.approx(mini.tiers["standard"].input * 1e6)
    assert pm.usd_per_mtok_output == pytest.approx(mini.tiers["standard"].output * 1e6)
    assert pm.usd_per_mtok_input == pytest.approx(0.15) and pm.usd_per_mtok_output == pytest.approx(0.60)


def test_self_hosted_pricing_splits_the_bill_by_phase_time():
    m = compute_metrics(sample(), duration_s=3600.0)  # one hour of benchmark
    p = self_hosted_pricing(parse_price("h100x1@us-va"), 3.0, 1.0, m)
    bill = 4.0  # $4/h for one hour
    share = 0.65 / (0.65 + 0.18)
    assert p.usd_per_hour == 4.0 and p.share_prefill == pytest.approx(share)
    assert p.usd_per_mtok_input == pytest.approx(bill * share / 400 * 1e6)
    assert p.usd_per_mtok_output == pytest.approx(bill * (1 - share) / 14 * 1e6)
    assert p.usd_per_1k_requests == pytest.approx(bill / 4 * 1000)
    # the two bills add back up to the hour's cost
    assert (p.usd_per_mtok_input * 400 + p.usd_per_mtok_output * 14) / 1e6 == pytest.approx(bill)


def test_replica_hourly_cost_from_catalog():
    cat = load_catalog()
    h100, site = cat.accelerator("h100"), cat.site("us-va")
    devices, energy = replica_usd_per_hour(h100, site, 2, 2.5)
    assert devices == 5.0
    assert energy == pytest.approx(2 * h100.tdp_watts / 1000 * site.pue * site.usd_per_kwh)


def test_contract_checks():
    terms = ProviderTerms.model_validate({"max_usd_per_mtok_input": 0.2, "max_usd_per_mtok_output": 0.5,
                                          "ttft_ms": {"p": 90, "max": 250}, "tpot_ms": {"percentile": 50, "max": 15},
                                          "availability_pct": 99})
    measured = Measured(0.15, 0.60, [50, 100, 200, 300], [10, 20, 30], 4 / 6, 6)
    out = check_terms(terms, measured)
    c = out["checks"]
    assert c["price_input"]["ok"] is True and c["price_output"]["ok"] is False
    assert c["ttft"]["measured_ms"] == pytest.approx(270.0) and c["ttft"]["ok"] is False
    assert c["tpot"]["measured_ms"] == pytest.approx(20.0) and c["tpot"]["ok"] is False
    assert c["availability"]["measured_pct"] == pytest.approx(66.6667, rel=1e-4) and c["availability"]["ok"] is False
    assert out["compliant"] is False
    good = check_terms(ProviderTerms(max_usd_per_mtok_input=0.2, availability_pct=50), measured)
    assert good["compliant"] is True
    nodata = check_terms(ProviderTerms.model_validate({"ttft_ms": {"max": 1}}), Measured(None, None, [], [], None, 0))
    assert nodata["checks"]["ttft"]["ok"] is None and nodata["compliant"] is False


def test_terms_file_errors(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("fast:\n  ttft_ms: {max: -1}\n")
    with pytest.raises(ConfigError, match=r"fast\.ttft_ms\.max"):
        load_terms(bad)
    bad.write_text("fast:\n  max_usd: 1\n")
    with pytest.raises(ConfigError, match="max_usd"):
        load_terms(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text("providers:\n  a: {availability_pct: 99.9}\n  b: {}\n")
    assert set(load_terms(ok)) == {"a", "b"}


@pytest.mark.parametrize("reply, score", [
    ("Clear and correct.\nRating: 8", 8.0),
    ("**Rating:** 7.5", 7.5),
    ("I'd give it 6/10.", 6.0),
    ("9", 9.0),
    ("Rating: 11", None),
    ("the of model cost energy", None),  # what the emulator answers
    ("", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_prompts_have_the_requested_token_count():
    from tokenomy.bench.prompts import make_messages
    from tokenomy.tokens import count_chat_tokens

    for tokens in (16, 100, 512, 3000):
        msgs = [make_messages(tokens, i, seed=1) for i in range(3)]
        assert all(count_chat_tokens(m) == tokens for m in msgs)
        assert len({m[0]["content"] for m in msgs}) == 3  # distinct: no shared cached prefix across requests
    real = make_messages(40, 0, seed_text="Explain why the sky is blue.")
    assert count_chat_tokens(real) == 40 and "Explain why the sky is blue." in real[0]["content"]


def test_ledger_paging_yields_every_event_once(tmp_path):
    import asyncio
    from decimal import Decimal

    from tokenomy.bench.ledger import iter_events, stats_from_events
    from tokenomy.metering import Metering, UsageEvent

    m = Metering.open(tmp_path, admin_key="tk-admin-x")

    def ev(i: int, ts: float, **kw) -> UsageEvent:
        base = dict(id=f"e{i}", ts=ts, tenant="t", key_id="k", model="m", deployment="d", input_tokens=100 + i,
                    cached_input_tokens=0, output_tokens=10 + (i % 7), reasoning_tokens=0,
                    cost_usd=Decimal(100 + i) * Decimal("0.5e-6") + Decimal(10 + i % 7) * Decimal("2e-6"),
                    price_usd=Decimal(0), energy_joules=0.0, ttft_ms=50.0, latency_ms=50.0 + 9 * (10 + i % 7),
                    status="ok")
        return UsageEvent(**{**base, **kw})

    async def fill() -> None:
        await m.start()
        for i in range(23):  # timestamps tie in threes across page edges
            await m.commit(ev(i, 1000.0 + i // 3))
        await m.commit(ev(99, 1001.0, deployment="x", status="upstream_error", output_tokens=0,
                          cost_usd=Decimal(0), ttft_ms=None))
        await m.commit(ev(98, 1002.0, deployment="x", extra={"attempts": [{"deployment": "d", "error": "timeout"}]}))

    asyncio.run(fill())
    for page in (1, 2, 3, 4, 7, 100):
        ids = [e.id for e in iter_events(m, None, None, page=page)]
        assert len(ids) == len(set(ids)) == 25, page
    stats = stats_from_events(iter_events(m, 1000.0, None, page=5))
    m.shutdown()
    d, x = stats["d"], stats["x"]
    assert d.successes == 23 and d.failures == 1 and d.availability == pytest.approx(23 / 24)
    assert x.successes == 1 and x.failures == 1
    usd_in, usd_out, fit = d.price_fit()
    assert fit == "fit" and usd_in == pytest.approx(0.5) and usd_out == pytest.approx(2.0)
    assert sorted(d.tpot_ms) == pytest.approx(sorted(9.0 * o / (o - 1) for o in (10 + i % 7 for i in range(23))))
