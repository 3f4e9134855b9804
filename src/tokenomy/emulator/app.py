"""The emulator's aiohttp application: OpenAI-compatible endpoints over the engine."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from .config import DEFAULT_MAX_BATCH, EmulatorConfig
from .engine import Engine, Sequence
from .errors import ApiError, error_response
from .prefix import prompt_block_hashes
from .protocol import ParsedRequest, parse_chat, parse_completion, parse_json
from .stepmodel import resolve_step_model
from .textgen import (chat_logprobs, choice_digest, completion_logprobs, cut_at_stop, json_pieces,
                      natural_output_tokens, pieces_for, request_digest)

FAULT_HEADER = "x-emulator-fault"
FAULTS = frozenset({"500", "429", "garbage", "broken-stream", "hang", "slow"})
BROKEN_STREAM_AFTER_CHUNKS = 3

ENGINE = web.AppKey("engine", Engine)
STATE = web.AppKey("state", "EmulatorState")


class EmulatorState:
    """Everything the handlers share: config, engine, catalog entries, fault RNG."""

    def __init__(self, cfg: EmulatorConfig):
        sm, model, acc = resolve_step_model(cfg)
        self.cfg, self.sm, self.model, self.acc = cfg, sm, model, acc
        max_kv = int(min(sm.max_kv_tokens, cfg.kv_cache_tokens or sm.max_kv_tokens))
        if max_kv < 16:
            from tokenomy.errors import ConfigError

            raise ConfigError(f"{model.id} does not fit on {cfg.count}x {acc.id} ({cfg.dtype}): no room for a KV cache")
        self.max_model_len = min(cfg.max_model_len or model.context_length, model.context_length, max_kv)
        self.engine = Engine(sm, max_batch=cfg.max_batch or DEFAULT_MAX_BATCH, max_kv_tokens=max_kv,
                             prefill_chunk_tokens=cfg.prefill_chunk_tokens, time_scale=cfg.time_scale,
                             prefix_caching=cfg.prefix_caching, block_tokens=cfg.kv_block_tokens)
        self.names = {cfg.name, model.id, cfg.model}
        self.rng = random.Random(cfg.seed)
        self.created = int(time.time())
        self.fingerprint = f"fp_emu_{acc.id}x{cfg.count}"

    def pick_fault(self, request: web.Request) -> str | None:
        fault = request.headers.get(FAULT_HEADER)
        if fault is not None:
            fault = fault.strip().lower()
            if fault not in FAULTS:
                raise ApiError(400, f"unknown {FAULT_HEADER} {fault!r}; use one of {sorted(FAULTS)}",
                               param=FAULT_HEADER, code="invalid_value")
            return fault
        if self.cfg.fault_rate_500 or self.cfg.fault_rate_429:
            u = self.rng.random()
            if u < self.cfg.fault_rate_500:
                return "500"
            if u < self.cfg.fault_rate_500 + self.cfg.fault_rate_429:
                return "429"
        return None


# --- middleware and small endpoints ---------------------------------------------------------

@web.middleware
async def _errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[STATE].cfg.max_body_bytes
        return error_response(413, f"request body too large (limit {limit} bytes)", code="request_too_large")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, exc.reason or "error",
                                  code="not_found" if exc.status == 404 else None)
        raise


async def _health(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response({"status": "ok", "model": st.cfg.name, **st.engine.stats()},
                             dumps=lambda o: orjson.dumps(o).decode())


async def _stats(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = {"model": st.model.id, "accelerator": st.acc.id, "count": st.cfg.count, "dtype": st.cfg.dtype,
            "kv_dtype": st.cfg.kv_dtype,
            "step_model_source": st.sm.source, "max_kv_tokens": st.engine.max_kv_tokens,
            "max_batch": st.engine.max_batch, "max_model_len": st.max_model_len,
            "idle_watts": st.sm.idle_watts, **st.engine.stats()}
    return web.json_response(body, dumps=lambda o: orjson.dumps(o).decode())


async def _models(request: web.Request) -> web.Response:
    st = request.app[STATE]
    entry = {"id": st.cfg.name, "object": "model", "created": st.created, "owned_by": "tokenomy-emulator",
             "root": st.model.id, "max_model_len": st.max_model_len}
    return web.Response(body=orjson.dumps({"object": "list", "data": [entry]}), content_type="application/json")


# --- completions ----------------------------------------------------------------------------

async def _chat(request: web.Request) -> web.StreamResponse:
    return await _complete(request, chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, chat=False)


async def _complete(request: web.Request, *, chat: bool) -> web.StreamResponse:
    st = request.app[STATE]
    body = parse_json(await request.read())
    req = parse_chat(body) if chat else parse_completion(body)
    if req.model not in st.names:
        raise ApiError(404, f"The model `{req.model}` does not exist.", param="model", code="model_not_found")
    room = st.max_model_len - max(1, req.prompt_tokens)  # the engine prefills at least one token
    if room < 1 or (req.max_tokens is not None and req.max_tokens > room):
        raise ApiError(400, f"This model's maximum context length is {st.max_model_len} tokens. However, you "
                            f"requested {req.prompt_tokens + (req.max_tokens or 1)} tokens "
                            f"({req.prompt_tokens} in the {'messages' if chat else 'prompt'}, "
                            f"{req.max_tokens or 1} in the completion).",
                       param="messages" if chat else "prompt", code="context_length_exceeded")
    fault = st.pick_fault(request)
    _raise_error_fault(st, fault)
    if fault == "hang":
        return await _hang(request)
    if fault == "garbage":
        return await _garbage(request, req)

    digest = request_digest(st.cfg.seed ^ (req.seed or 0), req.canonical_prompt)
    limit = min(req.max_tokens or room, room)
    choices = []
    for i in range(req.n):  # each choice its own seed: its own length, text, finish reason, logprobs
        d = choice_digest(digest, i)
        pieces, finish_reason, tool = _shaped(req, d, limit)
        choices.append(_Choice(i, tool, d, pieces, finish_reason))
    hashes = prompt_block_hashes(req.canonical_prompt, st.engine.block_tokens) if st.cfg.prefix_caching else ()
    # n choices = n sequences of the engine's batch sharing the prompt's prefill (Engine.submit_group)
    seqs = st.engine.submit_group(req.prompt_tokens, [len(c.pieces) for c in choices], slow=fault == "slow",
                                  block_hashes=hashes)
    for c, seq in zip(choices, seqs):
        c.seq = seq
    ids = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    try:
        if req.stream:
            return await _stream(request, st, req, choices, ids, chat, broken=fault == "broken-stream")
        return await _whole(request, st, req, choices, ids, chat, broken=fault == "broken-stream")
    finally:
        for seq in seqs:
            st.engine.cancel(seq)  # no-op when finished; frees the batch slot if the client left


class _Choice:
    """One of the request's n choices: rendered as a tool call (name, call id) or text, `digest`
    seeds its text and logprobs; its pieces, finish reason and engine sequence."""

    __slots__ = ("index", "tool", "digest", "pieces", "finish_reason", "seq")

    def __init__(self, index: int, tool: tuple[str, str] | None, digest: int, pieces: list[str],
                 finish_reason: str):
        self.index, self.tool, self.digest = index, tool, digest
        self.pieces, self.finish_reason = pieces, finish_reason
        self.seq: Sequence | None = None


def _raise_error_fault(st, fault: str | None) -> None:
    """The faults that are an HTTP error answer (x-emulator-fault: 500 | 429), for every endpoint."""
    if fault == "500":
        raise ApiError(500, "emulated upstream failure (x-emulator-fault: 500)", code="internal_error")
    if fault == "429":
        raise ApiError(429, "emulated rate limit (x-emulator-fault: 429)", code="rate_limit_exceeded",
                       headers={"Retry-After": str(st.cfg.retry_after_seconds)})


def _shaped(req: ParsedRequest, digest: int, limit: int) -> tuple[list[str], str, tuple[str, str] | None]:
    """(pieces, finish_reason, (tool name, call id) | None) honouring tool_choice,
    response_format and stop; max_tokens truncates (finish_reason length, like OpenAI)."""
    sh = req.shape
    tool = None
    if sh.tool is not None or sh.json is not None:
        if sh.tool is not None:
            schema = sh.tool[1] or {"type": "object", "properties": {}}
            tool = (sh.tool[0], "call_" + format(digest & 0xFFFFFFFFFFFF, "012x"))
        else:
            schema = sh.json
        full = json_pieces(schema, digest)
        if len(full) > limit:
            return full[:limit], "length", tool
        if tool is not None:
            return full, "stop" if sh.tool_forced_by_name else "tool_calls", tool
        finish = "stop"
    else:
        natural = natural_output_tokens(digest)
        # ignore_eos: the model never "stops" on its own; min_tokens: not before that many
        natural = 10**9 if sh.ignore_eos else max(natural, sh.min_tokens)
        full = pieces_for(digest, min(natural, limit))
        finish = "length" if natural > limit else "stop"
    cut, hit = cut_at_stop(full, sh.stop)
    return cut, "stop" if hit else finish, None


def _logprobs(req: ParsedRequest, c: _Choice, pieces: list[str], chat: bool, start: int = 0,
              offset: int = 0) -> dict | None:
    if not req.shape.logprobs or c.tool is not None:
        return None
    if chat:
        return chat_logprobs(pieces, c.digest, req.shape.top_logprobs, start)
    return completion_logprobs(pieces, c.digest, req.shape.top_logprobs, start, offset)


def _usage(req: ParsedRequest, choices: list[_Choice]) -> dict[str, Any]:
    """The prompt is counted once (and its cache hit is the first sequence's: the others hit the
    blocks it brought in); completion tokens are summed over the choices, as OpenAI bills `n`."""
    completion_tokens = sum(len(c.pieces) for c in choices)
    return {"prompt_tokens": req.prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": req.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": choices[0].seq.cached_tokens}}


def group_timings(seqs: list[Sequence]) -> dict[str, float | None]:
    """Model-time figures of a request's sequences: queue until the first is admitted, TTFT of
    the first token of any, total until the last finishes, TPOT the mean of the sequences' own."""
    if len(seqs) == 1:
        return seqs[0].timings()
    each = [s.timings() for s in seqs]

    def vals(key: str) -> list[float]:
        return [t[key] for t in each if t[key] is not None]

    q, f, p, t = vals("queue_seconds"), vals("ttft_seconds"), vals("tpot_seconds"), vals("total_seconds")
    return {"queue_seconds": min(q) if q else None, "ttft_seconds": min(f) if f else None,
            "tpot_seconds": sum(p) / len(p) if p else None, "total_seconds": max(t) if t else None}


def _extensions(st: EmulatorState, choices: list[_Choice]) -> dict[str, Any]:
    seqs = [c.seq for c in choices]
    joules = sum(s.energy_joules for s in seqs)
    return {"x_energy_joules": round(joules, 6),
            "x_emulator": {**group_timings(seqs), "energy_joules": joules, "step_model_source": st.sm.source}}


async def _whole(request: web.Request, st: EmulatorState, req: ParsedRequest, choices: list[_Choice],
                 rid: str, chat: bool, *, broken: bool) -> web.StreamResponse:
    for c in choices:
        await c.seq.done.wait()
        if c.seq.error:
            raise ApiError(500, c.seq.error, code="engine_error")
    out = []
    for c in choices:
        text = "".join(c.pieces)
        choice: dict[str, Any] = {"index": c.index, "logprobs": _logprobs(req, c, c.pieces, chat),
                                  "finish_reason": c.finish_reason}
        if chat and c.tool is not None:
            choice["message"] = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                {"id": c.tool[1], "type": "function", "function": {"name": c.tool[0], "arguments": text}}]}
        elif chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        out.append(choice)
    ext = _extensions(st, choices)
    body = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": st.cfg.name, "system_fingerprint": st.fingerprint, "choices": out,
            "usage": _usage(req, choices), **ext}
    payload = orjson.dumps(body)
    headers = {"x-emulator-energy-j": f"{ext['x_emulator']['energy_joules']:.6f}",
               "x-emulator-ttft-s": f"{ext['x_emulator']['ttft_seconds'] or 0.0:.6f}"}
    if not broken:
        return web.Response(body=payload, content_type="application/json", headers=headers)
    # broken: promise the whole body, send half of it, drop the connection
    resp = web.StreamResponse(headers={**headers, "Content-Type": "application/json"})
    resp.content_length = len(payload)
    await resp.prepare(request)
    await resp.write(payload[: len(payload) // 2])
    _drop_connection(request)
    return resp


def _drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()  # flushes what was written, then closes: the client sees a truncated body




async def _stream(request: web.Request, st: EmulatorState, req: ParsedRequest, choices: list[_Choice],
                  rid: str, chat: bool, *, broken: bool) -> web.StreamResponse:
    """SSE chunks of one choice each, interleaved (OpenAI's `n` streams): each choice's tokens as
    the engine emits them, then its finish chunk; the last finish chunk carries the extensions."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "x-emulator-model": st.cfg.name})
    await resp.prepare(request)
    created = int(time.time())
    head: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                            "created": created, "model": st.cfg.name, "system_fingerprint": st.fingerprint}
    usage_null = b',"usage":null' if req.include_usage else b""

    def chunk(choice: dict[str, Any], extra: dict[str, Any] | None = None) -> bytes:
        obj = {**head, "choices": [choice]}
        if req.include_usage:
            obj["usage"] = None
        if extra:
            obj.update(extra)
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    # Plain text: a pre-rendered frame around each piece (per choice index), so the per-token cost
    # is one orjson.dumps of a string. Tool calls and logprobs render each chunk whole.
    opening = []
    frames: list[Any] = []
    for c in choices:
        i = c.index
        if c.tool is not None:
            opening.append(chunk({"index": i, "delta": {"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": c.tool[1], "type": "function", "function": {"name": c.tool[0], "arguments": ""}}]},
                "logprobs": None, "finish_reason": None}))
        elif chat:
            opening.append(chunk({"index": i, "delta": {"role": "assistant", "content": ""},
                                  "logprobs": None, "finish_reason": None}))
        frames.append(_framer(req, c, chat, chunk, head, usage_null))

    sent = [0] * len(choices)
    closed = [False] * len(choices)
    cap = BROKEN_STREAM_AFTER_CHUNKS if broken else None
    progress = choices[0].seq.progress  # one event for the whole group (Engine.submit_group)

    def ready(c: _Choice) -> int:
        upto = min(c.seq.generated, len(c.pieces))
        return min(upto, cap) if cap is not None else upto

    if opening:
        await resp.write(b"".join(opening))
    while True:
        if not any(ready(c) > sent[c.index] or (c.seq.finished and not closed[c.index]) for c in choices):
            progress.clear()
            await progress.wait()
        if any(c.seq.error for c in choices):
            _drop_connection(request)  # mid-stream failure: no [DONE]
            return resp
        out = []
        for c in choices:
            i = c.index
            upto = ready(c)
            if upto > sent[i]:
                out.append(frames[i](sent[i], upto))
                sent[i] = upto
            if cap is None and c.seq.finished and not closed[i] and sent[i] >= len(c.pieces):
                closed[i] = True
                final = {"index": i, "logprobs": None, "finish_reason": c.finish_reason}
                final.update({"delta": {}} if chat else {"text": ""})
                out.append(chunk(final, _extensions(st, choices) if all(closed) else None))
        if out:
            await resp.write(b"".join(out))
        if cap is not None and all(sent[c.index] >= min(cap, len(c.pieces)) for c in choices):
            _drop_connection(request)
            return resp
        if all(closed):
            break

    tail = b""
    if req.include_usage:
        tail = b"data: " + orjson.dumps({**head, "choices": [], "usage": _usage(req, choices),
                                         **_extensions(st, choices)}) + b"\n\n"
    await resp.write(tail + b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _framer(req: ParsedRequest, c: _Choice, chat: bool, chunk: Any, head: dict[str, Any],
            usage_null: bytes) -> Any:
    """frame(a, b): the SSE chunks of choice c's pieces a..b-1."""
    i, pieces = c.index, c.pieces
    if c.tool is not None:
        def frame(a: int, b: int) -> bytes:
            return b"".join(chunk({"index": i, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]},
                                   "logprobs": None, "finish_reason": None}) for p in pieces[a:b])
        return frame
    if req.shape.logprobs:
        offsets = [0]
        for p in pieces:
            offsets.append(offsets[-1] + len(p))

        def frame(a: int, b: int) -> bytes:
            out = []
            for k in range(a, b):
                p = pieces[k]
                lp = _logprobs(req, c, [p], chat, start=k, offset=offsets[k])
                d = {"index": i, "delta": {"content": p}} if chat else {"index": i, "text": p}
                out.append(chunk({**d, "logprobs": lp, "finish_reason": None}))
            return b"".join(out)
        return frame
    key = b'"content":' if chat else b'"text":'
    choice = {"index": i, "delta": {"content": ""}} if chat else {"index": i, "text": ""}
    prefix = b"data: " + orjson.dumps({**head, "choices": [choice]})
    prefix = prefix[: prefix.rindex(key) + len(key)]
    suffix = (b"}" if chat else b"") + b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"

    def frame(a: int, b: int) -> bytes:
        return b"".join(prefix + orjson.dumps(p) + suffix for p in pieces[a:b])
    return frame


async def _hang(request: web.Request) -> web.StreamResponse:
    """Never answer; return once the client has gone (or the handler is cancelled)."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.05)
    return web.Response(status=499)


async def _garbage(request: web.Request, req: ParsedRequest) -> web.StreamResponse:
    if not req.stream:
        return web.Response(status=200, body=b"<html><body>upstream garbage (x-emulator-fault)</body></html>",
                            content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    await resp.write(b'data: {"id": "chatcmpl-garbage", "choices": [{"delta": {"content": "oops\n\n'
                     b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


# --- embeddings -------------------------------------------------------------------------------

async def _embeddings(request: web.Request) -> web.Response:
    """POST /v1/embeddings: deterministic unit vectors (emulator/embed.py), usage.prompt_tokens from
    the served model's real tokenizer, each input prefilled by the engine (timing and energy under
    the real concurrent load; one generated step marks the end of its prefill)."""
    from tokenomy.gateway import embeddings as spec  # the same request rules as the gateway's
    from tokenomy.gateway.errors import ApiError as RequestError
    from tokenomy.tokencount import counter_for

    from .embed import encode, text_units, vector

    st = request.app[STATE]
    body = parse_json(await request.read())
    model = body.get("model")
    if not isinstance(model, str):
        raise ApiError(400, "missing required field 'model' (string)", param="model", code="invalid_type")
    if model not in st.names:
        raise ApiError(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")
    try:
        inputs = spec.embedding_inputs(body)
        spec.check_options(body, st.cfg.embedding_dimensions)
    except RequestError as exc:
        raise ApiError(exc.status, exc.message, param=exc.param, code=exc.code) from None
    counter = counter_for(st.cfg.name)
    counts = [len(x) if isinstance(x, list) else counter.count_text(x) for x in inputs]
    limit = min(st.cfg.embedding_max_input_tokens, st.engine.max_kv_tokens - 1)
    for i, n in enumerate(counts):
        if n > limit:
            raise ApiError(400, f"This model's maximum context length is {limit} tokens, however you requested "
                                f"{n} tokens in input[{i}]. Please reduce your input.", param="input",
                           code="context_length_exceeded")
    fault = st.pick_fault(request)
    _raise_error_fault(st, fault)
    if fault == "hang":
        return await _hang(request)
    if fault == "garbage":
        return web.Response(status=200, body=b"<html>upstream garbage</html>", content_type="application/json")
    seqs = [st.engine.submit(n, 1, slow=fault == "slow") for n in counts]
    try:
        for seq in seqs:
            await seq.done.wait()
            if seq.error:
                raise ApiError(500, seq.error, code="engine_error")
    finally:
        for seq in seqs:
            st.engine.cancel(seq)
    dims = body.get("dimensions") or st.cfg.embedding_dimensions
    fmt = body.get("encoding_format") or "float"
    data = [{"object": "embedding", "index": i,
             "embedding": encode(vector(x if isinstance(x, list) else text_units(x), dims), fmt)}
            for i, x in enumerate(inputs)]
    total = sum(counts)
    joules = sum(seq.energy_joules for seq in seqs)
    out = {"object": "list", "data": data, "model": st.cfg.name,
           "usage": {"prompt_tokens": total, "total_tokens": total}, "x_energy_joules": round(joules, 6)}
    return web.Response(body=orjson.dumps(out), content_type="application/json",
                        headers={"x-emulator-energy-j": f"{joules:.6f}"})


# --- application ------------------------------------------------------------------------------

def build_app(cfg: EmulatorConfig) -> web.Application:
    """The OpenAI-compatible application of one emulated deployment.

    Raises UnknownNameError (catalog) for an unknown model/accelerator. The engine task
    starts with the application (on_startup) and stops with it (on_cleanup).
    """
    state = EmulatorState(cfg)
    app = web.Application(middlewares=[_errors_middleware], client_max_size=cfg.max_body_bytes)
    app[STATE] = state
    app[ENGINE] = state.engine
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/emulator/stats", _stats)

    async def _start(app: web.Application) -> None:
        state.engine.start()

    async def _stop(app: web.Application) -> None:
        await state.engine.stop()

    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app
