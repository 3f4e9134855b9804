"""Several emulators in one process (how the gateway runs its default fleet); engine failures."""

from __future__ import annotations

import httpx
import pytest
from aiohttp import web
from openai import AsyncOpenAI

from tokenomy.emulator import EmulatorConfig, build_app, serve_emulators
from tokenomy.emulator.app import ENGINE

BODY = {"messages": [{"role": "user", "content": "word " * 300}], "max_tokens": 20}


async def test_fleet_in_one_process_differs_by_hardware() -> None:
    cfgs = [EmulatorConfig(model="llama-3-8b", accelerator="l4", served_model_name="small-l4", time_scale=0),
            EmulatorConfig(model="llama-3-8b", accelerator="h100", served_model_name="small-h100", time_scale=0),
            EmulatorConfig(model="llama-3-70b", accelerator="h100", count=4, served_model_name="large", time_scale=0)]
    async with serve_emulators(cfgs) as urls:
        assert len(set(urls)) == 3
        out = {}
        for cfg, url in zip(cfgs, urls):
            client = AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
            r = await client.chat.completions.with_raw_response.create(model=cfg.served_model_name, **BODY)
            out[cfg.served_model_name] = r.parse().model_extra["x_emulator"]
            await client.close()
    # same model and load: the L4 (300 GB/s) decodes far slower than the H100 (3.35 TB/s)
    assert out["small-l4"]["tpot_seconds"] > 4 * out["small-h100"]["tpot_seconds"]
    assert out["small-l4"]["ttft_seconds"] > out["small-h100"]["ttft_seconds"]
    # a 70B model on 4 GPUs is slower per token than an 8B model on one
    assert out["large"]["tpot_seconds"] > out["small-h100"]["tpot_seconds"]


class _FailingStepModel:
    """Stands in for a step model that raises (a bug cannot be provoked otherwise)."""

    idle_watts, max_kv_tokens, source = 0.0, 100_000, "test"

    def step_seconds(self, **_: int) -> float:
        raise RuntimeError("boom")

    def step_watts(self, **_: int) -> float:
        return 0.0


async def test_engine_failure_fails_requests_and_keeps_serving() -> None:
    app = build_app(EmulatorConfig(time_scale=0))
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    engine = app[ENGINE]
    real_sm = engine.sm
    try:
        async with httpx.AsyncClient() as http:
            engine.sm = _FailingStepModel()
            r = await http.post(f"{url}/chat/completions", json={"model": "llama-3-8b", **BODY})
            assert r.status_code == 500
            assert "boom" in r.json()["error"]["message"]
            engine.sm = real_sm
            r = await http.post(f"{url}/chat/completions", json={"model": "llama-3-8b", **BODY})
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 20
    finally:
        await runner.cleanup()


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(time_scale=-1)
    with pytest.raises(ValueError):
        EmulatorConfig(fault_rate_500=2)
    with pytest.raises(ValueError):
        EmulatorConfig(unknown_field=1)
