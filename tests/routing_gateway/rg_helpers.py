"""Shared config builders for the routed-alias tests."""

from __future__ import annotations

import contextlib

import orjson
from aiohttp import web

from gw_helpers import list_dep, serve

HARD = ("Prove that for every prime p > 3, p^2 - 1 is divisible by 24. Give a rigorous argument with modular "
        "arithmetic, then generalise to composite numbers and explain where the proof fails. " * 3)
TRIVIAL = "hi"


def two_groups(weak_url: str, strong_url: str, **routing) -> dict:
    """weak: $1/$2 per Mtok, strong: $10/$30 per Mtok; alias `auto` over them."""
    return {"deployments": [list_dep("weak@a", weak_url, 1.0, 2.0), list_dep("strong@b", strong_url, 10.0, 30.0)],
            "model_groups": {"weak": {"deployments": ["weak@a"]}, "strong": {"deployments": ["strong@b"]}},
            "routing_groups": {"auto": {"candidates": ["weak", "strong"], **routing}}}


def chat(prompt: str, **kw) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 20, **kw}


class Fixed:
    """A verifier with a fixed score (counts its calls)."""

    def __init__(self, score: float):
        self.value, self.calls = score, 0

    def score(self, prompt: str, answer: str) -> float:
        self.calls += 1
        return self.value


@contextlib.asynccontextmanager
async def judge_upstream(reply: str):
    """An OpenAI-compatible upstream that always answers `reply` (an LLM judge)."""
    seen: list[dict] = []

    async def handler(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        seen.append(body)
        return web.json_response({"id": "j", "object": "chat.completion", "created": 1, "model": body["model"],
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 100, "completion_tokens": 4, "total_tokens": 104}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    async with serve(app) as url:
        yield url + "/v1", seen


async def read_sse(g, body: dict, key: str) -> tuple[int, dict, str]:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.post(g.url + "/v1/chat/completions", data=orjson.dumps(body),
                          headers={"Authorization": f"Bearer {key}"}) as r:
            return r.status, dict(r.headers), (await r.read()).decode()


async def replica_outcomes(config, tmp_path, streams, key: str, request_of, outcome) -> list[list[bool]]:
    """Start one real gateway process (`tokenomy up --config config`) per stream, send each its
    stream one request at a time (the replicas in parallel), and return outcome(response headers)
    per request. `request_of(item) -> (prompt, max_tokens)`. Redis comes from the config only."""
    import asyncio
    import os

    import aiohttp

    from service_procs import GatewayProcess

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENOMY_REDIS")}
    procs = [GatewayProcess(config, tmp_path / f"gw{i}", env) for i in range(len(streams))]
    try:
        urls = [p.wait_ready(90) for p in procs]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            async def replica(url: str, stream) -> list[bool]:
                out = []
                for item in stream:
                    prompt, max_tokens = request_of(item)
                    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
                    async with s.post(f"{url}/v1/chat/completions", json=body,
                                      headers={"Authorization": f"Bearer {key}"}) as r:
                        await r.read()
                        assert r.status == 200, await r.text()
                        out.append(outcome(r.headers))
                return out

            return list(await asyncio.gather(*(replica(u, st) for u, st in zip(urls, streams))))
    finally:
        for p in procs:
            p.stop()
