"""Local servers speaking providers' documented wire formats (for the adapter tests).

Each fake validates what it receives against the provider's published request types (the
official SDK's TypedDicts, through pydantic) and answers with what the test scripted; the
tests also parse those answers with the official SDK, so a fake cannot drift from the format."""

from __future__ import annotations

import contextlib
import functools
import typing
from collections.abc import Iterable

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import TypeAdapter, ValidationError


@contextlib.asynccontextmanager
async def running(fake):
    """Serve a fake (anything with an aiohttp `app`) on 127.0.0.1 for the block, its `url` set."""
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


class Runtime:
    """The three attributes an adapter reads off a DeploymentRuntime (gateway/providers)."""

    def __init__(self, cfg, base_url: str):
        self.cfg, self.base_url, self.model = cfg, base_url.rstrip("/"), cfg.upstream_model


def materialise(x):
    """pydantic validates Iterable[...] lazily: walk everything so every item is checked."""
    if isinstance(x, dict):
        return {k: materialise(v) for k, v in x.items()}
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        return x
    return [materialise(v) for v in x]


@functools.cache
def _adapter(td) -> TypeAdapter:
    return TypeAdapter(td)


def check_typed(td, body: dict) -> str | None:
    """None if `body` is a valid `td` (a TypedDict) with no unknown top-level keys, else why not."""
    known = set(typing.get_type_hints(td))
    extra = set(body) - known
    if extra:
        return f"unknown fields {sorted(extra)}"
    ta = _adapter(td)  # kept alive: the lazy iterators it returns reference its schema
    try:
        materialise(ta.validate_python(body))
    except ValidationError as exc:
        return str(exc)
    return None


class FakeAnthropic:
    """POST /v1/messages. `script` is a list of (status, json or SSE event list) answered in order
    (the last one repeats)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, dict]] = []  # (headers, body)
        self.script: list[tuple[int, object]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/messages", self.messages)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        from anthropic.types.message_create_params import MessageCreateParamsNonStreaming, MessageCreateParamsStreaming

        body = orjson.loads(await request.read())
        self.requests.append((request.headers.copy(), body))
        td = MessageCreateParamsStreaming if body.get("stream") else MessageCreateParamsNonStreaming
        # The SDK's types are API version 2026-10-21; 2023-06-01 also took temperature / top_p / top_k.
        legacy = request.headers.get("anthropic-version") == "2023-06-01"
        bad = check_typed(td, {k: v for k, v in body.items() if not (legacy and k in ("temperature", "top_p", "top_k"))})
        if bad:
            return web.json_response({"type": "error", "error": {"type": "invalid_request_error",
                                                                  "message": f"schema: {bad}"}}, status=400)
        status, answer = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
        if isinstance(answer, list):  # SSE events: [(event, data), ...]
            resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            for name, data in answer:
                await resp.write(f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n")
            await resp.write_eof()
            return resp
        return web.json_response(answer, status=status)


def anthropic_message(content: list[dict], stop_reason: str = "end_turn", usage: dict | None = None,
                      model: str = "claude-sonnet-4-6") -> dict:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": usage or {"input_tokens": 12, "output_tokens": 5, "cache_creation_input_tokens": 0,
                               "cache_read_input_tokens": 0}}


def anthropic_stream(text_parts: list[str], *, tool: tuple[str, str, list[str]] | None = None,
                     usage_in: dict | None = None, output_tokens: int = 7,
                     stop_reason: str = "end_turn") -> list[tuple[str, dict]]:
    u = {"input_tokens": 20, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
         **(usage_in or {})}
    ev: list[tuple[str, dict]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": u}}),
        ("ping", {"type": "ping"}),
    ]
    i = 0
    if text_parts:
        ev.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}))
        for p in text_parts:
            ev.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": p}}))
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        i = 1
    if tool:
        tid, name, parts = tool
        ev.append(("content_block_start", {"type": "content_block_start", "index": i,
                                           "content_block": {"type": "tool_use", "id": tid, "name": name, "input": {}}}))
        for p in parts:
            ev.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "input_json_delta", "partial_json": p}}))
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    ev.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                 "usage": {"output_tokens": output_tokens}}))
    ev.append(("message_stop", {"type": "message_stop"}))
    return ev


_GEMINI_TOP = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
               "cachedContent", "labels"}


def check_gemini(body: dict) -> str | None:
    """None if `body` is a valid generateContent request per google-genai's types (extra='forbid')."""
    from google.genai import types

    extra = set(body) - _GEMINI_TOP
    if extra:
        return f"unknown fields {sorted(extra)}"
    if "contents" not in body:
        return "missing contents"
    try:
        _adapter(list[types.Content]).validate_python(body["contents"])
        if "systemInstruction" in body:
            types.Content.model_validate(body["systemInstruction"])
        if "tools" in body:
            _adapter(list[types.Tool]).validate_python(body["tools"])
        if "toolConfig" in body:
            types.ToolConfig.model_validate(body["toolConfig"])
        if "generationConfig" in body:
            types.GenerationConfig.model_validate(body["generationConfig"])
    except ValidationError as exc:
        return str(exc)
    return None


class FakeGemini:
    """generateContent / streamGenerateContent?alt=sse on the Gemini API and Vertex paths, and an
    OAuth2 token endpoint (POST /token) for Vertex credential refresh."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []  # (path_qs, headers, body)
        self.script: list[tuple[int, object]] = []
        self.tokens_issued = 0
        self.public_pem: bytes | None = None  # set: the token endpoint checks the JWT's signature
        self.app = web.Application()
        self.app.router.add_post("/v1/models/{tail:.+}", self.generate)
        self.app.router.add_post("/v1beta/models/{tail:.+}", self.generate)
        self.app.router.add_post("/v1/projects/{p}/locations/{l}/publishers/google/models/{tail:.+}", self.generate)
        self.app.router.add_post("/token", self.token)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        # a service account's signed JWT assertion (RFC 7523), as google-auth sends it
        if (form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer"
                or str(form.get("assertion", "")).count(".") != 2):
            return web.json_response({"error": "invalid_grant"}, status=400)
        if self.public_pem is not None:
            from google.auth import jwt
            claims = jwt.decode(str(form["assertion"]), certs=self.public_pem, verify=True,
                                audience="https://oauth2.googleapis.com/token")  # google-auth signs for Google
            assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform", claims
        self.tokens_issued += 1
        return web.json_response({"access_token": f"ya29.token-{self.tokens_issued}", "expires_in": 3600,
                                  "token_type": "Bearer"})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append((request.path_qs, request.headers.copy(), body))
        bad = check_gemini(body)
        if bad:
            return web.json_response({"error": {"code": 400, "message": f"schema: {bad}", "status": "INVALID_ARGUMENT"}},
                                     status=400)
        status, answer = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
        if ":streamGenerateContent" in request.path:
            if status != 200:
                return web.json_response(answer, status=status)
            resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            for ev in answer:
                await resp.write(b"data: " + orjson.dumps(ev) + b"\r\n\r\n")
            await resp.write_eof()
            return resp
        return web.json_response(answer, status=status)


def gemini_response(parts: list[dict], finish: str = "STOP", usage: dict | None = None) -> dict:
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "usageMetadata": usage or {"promptTokenCount": 8, "candidatesTokenCount": 3, "totalTokenCount": 11},
            "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"}


# ------------------------------------------------------------------ Bedrock
def eventstream_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (prelude, string headers, payload, CRC32s), as Bedrock sends."""
    import binascii
    import struct

    hb = b"".join(struct.pack("B", len(k.encode())) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
                  for k, v in headers.items())
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    msg = prelude + hb + payload
    return msg + struct.pack(">I", binascii.crc32(msg) & 0xFFFFFFFF)


def bedrock_event(event_type: str, payload: dict) -> bytes:
    return eventstream_frame({":event-type": event_type, ":content-type": "application/json",
                              ":message-type": "event"}, orjson.dumps(payload))


def check_converse(model_id: str, body: dict, stream: bool) -> str | None:
    """None if body is a valid Converse(Stream) request per botocore's bedrock-runtime service model."""
    import botocore.session
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    shape = model.operation_model("ConverseStream" if stream else "Converse").input_shape
    try:
        validate_parameters({**body, "modelId": model_id}, shape)
    except ParamValidationError as exc:
        return str(exc)
    return None


class FakeBedrock:
    """POST /model/{modelId}/converse and /converse-stream (event-stream). `script` as FakeAnthropic:
    (status, json) or (200, [(event_type, payload), ...]); errors: (status, (error_type, message))."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, object, dict]] = []
        self.script: list[tuple[int, object]] = []
        self.app = web.Application()
        self.app.router.add_post("/model/{model_id}/converse", self.converse)
        self.app.router.add_post("/model/{model_id}/converse-stream", self.converse)

    async def converse(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append((request.raw_path, request.headers.copy(), body))
        stream = request.path.endswith("-stream")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/") or "/bedrock/aws4_request" not in auth:
            return web.json_response({"message": "The security token included in the request is invalid."}, status=403,
                                     headers={"x-amzn-ErrorType": "UnrecognizedClientException:http://internal.amazon.com/"})
        bad = check_converse(request.match_info["model_id"], body, stream)
        if bad:
            return web.json_response({"message": f"schema: {bad}"}, status=400,
                                     headers={"x-amzn-ErrorType": "ValidationException:http://internal.amazon.com/"})
        status, answer = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
        if status != 200:
            etype, msg = answer
            return web.json_response({"message": msg}, status=status,
                                     headers={"x-amzn-ErrorType": f"{etype}:http://internal.amazon.com/coral/"})
        if stream:
            resp = web.StreamResponse(status=200, headers={"content-type": "application/vnd.amazon.eventstream"})
            await resp.prepare(request)
            for et, payload in answer:
                if et.startswith("!"):  # an exception frame
                    await resp.write(eventstream_frame({":exception-type": et[1:], ":content-type": "application/json",
                                                        ":message-type": "exception"}, orjson.dumps(payload)))
                else:
                    await resp.write(bedrock_event(et, payload))
            await resp.write_eof()
            return resp
        return web.json_response(answer)


def converse_response(content: list[dict], stop: str = "end_turn", usage: dict | None = None) -> dict:
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
            "usage": usage or {"inputTokens": 11, "outputTokens": 4, "totalTokens": 15},
            "metrics": {"latencyMs": 120}}
