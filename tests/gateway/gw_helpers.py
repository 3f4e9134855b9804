"""Gateway test helpers: real servers on 127.0.0.1 (the gateway in-process, a scriptable upstream stub).

A plain module (not conftest) so test modules can import it under any rootdir/cwd:
`from gw_helpers import ...` (pytest puts this directory on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tokenomy.config import parse_config
from tokenomy.tokens import count_chat_tokens, count_tokens

ADMIN_KEY = "tk-admin-testadminsecret"


@dataclass
class Stub:
    """A scriptable OpenAI-compatible upstream. `mode`: ok | 500 | 429 | 400 | hang | garbage |
    broken-stream | no-usage. Output: `out_tokens` words (capped by max_tokens)."""

    mode: str = "ok"
    out_tokens: int = 20
    cached_tokens: int = 0
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    calls: int = 0
    bodies: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)  # request headers (names lower-cased)
    base_url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        async def chat(r):
            return await self._handle(r, True)

        async def completions(r):
            return await self._handle(r, False)

        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/v1/completions", completions)
        return app

    async def _handle(self, request: web.Request, chat: bool) -> web.StreamResponse:
        self.calls += 1
        body = orjson.loads(await request.read())
        self.bodies.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        mode = self.mode
        if mode in ("500", "429", "400"):
            return web.json_response({"error": {"message": f"stub {mode}"}}, status=int(mode))
        if mode == "hang":
            await asyncio.sleep(3600)
        n = min(self.out_tokens, body.get("max_tokens") or 10**9)
        words = [" hello"] * n  # one token each for tokenomy.tokens
        prompt = count_chat_tokens(body["messages"]) if chat else count_tokens(body["prompt"])
        usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n,
                 "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}
        if not body.get("stream"):
            if mode == "garbage":
                return web.Response(body=b"<html>oops</html>", content_type="application/json")
            choice = ({"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                       "finish_reason": "stop"} if chat else {"index": 0, "text": "".join(words), "finish_reason": "stop"})
            obj = {"id": "x", "object": "chat.completion" if chat else "text_completion", "created": 1,
                   "model": body["model"], "choices": [choice]}
            if mode != "no-usage":
                obj["usage"] = usage
            return web.json_response(obj)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if mode == "garbage":
            await resp.write(b"data: {not json\n\n")
            return resp
        for i, w in enumerate(words):
            if mode == "broken-stream" and i == 3:
                request.transport.close()
                return resp
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            delta = {"index": 0, "delta": {"content": w}} if chat else {"index": 0, "text": w}
            await resp.write(b"data: " + orjson.dumps({"id": "x", "object": "chunk", "created": 1,
                                                       "model": body["model"], "choices": [delta]}) + b"\n\n")
        if mode != "no-usage" and (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + orjson.dumps({"id": "x", "object": "chunk", "created": 1,
                                                       "model": body["model"], "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@contextlib.asynccontextmanager
async def serve(app: web.Application, **kw):
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, **kw)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def stubs(*stub_list: Stub):
    async with contextlib.AsyncExitStack() as stack:
        for s in stub_list:
            s.base_url = (await stack.enter_async_context(serve(s.app()))) + "/v1"
        yield stub_list


def list_dep(name: str, base_url: str, inp: float, out: float, **extra) -> dict:
    return {"name": name, "base_url": base_url, "model": extra.pop("model", name),
            "pricing": {"list": {"input": inp, "output": out, **extra.pop("price_extra", {})}}, **extra}


FAST_TIMEOUTS = {"connect_s": 1.0, "first_byte_s": 1.0, "total_s": 2.0}


@dataclass
class GatewayHandle:
    url: str
    metering: Any
    app: web.Application
    front: Any = None  # gateway.fastpath.FastFront (None: served by aiohttp alone)

    @property
    def gw(self):
        from tokenomy.gateway.app import GATEWAY_KEY

        return self.app[GATEWAY_KEY]

    def key(self, tenant: str = "t1", **kw) -> str:
        return self.metering.create_key(tenant, **kw)[1]

    async def post(self, path: str, body: Any, key: str | None, **kw) -> tuple[int, dict, Any]:
        headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **kw.pop("headers", {})}
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with aiohttp.ClientSession() as s:
            async with s.post(self.url + path, data=data, headers=headers, **kw) as r:
                raw = await r.read()
                try:
                    parsed = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    parsed = raw
                return r.status, dict(r.headers), parsed

    async def get(self, path: str, key: str | None = None) -> tuple[int, dict, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with aiohttp.ClientSession() as s:
            async with s.get(self.url + path, headers=headers) as r:
                raw = await r.read()
                try:
                    parsed = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    parsed = raw.decode()
                return r.status, dict(r.headers), parsed


@contextlib.asynccontextmanager
async def gateway(config: dict, data_dir: Path, **metering_kw):
    from tokenomy.gateway.app import build_app
    from tokenomy.metering import Metering

    cfg = parse_config(config, "<test>")
    metering = Metering.open(data_dir, admin_key=ADMIN_KEY, **metering_kw)
    app = build_app(cfg, metering)
    async with serve_gateway(app) as (url, front):
        yield GatewayHandle(url, metering, app, front)


@contextlib.asynccontextmanager
async def serve_gateway(app: web.Application):
    """A gateway app served as `tokenomy up` serves it: the lean front for the hot routes, the
    rest handed to aiohttp (gateway/fastpath.py); plain aiohttp with TOKENOMY_GATEWAY_FASTPATH=0.
    Yields (base URL, the front or None)."""
    from tokenomy.gateway.fastpath import fast_front, fastpath_enabled

    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    front = fast_front(app, runner)
    try:
        port = await front.start("127.0.0.1", 0)
        yield f"http://127.0.0.1:{port}", (front if fastpath_enabled() else None)
    finally:
        await front.shutdown(0.5)
        await runner.cleanup()


@contextlib.asynccontextmanager
async def gateway_process(config: dict, tmp_path: Path, env: dict[str, str] | None = None):
    """A real `python -m tokenomy up --config <yaml>` subprocess on a free port, with ADMIN_KEY.
    Yields (base URL, config path, process, log path); stopped with SIGTERM (graceful drain)."""
    import os
    import socket
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "tokenomy.yaml"
    cfg.write_text(yaml.safe_dump(config))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "gateway.log"
    proc = subprocess.Popen([sys.executable, "-m", "tokenomy", "up", "--config", str(cfg), "--port", str(port),
                             "--data-dir", str(tmp_path / "data")],
                            env={**os.environ, "TOKENOMY_ADMIN_KEY": ADMIN_KEY, **(env or {})},
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                assert proc.poll() is None, log.read_text()
                try:
                    async with s.get(url + "/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("gateway did not start: " + log.read_text())
        yield url, cfg, proc, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
