"""One streaming chat request, timed the way vLLM's `benchmark_serving` times it.

TTFT is the time from sending the request to the first chunk carrying generated text; each
later text chunk adds one inter-token latency (ITL) gap; E2E is the time to the end of the
stream. Output tokens come from the final usage chunk (`stream_options.include_usage`) when
the server sends one, else they are the number of text chunks (one token per chunk, as
vLLM, TGI and llama.cpp stream).

Errors are classified into kinds: connect, http_4xx, http_5xx, timeout, broken_stream
(the connection ended before `[DONE]`/a finish reason, or an error event came instead), bad_json (a chunk or body that is
not the expected JSON).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

ERROR_KINDS = ("connect", "http_4xx", "http_5xx", "timeout", "broken_stream", "bad_json")


@dataclass(slots=True)
class RequestResult:
    index: int
    prompt_tokens: int  # what we sized (server usage replaces it when present)
    max_tokens: int
    start_s: float = 0.0  # monotonic send time
    ok: bool = False
    error_kind: str | None = None
    error: str | None = None
    http_status: int | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    usage_reported: bool = False
    text: str = ""
    messages: list[dict[str, str]] | None = None

    @property
    def tpot_s(self) -> float | None:
        """vLLM: (e2e - ttft) / (output_tokens - 1), for outputs of more than one token."""
        if self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


class _StreamError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _fail(result: RequestResult, kind: str, message: str) -> RequestResult:
    result.ok, result.error_kind, result.error = False, kind, message[:300]
    return result


def chat_body(model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    # ignore_eos/min_tokens: vLLM (and some others) then generate exactly max_tokens; servers
    # that do not know them ignore them.
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, "temperature": 0.0,
            "ignore_eos": True, "min_tokens": max_tokens}


async def stream_chat(session: aiohttp.ClientSession, url: str, body: dict[str, Any], *, headers: dict[str, str],
                      timeout_s: float, index: int = 0, prompt_tokens: int = 0,
                      keep_text: bool = False) -> RequestResult:
    """POST `body` (stream=True) to `url` and time it; never raises for server behaviour."""
    result = RequestResult(index=index, prompt_tokens=prompt_tokens, max_tokens=int(body.get("max_tokens") or 0))
    if keep_text:
        result.messages = body.get("messages")
    result.start_s = start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
                result.http_status = resp.status
                if resp.status >= 400:
                    raw = await resp.read()
                    kind = "http_5xx" if resp.status >= 500 else "http_4xx"
                    return _fail(result, kind, f"HTTP {resp.status}: {_error_message(raw)}")
                await _read_stream(resp, result, start, keep_text)
    except _StreamError as exc:
        return _fail(result, exc.kind, str(exc))
    except TimeoutError:
        return _fail(result, "timeout", f"no complete response within {timeout_s:g} s")
    except aiohttp.ClientConnectorError as exc:
        return _fail(result, "connect", f"cannot connect: {exc.os_error or exc}")
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        if result.http_status is None:
            return _fail(result, "connect", f"connection failed: {exc}")
        return _fail(result, "broken_stream", f"stream broken after {result.output_tokens} tokens: {exc}")
    except aiohttp.ClientResponseError as exc:
        return _fail(result, "bad_json", f"bad HTTP response: {exc.message}")
    except ValueError as exc:  # e.g. an SSE line longer than aiohttp's line limit
        return _fail(result, "bad_json", f"unreadable stream: {exc}")
    except aiohttp.ClientError as exc:
        return _fail(result, "connect", f"{type(exc).__name__}: {exc}")
    return result


def _error_message(raw: bytes) -> str:
    try:
        obj = orjson.loads(raw)
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(obj, dict) and obj.get("detail"):
            return str(obj["detail"])
    except (orjson.JSONDecodeError, TypeError):
        pass
    return raw[:200].decode("utf-8", "replace").strip() or "(empty body)"


async def _read_stream(resp: aiohttp.ClientResponse, result: RequestResult, start: float, keep_text: bool) -> None:
    ctype = resp.headers.get("Content-Type", "")
    if "text/event-stream" not in ctype:
        raw = await resp.read()
        raise _StreamError("bad_json", f"expected an SSE stream, got {ctype or 'no content type'}: "
                                       f"{raw[:120].decode('utf-8', 'replace')}")
    chunks = 0
    last = start
    finished = done = False
    pieces: list[str] = []
    async for raw_line in resp.content:
        line = raw_line.strip()
        if not line or line.startswith(b":"):
            continue
        if not line.startswith(b"data:"):
            continue  # event:/id:/retry: fields
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _StreamError("bad_json", f"chunk is not JSON: {data[:120].decode('utf-8', 'replace')}") from None
        if not isinstance(obj, dict):
            raise _StreamError("bad_json", "chunk is not a JSON object")
        if "error" in obj and not obj.get("choices"):
            # an error event instead of [DONE] (the gateway, vLLM): the stream failed mid-way
            raise _StreamError("broken_stream", f"error event in stream after {chunks} text chunks: "
                                                f"{_error_message(data)}")
        now = time.perf_counter()
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            result.output_tokens = usage["completion_tokens"]
            result.usage_reported = True
            if isinstance(usage.get("prompt_tokens"), int):
                result.prompt_tokens = usage["prompt_tokens"]
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                raise _StreamError("bad_json", "a choice is not a JSON object")
            delta = choice.get("delta") or {}
            text = None
            if isinstance(delta, dict):  # reasoning models stream their thinking as generated tokens too
                text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
            if text is None:
                text = choice.get("text")  # completions-style chunks
            if text is not None and not isinstance(text, str):
                raise _StreamError("bad_json", "a chunk's content is not a string")
            if text:
                if result.ttft_s is None:
                    result.ttft_s = now - start
                else:
                    result.itl_s.append(now - last)
                last = now
                chunks += 1
                if not result.usage_reported:
                    result.output_tokens = chunks
                if keep_text:
                    pieces.append(text)
            if choice.get("finish_reason"):
                finished = True
    if not done and not finished:
        raise _StreamError("broken_stream", f"stream ended without [DONE] after {chunks} text chunks")
    result.e2e_s = time.perf_counter() - start
    if not result.usage_reported:
        result.output_tokens = chunks
    if result.ttft_s is None:
        result.ttft_s = result.e2e_s  # no text at all: the first "token" is the end
    result.text = "".join(pieces)
    result.ok = True
