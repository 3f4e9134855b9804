"""The gateway's topology: deployments (with prices), model groups and routed aliases, built
from a config — at start, and again on a config reload (gateway/reload.py).

A rebuild reuses the live runtime objects of everything the new config leaves unchanged, so a
reload keeps their breakers, latency/cost EWMAs, in-flight counts and routers:
    deployment  reused when its config is equal (same upstream, price, headers, limits)
    group       reused when its config is equal and every deployment in it was reused
    route       reused when its config is equal and every group it names was reused
Everything else is built fresh. Requests in flight hold their own group and deployment
objects, so they finish on the old ones whatever is swapped in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tokenomy.config import GatewayConfig
from tokenomy.errors import ConfigError, TokenomyError
from tokenomy.gateway.pricing import latency_prior_ms, resolve_price
from tokenomy.gateway.routing import DeploymentRuntime, GroupRuntime, RouteRuntime


@dataclass(frozen=True, slots=True)
class Topology:
    deployments: dict[str, DeploymentRuntime]
    groups: dict[str, GroupRuntime]
    routes: dict[str, RouteRuntime]


def _deployment(config: GatewayConfig, i: int) -> DeploymentRuntime:
    d = config.deployments[i]
    try:
        price = resolve_price(d)
    except TokenomyError as exc:  # e.g. an unknown accelerator or price-map id
        raise ConfigError(f"invalid config: deployments[{i}].pricing ({d.name}): {exc}") from None
    rt = DeploymentRuntime(d, price, config)
    try:
        prior = latency_prior_ms(d)
    except TokenomyError:
        prior = None  # no prior: the first observations decide
    if prior is not None:
        rt.ttft_ms.value, rt.tpot_ms.value = prior
    if d.api_key_env:
        key = os.environ.get(d.api_key_env)
        if key:
            rt.headers["Authorization"] = f"Bearer {key}"
    return rt


def build_topology(config: GatewayConfig, previous: Topology | None = None) -> Topology:
    """Raises ConfigError (naming the field) for a price or route that cannot be built."""
    old = previous or Topology({}, {}, {})
    deps: dict[str, DeploymentRuntime] = {}
    for i, d in enumerate(config.deployments):
        prev = old.deployments.get(d.name)
        deps[d.name] = prev if prev is not None and prev.cfg == d else _deployment(config, i)
    groups: dict[str, GroupRuntime] = {}
    for i, (alias, g) in enumerate(config.groups().items()):
        prev_g = old.groups.get(alias)
        if prev_g is not None and prev_g.cfg == g and all(x is deps.get(x.name) for x in prev_g.deployments):
            groups[alias] = prev_g
        else:
            groups[alias] = GroupRuntime(alias, g, deps, config.defaults.predicted_output_tokens, seed=i)
    routes: dict[str, RouteRuntime] = {}
    from tokenomy.metering.backends import resolve_counters

    c = config.counters
    url, _, prefix = resolve_counters(c.url, c.fail_mode, c.prefix)
    redis = (url, prefix) if url else None   # where strong_share cuts are shared by the replicas
    for alias, rg in config.routing_groups.items():
        prev_r = old.routes.get(alias)
        judge = prev_r.judge[0] if prev_r is not None and prev_r.judge is not None else None
        if (prev_r is not None and prev_r.cfg == rg and all(c is groups.get(c.alias) for c in prev_r.candidates)
                and (judge is None or judge is groups.get(judge.alias))):
            routes[alias] = prev_r
        else:
            routes[alias] = RouteRuntime(alias, rg, groups, redis)
    return Topology(deps, groups, routes)


def diff(old: dict, new: dict) -> dict[str, list[str]]:
    """What a rebuild did to one kind of object (names): added, changed, removed, kept."""
    return {"added": sorted(set(new) - set(old)),
            "changed": sorted(n for n in new if n in old and new[n] is not old[n]),
            "removed": sorted(set(old) - set(new)),
            "kept": sorted(n for n in new if n in old and new[n] is old[n])}
