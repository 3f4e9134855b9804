"""A provider's streaming answer presented as an OpenAI SSE response (what dispatch and relay read).

Dispatch and relay use an aiohttp.ClientResponse's `status`, `headers`, `read()`, `release()`,
`close()` and `content.readline()`. TranslatedStream offers the same, feeding the upstream's bytes
through the adapter's stream decoder and handing out `data: {chunk}` lines, then `data: [DONE]`
once the provider's stream ended properly (a truncated stream ends without it, which relay
reports as broken). A provider error event becomes one `data: {"error": ...}` event."""

from __future__ import annotations

from collections import deque

import orjson

from tokenomy.gateway.providers.base import ProviderError, UpstreamRequest
from tokenomy.gateway.upstream import DEFAULT_MAX_RESPONSE_BYTES, read_capped


class _Content:
    __slots__ = ("ts", "lines", "finished")

    def __init__(self, ts: "TranslatedStream") -> None:
        self.ts = ts
        self.lines: deque[bytes] = deque()
        self.finished = False

    def _emit(self, obj: dict) -> None:
        self.lines.append(b"data: " + orjson.dumps(obj) + b"\n")
        self.lines.append(b"\n")

    async def readline(self) -> bytes:
        while not self.lines:
            if self.finished:
                return b""
            ts = self.ts
            data = await ts._resp.content.readany()
            dec = ts.decoder
            if data:
                for c in dec.feed(data):
                    self._emit(c)
            else:
                for c in dec.close():
                    self._emit(c)
                if getattr(dec, "error", None) is None and getattr(dec, "done", True):
                    self.lines.append(b"data: [DONE]\n")
                    self.lines.append(b"\n")
                self.finished = True
            err: ProviderError | None = getattr(dec, "error", None)
            if err is not None:
                self._emit(err.body)
                self.finished = True
        return self.lines.popleft()


class TranslatedStream:
    def __init__(self, adapter, req: UpstreamRequest | None, resp) -> None:
        self.adapter, self.req, self._resp = adapter, req, resp
        self.status: int = resp.status if resp is not None else 400
        self.headers = resp.headers if resp is not None else {}
        self._raw: bytes | None = None
        self.decoder = adapter.stream_decoder(req) if adapter is not None else None
        self.content = _Content(self)

    @classmethod
    def rejected(cls, err: ProviderError) -> "TranslatedStream":
        """No request was sent: the body cannot be expressed for this provider."""
        ts = cls(None, None, None)
        ts.status, ts._raw = err.status, err.raw
        return ts

    async def read(self) -> bytes:
        return await self.read_capped(DEFAULT_MAX_RESPONSE_BYTES)

    async def read_capped(self, limit: int) -> bytes:
        """A non-200 answer's body (at most `limit` bytes after decoding, else UpstreamTooLarge),
        as an OpenAI-shaped error (status mapped with it)."""
        if self._raw is None:
            raw = await read_capped(self._resp, limit)
            out = self.adapter.parse_response(self.status, dict(self._resp.headers), raw, self.req)
            if isinstance(out, ProviderError):
                self.status, self._raw = out.status, out.raw
            else:
                self._raw = raw
        return self._raw

    def release(self) -> None:
        if self._resp is not None:
            self._resp.release()

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
