"""Config reload: deployments, model groups and routed aliases (and with them prices) re-read
from the config file on SIGHUP or `POST /admin/reload`, without dropping a request.

    report = await reload_config(gw)   # ConfigError: refused, the reason; the old config stays

The whole file is validated as at start (every section, prices resolved, routes built, plans'
downgrade groups checked) before anything changes; then the new topology is swapped in with
one synchronous assignment (gateway/topology.py), so a new request sees all of the new config
or none of it, and a request in flight finishes on the objects it was admitted with.
Unchanged deployments keep their runtime (breaker, EWMAs, in-flight count); the ledger,
counters, keys and plans are not touched. Other sections (server, ledger, counters, timeouts,
...) need a restart: the report names those that differ (`not_reloaded`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tokenomy.config import GatewayConfig, load_config
from tokenomy.errors import ConfigError
from tokenomy.gateway.topology import build_topology, diff

RELOADED = ("deployments", "model_groups", "routing_groups")
_LOCK_ATTR = "_reload_lock"


async def reload_config(gw: Any) -> dict:
    """Reload gw.config_path into the running gateway `gw`; returns what changed."""
    lock = getattr(gw, _LOCK_ATTR, None)
    if lock is None:
        lock = asyncio.Lock()
        setattr(gw, _LOCK_ATTR, lock)
    async with lock:  # one reload at a time: each diffs against the one before
        if gw.config_path is None:
            raise ConfigError("no config file to reload: the gateway was started without --config")
        new = await asyncio.to_thread(load_config, gw.config_path)
        return await apply_config(gw, new)


async def apply_config(gw: Any, new: GatewayConfig) -> dict:
    """Swap the reloadable sections of `new` into `gw` (validated, then atomically)."""
    from tokenomy.gateway.fleet import start_emulators
    from tokenomy.gateway.plans import check_plans

    old = gw.config
    effective = old.model_copy(update={k: getattr(new, k) for k in RELOADED})
    check_plans(effective, effective.groups())  # a plan's downgrade group must still exist
    before = gw.topology
    # Building may load routers and price self-hosted fleets: off the loop (it only reads `before`).
    topo = await asyncio.to_thread(build_topology, effective, before)
    fresh = [d for n, d in topo.deployments.items() if before.deployments.get(n) is not d]
    if any(d.cfg.emulate is not None for d in fresh):
        if gw.resources is None:
            raise ConfigError("cannot start the emulators of new deployments: the gateway is not started")
        await start_emulators(fresh, gw.resources)  # stopped with the gateway
    report = {"reloaded": True, "source": gw.config_path,
              "deployments": diff(before.deployments, topo.deployments),
              "model_groups": diff(before.groups, topo.groups),
              "routing_groups": diff(before.routes, topo.routes),
              "not_reloaded": sorted(f for f in GatewayConfig.model_fields
                                     if f not in RELOADED and getattr(old, f) != getattr(new, f))}
    gw.config = effective
    gw.apply_topology(topo)  # no await since the check: atomic for the event loop
    return report


def summary(report: dict) -> str:
    """One log line of a reload report."""
    d = report["deployments"]
    parts = [f"{k} {', '.join(d[k])}" for k in ("added", "changed", "removed") if d[k]]
    line = "config reloaded: deployments " + ("; ".join(parts) if parts else "unchanged")
    if report["not_reloaded"]:
        line += f" (not reloaded, restart needed: {', '.join(report['not_reloaded'])})"
    return line
