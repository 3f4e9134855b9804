"""Running the gateway: open the ledger, bootstrap identities, serve until SIGTERM/SIGINT.

Graceful shutdown: stop accepting, let in-flight requests finish (their events commit),
then stop the ledger writer (it flushes what is pending) and the emulators.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Callable

from tokenomy.config import GatewayConfig


def _secrets(admin_key: str | None, demo_key: str | None, emit: Callable[[str], None]) -> None:
    # Printed as soon as they exist (before the server starts): they cannot be shown again.
    if admin_key:
        emit(f"admin key (shown once, stored hashed): {admin_key}")
    if demo_key:
        emit(f"demo tenant 'demo' API key (shown once, stored hashed): {demo_key}")


def _banner(host: str, port: int, data_dir: Path, demo_key: str | None,
            config: GatewayConfig, emit: Callable[[str], None]) -> None:
    base = f"http://{host}:{port}"
    groups = config.groups()
    model = next(iter(config.model_groups or groups))
    key = demo_key or "<your key>"
    emit(f"tokenomy gateway on {base}/v1   (ledger: {data_dir})")
    for alias, g in config.model_groups.items():
        emit(f"  model {alias!r}: {', '.join(g.deployments)}  [policy {g.policy}]")
    for alias, r in (config.routing_groups or {}).items():
        emit(f"  model {alias!r}: routes across {', '.join(r.candidates)}  [{r.policy}]")
    emit(f"dashboard: {base}/dashboard  (sign in with an API key)")
    emit("try it:")
    emit(f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' "
         f"-H 'Content-Type: application/json' "
         f"-d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}' -i")
    emit("  python -c \"from openai import OpenAI; "
         f"c = OpenAI(base_url='{base}/v1', api_key='{key}'); "
         f"print(c.chat.completions.create(model='{model}', "
         "messages=[{'role': 'user', 'content': 'Hello!'}]).choices[0].message.content)\"")
    emit(f"  usage: curl -s {base}/admin/usage -H 'Authorization: Bearer {key}'   metrics: {base}/metrics")


async def serve(config: GatewayConfig, *, host: str, port: int, data_dir: Path,
                emit: Callable[[str], None] = print, create_demo: bool | None = None,
                config_path: Path | None = None) -> None:
    from aiohttp import web

    from tokenomy.gateway.app import build_app
    from tokenomy.gateway.bootstrap import apply_identities
    from tokenomy.gateway.fastpath import fast_front, fastpath_enabled
    from tokenomy.metering.backends import open_metering

    check_pricing(config)  # fail on a bad price before the ledger generates any key
    if config.tracing.enabled:
        from tokenomy.observe import check_tracing

        check_tracing(config.tracing)  # the otel extra is installed (before any key is generated)
    # SQLite by default; PostgreSQL/Redis when TOKENOMY_LEDGER_URL / TOKENOMY_REDIS_URL (or the
    # config's counters.url) are set.
    c = config.counters
    metering = open_metering(data_dir, synchronous=config.ledger.synchronous, redis_url=c.url,
                             fail_mode=c.fail_mode, redis_prefix=c.prefix)
    if create_demo is None:
        create_demo = not config.tenants and not config.keys
    boot = apply_identities(config, metering, create_demo=create_demo)
    _secrets(metering.generated_admin_key, boot.demo_key, emit)
    app = build_app(config, metering, config_path=str(Path(config_path).resolve()) if config_path is not None else None)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.server.shutdown_timeout_s,
                           access_log=None)
    await runner.setup()
    # The hot routes are answered by a lean HTTP/1.1 front; every other request (and any
    # connection after one) is aiohttp's, as before (gateway/fastpath.py). With the fast path
    # off the front still accepts (connection cap, head/idle timeouts) and hands over at once.
    front = fast_front(app, runner, answer=fastpath_enabled())
    try:
        bound = await front.start(host, port, backlog=2048, reuse_address=True)
    except OSError as exc:
        await runner.cleanup()
        from tokenomy.errors import TokenomyError

        raise TokenomyError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    _banner(host, bound, data_dir, boot.demo_key, config, emit)
    # Start-up objects (catalog, price map, config) live forever: keep them out of GC scans,
    # so full collections stay short on the request path.
    import gc

    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()

    def on_hup() -> None:  # SIGHUP: reload deployments, groups and prices (gateway/reload.py)
        task = loop.create_task(_reload_on_signal(app, emit))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await stop.wait()
        emit("shutting down: draining in-flight requests ...")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await front.shutdown(config.server.shutdown_timeout_s)  # stop listening, drain the fast path
        await runner.cleanup()  # stop listening, drain handlers, then app cleanup (ledger, emulators)
    emit("stopped")


async def _reload_on_signal(app, emit: Callable[[str], None]) -> None:
    """One log line either way: what changed, or why the new config was refused (old one kept)."""
    from tokenomy.errors import ConfigError
    from tokenomy.gateway.app import GATEWAY_KEY
    from tokenomy.gateway.reload import reload_config, summary

    try:
        emit(summary(await reload_config(app[GATEWAY_KEY])) + " (SIGHUP)")
    except ConfigError as exc:
        emit(f"config reload refused (SIGHUP), the running config is kept: {exc}")


def check_pricing(config: GatewayConfig) -> None:
    from tokenomy.errors import ConfigError, TokenomyError
    from tokenomy.gateway.pricing import resolve_price

    for i, d in enumerate(config.deployments):
        try:
            resolve_price(d)
        except TokenomyError as exc:
            raise ConfigError(f"invalid config: deployments[{i}].pricing ({d.name}): {exc}") from None
    from tokenomy.gateway.plans import check_plans

    check_plans(config, config.groups())  # billing plans: valid, and downgrade groups exist
    check_routing(config)


def check_routing(config: GatewayConfig) -> None:
    """Routers and verifiers named in routing_groups exist and load (the gateway loads them again at
    build time): a typo fails here, before the ledger generates any key. The embedding router is
    only name-checked (loading it imports torch)."""
    from tokenomy.errors import ConfigError, TokenomyError

    for alias, rg in (config.routing_groups or {}).items():
        where = f"routing_groups.{alias}"
        try:
            if rg.policy == "cascade":
                spec = rg.cascade_spec
                field = "cascade.verifier"
                if spec.judge is None:
                    from tokenomy.routing.cascade import load_verifier

                    load_verifier(spec.verifier)
            else:
                field = "router"
                if rg.router != "embed":
                    from tokenomy.routing.quality.registry import load_router

                    load_router(rg.router)
        except TokenomyError as exc:
            raise ConfigError(f"invalid config: {where}.{field}: {exc}") from None


def run(config: GatewayConfig, *, host: str, port: int, data_dir: Path, config_path: Path | None = None) -> None:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - Windows
        runner = asyncio.run

    def emit(line: str) -> None:
        print(line, flush=True)

    runner(serve(config, host=host, port=port, data_dir=data_dir, emit=emit, config_path=config_path))
    sys.stdout.flush()
