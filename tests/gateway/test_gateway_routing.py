"""Routing policies: per-request expected cost, latency, cost-under-slo, weighted."""

from __future__ import annotations

from gw_helpers import Stub, gateway, list_dep, stubs
from tokenomy.config import parse_config
from tokenomy.gateway.pricing import resolve_price
from tokenomy.gateway.routing import DeploymentRuntime, build_groups

LONG = [{"role": "user", "content": "lorem ipsum dolor sit amet " * 400}]  # ~2000 tokens
SHORT = [{"role": "user", "content": "hi"}]


def _crossed(a: Stub, b: Stub, **group) -> dict:
    # in_cheap: cheap input, dear output; out_cheap: the reverse. Sum of list prices is equal.
    return {"deployments": [list_dep("in_cheap", a.base_url, 1.0, 20.0),
                            list_dep("out_cheap", b.base_url, 20.0, 1.0)],
            "model_groups": {"m": {"deployments": ["in_cheap", "out_cheap"], "policy": "cost", **group}}}


async def test_cost_policy_uses_this_requests_tokens(data_dir):
    async with stubs(Stub(out_tokens=5), Stub(out_tokens=5)) as (a, b), gateway(_crossed(a, b), data_dir) as g:
        key = g.key()
        # long input, short output -> the deployment with the cheap input wins
        st, h, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": LONG, "max_tokens": 5}, key)
        assert st == 200 and h["x-tokenomy-deployment"] == "in_cheap"
        # short input, long output -> the one with cheap output
        st, h, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": SHORT, "max_tokens": 500}, key)
        assert st == 200 and h["x-tokenomy-deployment"] == "out_cheap"
        assert (a.calls, b.calls) == (1, 1)


def _runtime(cfg: dict):
    gc = parse_config(cfg)
    deps = {d.name: DeploymentRuntime(d, resolve_price(d), gc) for d in gc.deployments}
    return deps, build_groups(gc, deps)


def test_predicted_output_follows_observed_lengths():
    deps, groups = _runtime(_crossed(Stub(base_url="http://x/v1"), Stub(base_url="http://y/v1")))
    g = groups["m"]
    # No max_tokens: the prior (256) predicts a long answer -> output price dominates.
    assert g.rank(50, None).order[0].name == "out_cheap"
    for _ in range(200):
        g.observe_output(2)  # this group's answers turn out tiny
    d = g.rank(50, None)
    assert d.predicted_output_tokens < 3
    assert d.order[0].name == "in_cheap"
    # max_tokens caps the prediction
    assert groups["m"].rank(50, 1).predicted_output_tokens == 1


def test_cost_uses_observed_cache_discount():
    cfg = {"deployments": [list_dep("a", "http://a", 1.0, 1.0, price_extra={"cached_input": 0.1}),
                           list_dep("b", "http://b", 0.5, 1.0)],
           "model_groups": {"m": {"deployments": ["a", "b"]}}}
    deps, groups = _runtime(cfg)
    assert groups["m"].rank(1000, 1).order[0].name == "b"
    deps["a"].cached_frac.value = 0.9  # a's prefix cache hits 90% of input tokens
    assert groups["m"].rank(1000, 1).order[0].name == "a"


def test_latency_and_slo_policies():
    cfg = {"deployments": [list_dep("cheap", "http://a", 1.0, 1.0), list_dep("fast", "http://b", 5.0, 5.0)],
           "model_groups": {
               "lat": {"deployments": ["cheap", "fast"], "policy": "latency"},
               "slo": {"deployments": ["cheap", "fast"], "policy": "cost-under-slo",
                       "slo": {"ttft_ms": 200, "tpot_ms": 50}, "max_in_flight": {"cheap": 2}}}}
    deps, groups = _runtime(cfg)
    cheap, fast = deps["cheap"], deps["fast"]
    cheap.ttft_ms.value, cheap.tpot_ms.value = 150.0, 40.0
    fast.ttft_ms.value, fast.tpot_ms.value = 50.0, 10.0
    assert groups["lat"].rank(10, 100).order[0] is fast
    d = groups["slo"].rank(10, 100)
    assert d.order[0] is cheap and d.slo_met  # both meet the SLO: the cheaper one
    cheap.tpot_ms.value = 80.0  # cheap now misses the TPOT target
    d = groups["slo"].rank(10, 100)
    assert d.order[0] is fast and d.slo_met
    cheap.tpot_ms.value = 40.0
    cheap.in_flight = 2  # at its max_in_flight
    assert groups["slo"].rank(10, 100).order[0] is fast
    cheap.in_flight = 0
    cheap.ttft_ms.value, fast.ttft_ms.value = 900.0, 300.0  # nobody meets: least bad, flagged
    d = groups["slo"].rank(10, 100)
    assert d.order[0] is fast and d.slo_met is False


def test_weighted_policy_splits_by_weight():
    cfg = {"deployments": [list_dep("a", "http://a", 1.0, 1.0), list_dep("b", "http://b", 1.0, 1.0)],
           "model_groups": {"w": {"deployments": ["a", "b"], "policy": "weighted", "weights": {"a": 3, "b": 1}}}}
    _, groups = _runtime(cfg)
    picks = [groups["w"].rank(10, 10).order[0].name for _ in range(4000)]
    share = picks.count("a") / len(picks)
    assert 0.72 < share < 0.78


async def test_slo_unmet_header(data_dir):
    async with stubs(Stub(), Stub()) as (a, b):
        cfg = {"deployments": [list_dep("a", a.base_url, 1.0, 1.0), list_dep("b", b.base_url, 2.0, 2.0)],
               "model_groups": {"m": {"deployments": ["a", "b"], "policy": "cost-under-slo",
                                      "slo": {"ttft_ms": 0.001}}}}
        async with gateway(cfg, data_dir) as g:
            key = g.key()
            body = {"model": "m", "messages": SHORT, "stream": True}
            st, h, _ = await g.post("/v1/chat/completions", body, key)  # unobserved: assumed to meet
            assert st == 200 and "x-tokenomy-slo" not in h
            await g.post("/v1/chat/completions", body, key)
            st, h, _ = await g.post("/v1/chat/completions", body, key)  # both observed > 0.001 ms TTFT
            assert st == 200 and h["x-tokenomy-slo"].startswith("unmet")


def test_perf_model_priors_for_self_hosted_deployments():
    def self_hosted(name: str, acc: str) -> dict:
        return {"name": name, "base_url": f"http://{name}/v1",
                "pricing": {"self_hosted": {"model": "llama-3-8b", "accelerator": acc}}}

    cfg = {"deployments": [self_hosted("l4", "l4"), self_hosted("h100", "h100"), list_dep("api", "http://c/v1", 0.1, 0.4)],
        "model_groups": {"lat": {"deployments": ["l4", "h100"], "policy": "latency"},
                         "slo": {"deployments": ["l4", "h100"], "policy": "cost-under-slo", "slo": {"tpot_ms": 30}}}}
    from tokenomy.gateway.proxy import Gateway

    gw = Gateway(parse_config(cfg), metering=None)
    l4, h100, api = gw.deployments["l4"], gw.deployments["h100"], gw.deployments["api"]
    # the perf model: an 8B model decodes several times faster on H100 than on L4
    assert h100.tpot_ms.value * 3 < l4.tpot_ms.value and h100.ttft_ms.value < l4.ttft_ms.value
    assert api.ttft_ms.value is None  # an API provider: nothing known until observed
    assert gw.groups["lat"].rank(100, 100).order[0] is h100
    assert l4.tpot_ms.value > 30 > h100.tpot_ms.value
    assert gw.groups["slo"].rank(100, 100).order[0] is h100


async def test_latency_policy_learns_from_observed_streams(data_dir):
    async with stubs(Stub(delay_s=0.2), Stub()) as (slow, fast):
        cfg = {"deployments": [list_dep("slow", slow.base_url, 1.0, 1.0), list_dep("fast", fast.base_url, 1.0, 1.0)],
               "model_groups": {"m": {"deployments": ["slow", "fast"], "policy": "latency"}}}
        async with gateway(cfg, data_dir) as g:
            key = g.key()
            chosen = []
            for _ in range(4):
                st, h, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": SHORT, "stream": True}, key)
                chosen.append(h["x-tokenomy-deployment"])
            # both unobserved at first (each is explored once), then the observed TTFT decides
            assert sorted(chosen[:2]) == ["fast", "slow"] and chosen[2:] == ["fast", "fast"]
            assert g.gw.deployments["slow"].ttft_ms.value >= 200 > g.gw.deployments["fast"].ttft_ms.value
