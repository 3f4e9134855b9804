"""Policy prefix-affinity: replicas chosen by the prompt prefix they hold, under cost, SLO and a load bound."""

from __future__ import annotations

from gw_helpers import Stub, gateway, list_dep, stubs
from tokenomy.config import parse_config
from tokenomy.gateway.pricing import resolve_price
from tokenomy.gateway.routing import DeploymentRuntime, build_groups, prompt_prefix_hashes

SYSTEM = {"role": "system", "content": "You are the support assistant of a bicycle shop. " * 120}  # ~6 kB


def _cfg(n: int = 4, **group) -> dict:
    return {"deployments": [list_dep(f"r{i}", f"http://r{i}/v1", 1.0, 2.0, price_extra={"cached_input": 0.1})
                            for i in range(n)],
            "model_groups": {"m": {"deployments": [f"r{i}" for i in range(n)], "policy": "prefix-affinity",
                                   **group}}}


def _runtime(cfg: dict):
    gc = parse_config(cfg)
    deps = {d.name: DeploymentRuntime(d, resolve_price(d), gc) for d in gc.deployments}
    return deps, build_groups(gc, deps)


def _conv(user: str, turns: int) -> list[dict]:
    msgs = [SYSTEM]
    for t in range(turns):
        msgs += [{"role": "user", "content": f"{user} question {t}: " + "details " * 150},
                 {"role": "assistant", "content": "an answer " * 100}]
    return msgs


def test_hashes_share_the_leading_blocks_of_a_growing_conversation():
    a = prompt_prefix_hashes({"messages": _conv("ann", 1)})
    b = prompt_prefix_hashes({"messages": _conv("ann", 2)})
    c = prompt_prefix_hashes({"messages": _conv("bob", 1)})
    assert len(a) >= 7 and b[:len(a) - 1] == a[:-1]  # turn 2 extends turn 1 (the closing bracket aside)
    assert c[:5] == a[:5] and c != a  # the system prompt is shared, the conversation is not
    assert prompt_prefix_hashes({"messages": [{"role": "user", "content": "hi"}]}) == []


def test_conversations_stick_to_their_replica_and_spread_over_the_group():
    deps, groups = _runtime(_cfg())
    g = groups["m"]
    first = {}
    for user in ("ann", "bob", "cy", "dee"):
        d = g.rank(3000, 50, {"messages": _conv(user, 1)})
        first[user] = d.order[0].name
        d.order[0].in_flight += 1  # still running
    # bounded load (ceil(1.25 x (in flight + 1) / 4) = 2): the shared system prompt does not pile them up
    assert max(list(first.values()).count(r) for r in set(first.values())) <= 2
    for d in deps.values():
        d.in_flight = 0  # the first turns finished
    for user in ("ann", "bob", "cy", "dee"):
        d = g.rank(6000, 50, {"messages": _conv(user, 2)})
        assert d.order[0].name == first[user] and d.affinity is True and d.affinity_tokens > 1000


def test_expected_cost_counts_the_cached_share_per_replica():
    deps, groups = _runtime(_cfg(2))
    g = groups["m"]
    holder = g.rank(3000, 50, {"messages": _conv("ann", 1)}).order[0]
    d = g.rank(6000, 50, {"messages": _conv("ann", 2)})
    assert d.order[0] is holder
    other = d.order[1]
    assert holder.cached_frac.value == other.cached_frac.value == 0.0  # nothing observed: the index decides


def test_affinity_yields_to_the_load_bound_the_slo_and_the_breaker():
    deps, groups = _runtime(_cfg(4, slo={"ttft_ms": 500}))
    g = groups["m"]
    holder = g.rank(3000, 50, {"messages": _conv("ann", 1)}).order[0]
    holder.in_flight = 5  # over the hard bound ceil(2 x 6 / 4) = 3
    d = g.rank(6000, 50, {"messages": _conv("ann", 2)})
    assert d.order[0] is not holder and d.affinity is False
    holder.in_flight = 0
    holder.ttft_ms.value = 900.0  # misses the SLO
    d = g.rank(6000, 50, {"messages": _conv("ann", 3)})
    assert d.order[0] is not holder and d.slo_met is True
    holder.ttft_ms.value = 100.0
    for _ in range(10):
        holder.breaker.failure()
    assert not holder.breaker.available()
    d = g.rank(6000, 50, {"messages": _conv("ann", 2)})
    assert d.order[0] is not holder and d.order[-1] is holder  # an open breaker goes last


async def test_header_and_ledger_say_whether_a_request_was_routed_for_affinity(data_dir):
    async with stubs(*(Stub(out_tokens=5) for _ in range(4))) as ss:
        cfg = {"deployments": [list_dep(f"r{i}", s.base_url, 1.0, 2.0, price_extra={"cached_input": 0.1})
                               for i, s in enumerate(ss)],
               "model_groups": {"m": {"deployments": [f"r{i}" for i in range(4)], "policy": "prefix-affinity"}}}
        async with gateway(cfg, data_dir) as g:
            key = g.key("t1")
            st, h1, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": _conv("ann", 1),
                                                              "max_tokens": 5}, key)
            assert st == 200 and h1["x-tokenomy-prefix-affinity"] == "no"
            st, h2, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": _conv("ann", 2),
                                                              "max_tokens": 5}, key)
            assert st == 200 and h2["x-tokenomy-prefix-affinity"].startswith("routed")
            assert h2["x-tokenomy-deployment"] == h1["x-tokenomy-deployment"]
            evs = sorted(g.metering.events("t1"), key=lambda e: e.ts)
            assert [e.extra.get("prefix_affinity") for e in evs] == [False, True]
            assert all(e.extra["policy"] == "prefix-affinity" for e in evs)


def test_config_accepts_the_policy_and_bounds_its_knobs():
    import pytest

    from tokenomy.errors import TokenomyError

    parse_config(_cfg(2, affinity_cache_tokens=50_000, affinity_load_factor=1.5))
    with pytest.raises((TokenomyError, ValueError)):
        parse_config(_cfg(2, affinity_load_factor=0.5))
