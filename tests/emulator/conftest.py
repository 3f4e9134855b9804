"""Emulator fixtures: real servers on 127.0.0.1 (port 0) and the official openai SDK."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from tokenomy.emulator import EmulatorConfig, serve_emulator


@contextlib.asynccontextmanager
async def emulator(**overrides: object) -> AsyncIterator[tuple[str, AsyncOpenAI]]:
    cfg = EmulatorConfig(**{"time_scale": 0.0, **overrides})
    async with serve_emulator(cfg) as base_url:
        client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=30)
        try:
            yield base_url, client
        finally:
            await client.close()


@pytest.fixture
async def emu() -> AsyncIterator[tuple[str, AsyncOpenAI]]:
    async with emulator() as pair:
        yield pair


@pytest.fixture
def make_emulator():  # type: ignore[no-untyped-def]
    """`async with make_emulator(max_batch=2, time_scale=0.01) as (base_url, client): ...`"""
    return emulator
