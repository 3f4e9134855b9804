"""A real gateway (in-process aiohttp on 127.0.0.1, own event loop in a thread) in front of a
tolerant stub upstream, for the fuzz tests (sync schemathesis/hypothesis code calls it over HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web

from tokenomy.config import parse_config

ADMIN_KEY = "tk-admin-fuzzadminsecret"


def stub_app() -> web.Application:
    """An OpenAI-compatible upstream that answers ANY body with 2 tokens: the fuzzer must find the
    gateway's bugs, not this stub's (it never produces a 5xx)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = {}
        chat = request.path.endswith("/chat/completions")
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        choice = ({"index": 0, "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}
                  if chat else {"index": 0, "text": "hi there", "finish_reason": "stop"})
        base = {"id": "x", "object": "chat.completion" if chat else "text_completion", "created": 1, "model": "stub"}
        if not (isinstance(body, dict) and body.get("stream") is True):
            return web.json_response({**base, "choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in ("hi", " there"):
            delta = {"index": 0, "delta": {"content": word}} if chat else {"index": 0, "text": word}
            await resp.write(b"data: " + orjson.dumps({**base, "choices": [delta]}) + b"\n\n")
        await resp.write(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def embeddings(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "model": "stub", "usage": {"prompt_tokens": 3, "total_tokens": 3},
                                  "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}]})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", handle)
    app.router.add_post("/v1/completions", handle)
    app.router.add_post("/v1/embeddings", embeddings)
    return app


@dataclass
class FuzzGateway:
    url: str
    admin_key: str
    tenant_key: str
    request_id: str  # a real x-tokenomy-request-id of the tenant (for /v1/feedback)


async def _runner(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


class _FrontRunner:
    """The gateway served as `tokenomy up` serves it: the lean front for the hot routes, the rest
    handed to aiohttp (gateway/fastpath.py); `cleanup` stops both."""

    def __init__(self, front, runner: web.AppRunner):
        self.front, self.runner = front, runner

    async def cleanup(self) -> None:
        await self.front.shutdown(0.5)
        await self.runner.cleanup()


async def _front(app: web.Application):
    from tokenomy.gateway.fastpath import fast_front, fastpath_enabled

    if not fastpath_enabled():
        return await _runner(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    front = fast_front(app, runner)
    port = await front.start("127.0.0.1", 0)
    return _FrontRunner(front, runner), f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def running_gateway(data_dir: Path):
    """Start stub + gateway in a background event loop; yield a FuzzGateway; stop both."""
    from tokenomy.gateway.app import build_app
    from tokenomy.gateway.openapi import openapi_handler
    from tokenomy.metering import Metering

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    runners: list = []  # web.AppRunner | _FrontRunner
    try:
        async def start() -> tuple[str, str]:
            # Opened on the loop's thread, as `tokenomy up` does (the ledger is bound to it).
            metering = Metering.open(data_dir, admin_key=ADMIN_KEY)
            stub_runner, stub_url = await _runner(stub_app())
            runners.append(stub_runner)
            dep = {"name": "d1", "base_url": stub_url + "/v1", "model": "d1",
                   "pricing": {"list": {"input": 3.0, "output": 15.0}}}
            emb = {"name": "e1", "base_url": stub_url + "/v1", "model": "e1", "mode": "embedding",
                   "embedding_dimensions": 2, "pricing": {"list": {"input": 0.02, "output": 0.0}}}
            data = {"deployments": [dep, emb], "model_groups": {"m": {"deployments": ["d1"]},
                                                                "e": {"deployments": ["e1"]}}}
            cfg = parse_config(data, "<fuzz>")
            config_file = Path(data_dir) / "tokenomy.yaml"  # POST /admin/reload re-reads it (unchanged)
            config_file.write_text(__import__("yaml").safe_dump(data))
            app = build_app(cfg, metering, config_path=str(config_file))
            if not any(getattr(r.resource, "canonical", None) == "/openapi.json" for r in app.router.routes()):
                # Until app.py registers it (exact-path routes win over the catch-all in aiohttp).
                app.router.add_get("/openapi.json", openapi_handler)
            gw_runner, gw_url = await _front(app)
            runners.append(gw_runner)
            return gw_url, metering.create_key("fuzz-tenant")[1]

        url, tenant_key = run(start())
        yield FuzzGateway(url, ADMIN_KEY, tenant_key, _one_request(url, tenant_key))
    finally:
        async def stop():
            for r in reversed(runners):
                await r.cleanup()

        with contextlib.suppress(Exception):
            run(stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)  # the app's cleanup closed the metering



def _one_request(url: str, key: str) -> str:
    import requests

    r = requests.post(url + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["x-tokenomy-request-id"]
