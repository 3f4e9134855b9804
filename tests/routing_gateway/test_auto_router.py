"""`model: auto` with the quality router: decision, headers, ledger extra.route, calibration, config errors."""

from __future__ import annotations

import pytest

from gw_helpers import Stub, gateway, stubs
from rg_helpers import HARD, TRIVIAL, chat, two_groups
from tokenomy.config import default_config, parse_config
from tokenomy.errors import ConfigError
from tokenomy.routing.quality.registry import load_router


def _between(router) -> tuple[float, str, str]:
    """A raw threshold between the router's own scores of the two prompts -> (t, strong prompt, weak prompt)."""
    s_hard, s_trivial = router.strong_win_rate(HARD), router.strong_win_rate(TRIVIAL)
    assert abs(s_hard - s_trivial) > 1e-3, "the router must score the two prompts differently"
    hi, lo = (HARD, TRIVIAL) if s_hard > s_trivial else (TRIVIAL, HARD)
    return (s_hard + s_trivial) / 2, hi, lo


async def test_auto_routes_by_router_score_headers_and_ledger(data_dir):
    t, strong_prompt, weak_prompt = _between(load_router("default"))
    async with stubs(Stub(out_tokens=5), Stub(out_tokens=5)) as (a, b), \
            gateway(two_groups(a.base_url, b.base_url, router="default", threshold=t), data_dir) as g:
        key = g.key()
        st, h1, body = await g.post("/v1/chat/completions", chat(strong_prompt), key)
        assert st == 200, body
        assert h1["x-tokenomy-route-model"] == "strong" and h1["x-tokenomy-deployment"] == "strong@b"
        assert h1["x-tokenomy-route-reason"] == "strong"
        assert float(h1["x-tokenomy-route-threshold"]) == pytest.approx(t, abs=1e-4)
        st, h2, _ = await g.post("/v1/chat/completions", chat(weak_prompt), key)
        assert st == 200 and h2["x-tokenomy-route-model"] == "weak" and h2["x-tokenomy-deployment"] == "weak@a"
        assert float(h2["x-tokenomy-route-strong-win-rate"]) < t < float(h1["x-tokenomy-route-strong-win-rate"])
        assert (a.calls, b.calls) == (1, 1)
        assert a.bodies[0]["model"] == "weak@a"  # the chosen group's upstream model, not "auto"
        events = {e.id: e for e in g.metering.events("t1")}
        e1, e2 = events[h1["x-tokenomy-request-id"]], events[h2["x-tokenomy-request-id"]]
        assert e1.model == "strong" and e2.model == "weak"
        r1, r2 = e1.extra["route"], e2.extra["route"]
        assert r1["strong"] is True and r2["strong"] is False
        assert "predicted_quality" in r1 and r1["alias"] == "auto" and r1["threshold"] == pytest.approx(t)
        assert [c["model"] for c in r1["candidates"]] == ["weak", "strong"]
        assert r1["candidates"][1]["usd_per_mtok"] == ["10", "10", "30", "30"]
        # the expected costs recorded are this request's (strong is dearer)
        assert r1["candidates"][0]["expected_usd"] < r1["candidates"][1]["expected_usd"]
        st, _, models = await g.get("/v1/models", key)
        assert "auto" in [m["id"] for m in models["data"]]


async def test_streaming_auto_route(data_dir):
    t, strong_prompt, _ = _between(load_router("default"))
    async with stubs(Stub(out_tokens=4), Stub(out_tokens=4)) as (a, b), \
            gateway(two_groups(a.base_url, b.base_url, threshold=t), data_dir) as g:
        from rg_helpers import read_sse

        st, h, text = await read_sse(g, chat(strong_prompt, stream=True), g.key())
        assert st == 200 and h["x-tokenomy-route-model"] == "strong" and text.endswith("data: [DONE]\n\n")
        ev = g.metering.events("t1")[0]
        assert ev.extra["route"]["strong"] is True and ev.output_tokens == 4


def test_strong_share_calibration_hits_target():
    from tokenomy.gateway.routing import GroupRuntime, RouteRuntime, _calibration_prompts
    from tokenomy.gateway.proxy import Gateway
    from tokenomy.metering import Metering

    gw = Gateway(default_config(), Metering.in_memory(admin_key="tk-admin-x"))
    route = gw.routes["auto"]  # the default fleet: llama-3-8b -> llama-3-70b, strong_share 0.3
    assert route.kind == "strong_share" and [g.alias for g in route.candidates] == ["llama-3-8b", "llama-3-70b"]
    prompts = _calibration_prompts()
    assert len(prompts) == 300
    from tokenomy.routing.quality.threshold import startup_prompts

    # the live threshold starts at the start-up sample's 70 % quantile (users' requests, not benchmarks)
    start = startup_prompts()
    assert len(start) == 100 and set(start) < set(prompts)
    assert route.strong_share_on(start) == pytest.approx(0.3, abs=0.02)
    for share in (0.1, 0.5, 0.8):
        t = route.calibrate(prompts, share)
        scores = [route.router.strong_win_rate(p) for p in prompts]
        assert sum(s >= t for s in scores) / len(scores) == pytest.approx(share, abs=0.01)
    assert isinstance(route.candidates[0], GroupRuntime) and isinstance(route, RouteRuntime)


def test_mf_router_min_quality_and_calibration():
    """A multi-model router with router_models: min_quality picks the cheapest candidate predicted
    to reach it; strong_share calibrates the quality bar."""
    from tokenomy.gateway.proxy import Gateway
    from tokenomy.gateway.routing import _calibration_prompts
    from tokenomy.metering import Metering

    cfg = default_config().model_dump(by_alias=True, exclude_none=True)
    names = {"llama-3-8b": "llama-2-7b-chat-hf", "llama-3-70b": "llama-2-70b-chat-hf"}
    cfg["routing_groups"] = {"auto": {"candidates": ["llama-3-8b", "llama-3-70b"], "router": "mf",
                                      "router_models": names, "min_quality": 0.5},
                             "auto2": {"candidates": ["llama-3-8b", "llama-3-70b"], "router": "mf",
                                       "router_models": names, "strong_share": 0.4}}
    gw = Gateway(parse_config(cfg), Metering.in_memory(admin_key="tk-admin-x"))
    r = gw.routes["auto"]
    assert r.multi
    priced = r.priced(50, 100)
    for p in _calibration_prompts()[:40]:
        q = r.router.quality_of(p, list(names.values()))
        d, chosen = r.decide(p, priced)
        want = "llama-3-8b" if q[0] >= 0.5 else ("llama-3-70b" if q[1] >= 0.5 or q[1] > q[0] else "llama-3-8b")
        assert chosen.alias == want and d.predicted_quality == pytest.approx(q[0 if want == "llama-3-8b" else 1])
    assert gw.routes["auto2"].strong_share_on(_calibration_prompts()) == pytest.approx(0.4, abs=0.03)


async def test_max_usd_per_request_caps_the_choice(data_dir):
    cap = 0.005
    async with stubs(Stub(out_tokens=5), Stub(out_tokens=5)) as (a, b), \
            gateway(two_groups(a.base_url, b.base_url, max_usd_per_request=cap), data_dir) as g:
        key = g.key()
        st, h1, _ = await g.post("/v1/chat/completions", chat(HARD, max_tokens=10), key)
        assert st == 200 and h1["x-tokenomy-route-max-usd"] == "0.005"
        st, h2, _ = await g.post("/v1/chat/completions", chat(HARD * 10, max_tokens=10), key)
        events = {e.id: e.extra["route"] for e in g.metering.events("t1")}
        for h in (h1, h2):
            weak_usd, strong_usd = (c["expected_usd"] for c in events[h["x-tokenomy-request-id"]]["candidates"])
            assert weak_usd < cap
            # the best affordable candidate (the binary router ranks strong first when it fits)
            assert h["x-tokenomy-route-model"] == ("strong" if strong_usd <= cap else "weak")
        assert {h1["x-tokenomy-route-model"], h2["x-tokenomy-route-model"]} == {"strong", "weak"}


@pytest.mark.parametrize("routing, where", [
    ({"candidates": ["weak", "nope"], "threshold": 0.5}, "routing_groups.auto.candidates: unknown model group 'nope'"),
    ({"candidates": ["weak", "strong"]}, "routing_groups.auto: give exactly one of strong_share"),
    ({"candidates": ["weak", "strong"], "strong_share": 0.3, "threshold": 0.4}, "(got strong_share, threshold)"),
    ({"candidates": ["weak", "strong"], "strong_share": 1.5}, "routing_groups.auto.strong_share"),
    ({"candidates": ["weak"], "threshold": 0.5}, "routing_groups.auto.candidates"),
    ({"candidates": ["weak", "strong"], "policy": "cascade", "cascade": {"judge": {"model": "zz"}}},
     "routing_groups.auto.cascade.judge.model: unknown model group 'zz'"),
    ({"candidates": ["weak", "strong"], "policy": "cascade", "threshold": 0.5}, "cascade.threshold"),
])
def test_invalid_routing_config_names_the_field(routing, where):
    cfg = two_groups("http://a/v1", "http://b/v1")
    cfg["routing_groups"]["auto"] = routing
    with pytest.raises(ConfigError) as exc:
        parse_config(cfg)
    assert where in str(exc.value)


def test_unknown_router_and_verifier_are_config_errors():
    from tokenomy.gateway.proxy import Gateway
    from tokenomy.metering import Metering

    for routing, where in (({"router": "nosuch", "threshold": 0.5}, "routing_groups.auto.router"),
                           ({"policy": "cascade", "cascade": {"verifier": "nosuch"}}, "routing_groups.auto.cascade.verifier")):
        cfg = parse_config(two_groups("http://a/v1", "http://b/v1", **routing))
        with pytest.raises(ConfigError) as exc:
            Gateway(cfg, Metering.in_memory(admin_key="tk-admin-x"))
        assert where in str(exc.value)


def test_strong_share_follows_live_traffic_not_the_start_up_sample():
    """`strong_share: 0.3` means ~30 % of the traffic the alias actually serves goes strong: live prompts
    unlike the shipped start-up sample (here a coding/maths product: mostly hard requests) move the cut."""
    import json
    from pathlib import Path

    import numpy as np

    from tokenomy.gateway.proxy import Gateway
    from tokenomy.metering import Metering

    gw = Gateway(default_config(), Metering.in_memory(admin_key="tk-admin-x"))
    route = gw.routes["auto"]
    assert route.share is not None and route.threshold == pytest.approx(route.share.value)
    start = route.threshold
    data = Path(__file__).resolve().parents[1] / "routing" / "data" / "obvious_difficulty.jsonl"
    rows = [json.loads(x) for x in data.open(encoding="utf-8")]
    # three hard requests to one easy one
    prompts = [r["prompt"] for r in rows for _ in range(3 if r["difficulty"] == "hard" else 1)]
    scores = [route.router.strong_win_rate(p) for p in prompts]
    assert sum(s >= start for s in scores) / len(scores) > 0.6      # the start-up cut would send > 60 % strong
    priced = [(g, float(i + 1)) for i, g in enumerate(route.candidates)]
    order = [prompts[i] for i in np.random.default_rng(0).integers(0, len(prompts), 3000)]
    strong = [route.decide(p, priced)[1] is route.candidates[-1] for p in order]
    # (a cut cannot split prompts of equal score: 165 distinct prompts, several hard ones tied, measured 0.331)
    assert sum(strong[1500:]) / 1500 == pytest.approx(0.3, abs=0.035)
    assert route.threshold > start
    # strong_share_on measures without moving the live cut
    t = route.threshold
    route.strong_share_on(prompts)
    assert route.threshold == t
