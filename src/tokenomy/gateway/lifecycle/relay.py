"""Relay an opened upstream stream to the client event by event (no metering here).

The upstream's usage chunk (choices empty) is held back: settle sends it, with the billed
figures and the x_tokenomy object, after the event is committed, and only when the client
asked for it. Anything that is not the OpenAI stream protocol ends the relay as `broken`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiohttp import web

from tokenomy.gateway.lifecycle.state import OpenStream, RequestCtx
from tokenomy.gateway.upstream import event_data, read_event, reported_energy_joules


@dataclass(slots=True)
class Relayed:
    texts: list[str] = field(default_factory=list)  # content relayed (the gateway's own count)
    usage: object = None  # the upstream's last usage object, untrusted
    energy_j: float | None = None
    held_usage: dict | None = None  # the usage chunk, for the client that asked for it
    last_obj: dict | None = None
    t_first: float | None = None  # first content token (the first event may be a bare role chunk)
    finish_reason: str | None = None  # the last choice's finish_reason seen
    broken: str | None = None
    client_gone: bool = False


def _piece(c0: object, chat: bool) -> object:
    if not isinstance(c0, dict):
        return None
    if chat:
        delta = c0.get("delta")
        return delta.get("content") if isinstance(delta, dict) else None
    return c0.get("text")


async def relay(ctx: RequestCtx, s: OpenStream, out: web.StreamResponse, idle_s: float) -> Relayed:
    rl = Relayed()
    chat = ctx.kind == "chat"
    content = s.resp.content
    event: bytes | None = s.first
    done = False
    while event is not None:
        data = event_data(event)
        forward = True
        if data is not None:
            if data == b"[DONE]":
                done = True
                break
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                rl.broken = f"invalid JSON in stream event: {data[:100]!r}"
                break
            if isinstance(obj, dict):
                rl.last_obj = obj
                choices = obj.get("choices")
                if "error" in obj and not choices:
                    rl.broken = f"upstream sent an error event: {str(obj.get('error'))[:200]}"
                    break
                if choices:
                    if not isinstance(choices, list):
                        rl.broken = f"'choices' is not a list: {str(choices)[:100]}"
                        break
                    c0 = choices[0]
                    piece = _piece(c0, chat)
                    if isinstance(c0, dict) and c0.get("finish_reason") is not None:
                        rl.finish_reason = str(c0["finish_reason"])[:64]
                    if isinstance(piece, str) and piece:
                        rl.texts.append(piece)
                        if rl.t_first is None:
                            rl.t_first = time.perf_counter()
                u = obj.get("usage")
                if u:
                    rl.usage = u
                    e = reported_energy_joules(obj)
                    if e is not None:
                        rl.energy_j = e
                    if not choices:
                        forward = False
                        if ctx.client_usage:
                            rl.held_usage = obj
        if forward:
            try:
                await out.write(event + (b"\n" if event.endswith(b"\n") else b"\n\n"))
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                rl.client_gone = True
                break
        try:
            event = await read_event(content)
        except (asyncio.TimeoutError, TimeoutError):
            rl.broken = f"no stream data within {idle_s:g} s"
            break
        except (aiohttp.ClientError, OSError) as exc:
            rl.broken = f"stream interrupted: {type(exc).__name__}: {exc}"
            break
    if not done and rl.broken is None and not rl.client_gone:
        rl.broken = "stream ended without [DONE]"
    return rl
