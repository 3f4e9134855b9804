"""Run emulators in-process: `async with serve_emulator(cfg) as base_url: ...`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from .app import build_app
from .config import EmulatorConfig


@contextlib.asynccontextmanager
async def serve_emulator(cfg: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve one emulated deployment on host:port (0 = a free port); yields ".../v1".

    Several can run in one event loop (one engine task each), e.g. a whole fleet for the
    gateway's tests. Handlers are cancelled when their client disconnects, so abandoned
    requests leave the batch.
    """
    app = build_app(cfg)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound_port}/v1"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_emulators(cfgs: list[EmulatorConfig], host: str = "127.0.0.1") -> AsyncIterator[list[str]]:
    """Serve several emulated deployments (each on its own free port); yields their base URLs in order."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve_emulator(cfg, host, 0)) for cfg in cfgs]
