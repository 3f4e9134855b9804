"""Reading the lifecycle's OpenAI chat SSE stream event by event, for the inbound APIs that
frame the same stream in their own events (Anthropic Messages, OpenAI Responses).

The lifecycle always relays (and meters) an OpenAI chat stream; an inbound API's encoder
subclasses SseReframer and says what each OpenAI event becomes: `on_done` at `data: [DONE]`,
`on_error` for an error event; each completion chunk opens the answer (`_start`, once), keeps the
usage it carries and hands its first choice to `_choice`. Comments (the gateway's
`: x-tokenomy` cost tail) pass through as they are. After `on_done` or `on_error` nothing more
is framed."""

from __future__ import annotations

import orjson


class SseReframer:
    def __init__(self) -> None:
        self.buf = b""
        self.ended = False  # the stream's end (or an error) was framed: nothing more is
        self.usage: dict | None = None  # the last usage a chunk carried (the billed figures)

    def feed(self, data: bytes) -> bytes:
        """OpenAI SSE bytes in (any chunking), this API's SSE bytes out."""
        self.buf += data
        out: list[bytes] = []
        while (end := self.buf.find(b"\n\n")) >= 0:
            raw, self.buf = self.buf[:end], self.buf[end + 2:]
            if not self.ended:
                self._event(raw, out)
        return b"".join(out)

    def _event(self, raw: bytes, out: list[bytes]) -> None:
        if raw.startswith(b":"):  # a comment (the x-tokenomy tail): as it is
            out.append(raw + b"\n\n")
            return
        data = b"\n".join(line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:"))
        if not data:
            return
        if data == b"[DONE]":
            self.on_done(out)
            self.ended = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = {"error": {"message": f"invalid stream event: {data[:100]!r}"}}
        if not isinstance(obj, dict):
            return
        err = obj.get("error")
        if err is not None and not obj.get("choices"):
            self.on_error(err if isinstance(err, dict) else {"message": str(err)}, out)
            self.ended = True
            return
        self.on_chunk(obj, out)

    def on_done(self, out: list[bytes]) -> None:
        raise NotImplementedError

    def on_error(self, err: dict, out: list[bytes]) -> None:
        raise NotImplementedError

    def on_chunk(self, obj: dict, out: list[bytes]) -> None:
        self._start(out)
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        for c in obj.get("choices") or ():
            if isinstance(c, dict) and c.get("index", 0) == 0:
                self._choice(c, out)

    def _start(self, out: list[bytes]) -> None:
        raise NotImplementedError

    def _choice(self, c: dict, out: list[bytes]) -> None:
        raise NotImplementedError
