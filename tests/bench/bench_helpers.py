"""Helpers for the bench tests (importable: pytest puts tests/bench on sys.path)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from tokenomy.emulator import EmulatorConfig, serve_emulator


@contextlib.asynccontextmanager
async def emulators(*configs: dict) -> AsyncIterator[list[str]]:
    """`async with emulators({"accelerator": "l4", "time_scale": 0.25}, {...}) as urls:`"""
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serve_emulator(EmulatorConfig(**{"time_scale": 0.0, **c})))
                for c in configs]
        yield urls
