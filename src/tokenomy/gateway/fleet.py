"""In-process emulated deployments (the default fleet, or `emulate:` in a config)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from tokenomy.gateway.routing import DeploymentRuntime


async def start_emulators(deployments: Iterable[DeploymentRuntime], stack: contextlib.AsyncExitStack) -> None:
    """Start one emulator per emulated deployment on an ephemeral 127.0.0.1 port; the stack
    stops them (after the gateway drained its in-flight requests)."""
    emulated = [d for d in deployments if d.cfg.emulate is not None]
    if not emulated:
        return
    from tokenomy.emulator import EmulatorConfig, serve_emulator

    for d in emulated:
        e = d.cfg.emulate
        cfg = EmulatorConfig(model=e.model, accelerator=e.accelerator, count=e.count, dtype=e.dtype,
                             served_model_name=d.model, time_scale=e.time_scale, max_batch=e.max_batch,
                             engine_efficiency=e.engine_efficiency, fault_rate_500=e.fault_rate_500,
                             fault_rate_429=e.fault_rate_429, seed=e.seed,
                             **({"embedding_dimensions": d.cfg.embedding_dimensions}
                                if d.cfg.embedding_dimensions else {}))
        base_url = await stack.enter_async_context(serve_emulator(cfg, host="127.0.0.1", port=0))
        d.set_base_url(base_url)
