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
from .textgen import (chat_logprobs, completion_logprobs, cut_at_stop, json_pieces, natural_output_tokens, pieces_for,
                      request_digest)

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
    pieces, finish_reason, tool = _shaped(req, digest, limit)
    hashes = prompt_block_hashes(req.canonical_prompt, st.engine.block_tokens) if st.cfg.prefix_caching else ()
    seq = st.engine.submit(req.prompt_tokens, len(pieces), slow=fault == "slow", block_hashes=hashes)
    ids = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    look = _Look(tool, digest)
    try:
        if req.stream:
            return await _stream(request, st, req, seq, pieces, ids, finish_reason, chat,
                                 broken=fault == "broken-stream", look=look)
        return await _whole(request, st, req, seq, pieces, ids, finish_reason, chat,
                            broken=fault == "broken-stream", look=look)
    finally:
        st.engine.cancel(seq)  # no-op when finished; frees the batch slot if the client left


class _Look:
    """How the answer is rendered: as a tool call (name, call id) or text; digest seeds logprobs."""

    __slots__ = ("tool", "digest")

    def __init__(self, tool: tuple[str, str] | None, digest: int):
        self.tool, self.digest = tool, digest


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


def _logprobs(req: ParsedRequest, look: _Look, pieces: list[str], chat: bool, start: int = 0,
              offset: int = 0) -> dict | None:
    if not req.shape.logprobs or look.tool is not None:
        return None
    if chat:
        return chat_logprobs(pieces, look.digest, req.shape.top_logprobs, start)
    return completion_logprobs(pieces, look.digest, req.shape.top_logprobs, start, offset)


def _usage(req: ParsedRequest, completion_tokens: int, seq: Sequence) -> dict[str, Any]:
    return {"prompt_tokens": req.prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": req.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": seq.cached_tokens}}


def _extensions(st: EmulatorState, seq: Sequence) -> dict[str, Any]:
    return {"x_energy_joules": round(seq.energy_joules, 6),
            "x_emulator": {**seq.timings(), "energy_joules": seq.energy_joules,
                           "step_model_source": st.sm.source}}


async def _whole(request: web.Request, st: EmulatorState, req: ParsedRequest, seq: Sequence,
                 pieces: list[str], rid: str, finish_reason: str, chat: bool, *, broken: bool,
                 look: _Look) -> web.StreamResponse:
    await seq.done.wait()
    if seq.error:
        raise ApiError(500, seq.error, code="engine_error")
    text = "".join(pieces)
    choice: dict[str, Any] = {"index": 0, "logprobs": _logprobs(req, look, pieces, chat), "finish_reason": finish_reason}
    if chat and look.tool is not None:
        choice["message"] = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
            {"id": look.tool[1], "type": "function", "function": {"name": look.tool[0], "arguments": text}}]}
    elif chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    body = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": st.cfg.name, "system_fingerprint": st.fingerprint, "choices": [choice],
            "usage": _usage(req, len(pieces), seq), **_extensions(st, seq)}
    payload = orjson.dumps(body)
    headers = {"x-emulator-energy-j": f"{seq.energy_joules:.6f}",
               "x-emulator-ttft-s": f"{seq.timings()['ttft_seconds'] or 0.0:.6f}"}
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


async def _stream(request: web.Request, st: EmulatorState, req: ParsedRequest, seq: Sequence,
                  pieces: list[str], rid: str, finish_reason: str, chat: bool, *, broken: bool,
                  look: _Look) -> web.StreamResponse:
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

    # Pre-rendered frame around each piece: the per-token cost is one orjson.dumps of a string.
    # Tool calls and logprobs render each chunk whole (frame()).
    frame = None
    if look.tool is not None:
        await resp.write(chunk({"index": 0, "delta": {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": look.tool[1], "type": "function", "function": {"name": look.tool[0], "arguments": ""}}]},
            "logprobs": None, "finish_reason": None}))

        def frame(i: int, p: str) -> bytes:
            return chunk({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]},
                          "logprobs": None, "finish_reason": None})
    elif req.shape.logprobs:
        offsets = [0]
        for p in pieces:
            offsets.append(offsets[-1] + len(p))

        def frame(i: int, p: str) -> bytes:
            lp = _logprobs(req, look, [p], chat, start=i, offset=offsets[i])
            c = {"index": 0, "delta": {"content": p}} if chat else {"index": 0, "text": p}
            return chunk({**c, "logprobs": lp, "finish_reason": None})
    if frame is not None:
        if chat and look.tool is None:
            await resp.write(chunk({"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}))
        prefix = suffix = b""
    elif chat:
        prefix = b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": {"content": ""}}]})
        prefix = prefix[: prefix.rindex(b'"content":') + len(b'"content":')]
        suffix = b'},"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
        await resp.write(chunk({"index": 0, "delta": {"role": "assistant", "content": ""},
                                "logprobs": None, "finish_reason": None}))
    else:
        prefix = b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "text": ""}]})
        prefix = prefix[: prefix.rindex(b'"text":') + len(b'"text":')]
        suffix = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"

    sent = 0
    while True:
        if sent >= seq.generated and not seq.finished:
            seq.progress.clear()
            await seq.progress.wait()
        if seq.error:
            _drop_connection(request)  # mid-stream failure: no [DONE]
            return resp
        upto = seq.generated
        if broken:
            upto = min(upto, BROKEN_STREAM_AFTER_CHUNKS)
        if upto > sent:
            if frame is not None:
                await resp.write(b"".join(frame(i, pieces[i]) for i in range(sent, min(upto, len(pieces)))))
            else:
                await resp.write(b"".join(prefix + orjson.dumps(p) + suffix for p in pieces[sent:upto]))
            sent = upto
        if broken and sent >= min(BROKEN_STREAM_AFTER_CHUNKS, len(pieces)):
            _drop_connection(request)
            return resp
        if seq.finished and sent >= len(pieces):
            break

    ext = _extensions(st, seq)
    final = {"index": 0, "logprobs": None, "finish_reason": finish_reason}
    final.update({"delta": {}} if chat else {"text": ""})
    out = chunk(final, ext)
    if req.include_usage:
        out += b"data: " + orjson.dumps({**head, "choices": [], "usage": _usage(req, len(pieces), seq), **ext}) + b"\n\n"
    await resp.write(out + b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


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
