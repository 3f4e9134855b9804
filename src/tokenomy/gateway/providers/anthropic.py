"""Anthropic Messages API (POST {base_url}/v1/messages), both ways, unary and SSE.

Auth: `x-api-key: $api_key_env` + `anthropic-version: 2026-10-21` (the version the official SDK
2.x sends; override with a configured `anthropic-version` header, add `anthropic-beta` the same way).
API version 2026-10-21 rejects temperature / top_p / top_k (HTTP 400 even at default values), so
they are dropped with a warning; with `anthropic-version: 2023-06-01` configured they are sent
(temperature clamped to Anthropic's 0..1).

Request mapping (OpenAI chat -> Messages):
  system / developer messages -> `system` (text blocks, in order); user / assistant turns ->
  `messages` (consecutive same-role turns merged, as the API requires alternation); text and
  image_url parts (https URL -> url source, data: URL -> base64 source); assistant tool_calls ->
  tool_use blocks; role tool -> a user turn of tool_result blocks; max_tokens /
  max_completion_tokens -> max_tokens (Anthropic requires it: default = the gateway's
  defaults.max_tokens, 4096 unless configured, so the budget reservation covers it); stop ->
  stop_sequences; temperature / top_p (2023-06-01 only, see above); tools ->
  {name, description, input_schema}; tool_choice auto/none/required/named -> auto/none/any/tool;
  parallel_tool_calls false -> disable_parallel_tool_use; response_format json_object /
  json_schema -> a forced tool `json_response` whose input schema is the schema (its input is
  returned as the message content, finish_reason stop); user -> metadata.user_id.
  Rejected (400): n > 1, non-function tools. Dropped with a warning: see translate.DROPPED_EVERYWHERE.
Native relay (build_native, UpstreamRequest.native): an inbound /v1/messages request sent as the
  client wrote it; the answer is translated for metering and also carried as `x_native` (the
  message; for streams every event, see AnthropicStreamDecoder) for gateway/messages to return.
Response: text blocks -> content, tool_use -> tool_calls, thinking blocks dropped; stop_reason
  end_turn/stop_sequence -> stop, max_tokens -> length, tool_use -> tool_calls, refusal ->
  content_filter; usage: prompt = input + cache_creation + cache_read (cached = cache_read,
  cache_write_tokens = cache_creation).
"""

from __future__ import annotations

import time

import orjson

from tokenomy.gateway.providers import translate as tr
from tokenomy.gateway.providers.base import (ProviderError, SseSplitter, UpstreamRequest, answer_object, chunk,
                                             classify_error, garbage, json_headers,
                                             translated_usage)

ANTHROPIC_VERSION = "2026-10-21"  # anthropic SDK 2.x _constants.ANTHROPIC_API_VERSION
LEGACY_VERSION = "2023-06-01"  # the last version that takes sampling parameters
JSON_TOOL = "json_response"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "refusal": "content_filter", "pause_turn": "stop", "model_context_window_exceeded": "length"}


def _content_blocks(content) -> list[dict]:
    return tr.content_parts(
        content, "Anthropic", text=lambda t: {"type": "text", "text": t},
        image=lambda kind, media, data: {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}
                                         if kind == "base64" else {"type": "url", "url": data}})


def to_messages(body: dict) -> tuple[list[dict], list[dict]]:
    """(system blocks, alternating messages) of an OpenAI chat body."""
    system, msgs = tr.conversation(
        body, "Anthropic", parts=_content_blocks,
        tool_call=lambda cid, name, args: {"type": "tool_use", "id": cid, "name": name, "input": args},
        tool_result=lambda m: {"type": "tool_result", "tool_use_id": m.get("tool_call_id") or "",
                               "content": tr.text_of(m.get("content"))})
    return [{"type": "text", "text": t} for t in system], msgs


def to_anthropic(body: dict, model: str, default_max_tokens: int, stream: bool,
                 sampling: bool = False) -> tuple[dict, list[str]]:
    """The Messages request for an OpenAI chat body, and the warnings (dropped fields)."""
    tr.check_n(body)
    warnings = tr.common_warnings(body)
    system, msgs = to_messages(body)
    req: dict = {"model": model, "max_tokens": tr.max_tokens(body, default_max_tokens), "messages": msgs}
    if system:
        req["system"] = system
    stops = tr.stop_list(body)
    if stops:
        req["stop_sequences"] = stops
    t = body.get("temperature")
    if not sampling:
        gone = [k for k in ("temperature", "top_p") if body.get(k) is not None]
        if gone:
            warnings.append(f"dropped {', '.join(gone)}: Anthropic API {ANTHROPIC_VERSION} has no sampling parameters")
    else:
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            if t > 1:
                warnings.append(f"temperature {t:g} clamped to 1 (Anthropic's maximum)")
            req["temperature"] = min(float(t), 1.0)
        if isinstance(body.get("top_p"), (int, float)):
            req["top_p"] = body["top_p"]
    tools = [{"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}
             for f in tr.function_tools(body)]
    tc = tr.tool_choice(body)
    jf = tr.json_format(body)
    choice: dict | None = None
    if tc is not None:
        choice = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}.get(tc[0]) \
            or {"type": "tool", "name": tc[1]}
    if jf is not None:
        schema = jf[1] or {"type": "object"}
        tools.append({"name": JSON_TOOL, "description": "Respond with the answer as this JSON object.",
                      "input_schema": schema if schema.get("type") == "object" else
                      {"type": "object", "properties": {"value": schema}, "required": ["value"]}})
        choice = {"type": "tool", "name": JSON_TOOL}
    if tools:
        req["tools"] = tools
    if choice is not None:
        if body.get("parallel_tool_calls") is False and choice["type"] in ("auto", "any", "tool"):
            choice["disable_parallel_tool_use"] = True
        req["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        req["metadata"] = {"user_id": body["user"]}
    if stream:
        req["stream"] = True
    return req, warnings


def _usage(u: object) -> object:
    """OpenAI usage of Anthropic's usage (None when it sent none: the gateway counts)."""
    return translated_usage(u, ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"),
                            ("output_tokens",), cached="cache_read_input_tokens",
                            cache_write="cache_creation_input_tokens")


def from_anthropic(obj: dict, json_mode: bool) -> dict:
    text, calls = [], []
    for b in obj.get("content") or ():
        if not isinstance(b, dict):
            continue
        if b.get("type") == "text":
            text.append(str(b.get("text", "")))
        elif b.get("type") == "tool_use":
            if json_mode and b.get("name") == JSON_TOOL:
                inp = b.get("input") or {}
                text.append(orjson.dumps(inp.get("value", inp) if set(inp) == {"value"} else inp).decode())
            else:
                calls.append(tr.tool_call(b.get("id", ""), b.get("name", ""), b.get("input") or {}))
    finish = _FINISH.get(obj.get("stop_reason") or "end_turn", "stop")
    if json_mode and finish == "tool_calls" and not calls:
        finish = "stop"
    return tr.completion(obj.get("id", ""), obj.get("model", ""), int(time.time()), "".join(text) or None,
                         calls, finish, _usage(obj.get("usage")))


class AnthropicStreamDecoder:
    """Anthropic SSE (message_start, content_block_start/delta/stop, message_delta, message_stop,
    ping, error) -> OpenAI chunks; the usage chunk (choices: []) at message_stop."""

    def __init__(self, json_mode: bool, native: bool = False) -> None:
        self.sse = SseSplitter()
        self.json_mode = json_mode
        # native (a /v1/messages request relayed as it is): every Anthropic event also rides on an
        # OpenAI chunk as `x_native` [[event, payload]] so the inbound encoder re-emits the
        # upstream's own events; message_delta / message_stop ride on the usage chunk, which the
        # gateway sends only once the request's event is committed.
        self.native = native
        self._held: list = []
        self.usage: object = None  # OpenAI-shaped, untrusted (bounded by the gateway)
        self.error: ProviderError | None = None
        self._u: dict = {}
        self._id, self._model, self._created = "", "", int(time.time())
        self._tool_index: dict[int, int] = {}  # content block index -> OpenAI tool_calls index
        self._json_blocks: set[int] = set()
        self._finish: str | None = None
        self.done = False  # message_stop seen: the stream ended properly

    def _c(self, delta: dict, finish: str | None = None) -> dict:
        return chunk(self._id, self._model, self._created, delta, finish)

    def feed(self, data: bytes) -> list[dict]:
        out: list[dict] = []
        for name, payload in self.sse.feed(data):
            try:
                ev = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.error = garbage(f"invalid JSON in Anthropic stream event: {payload[:100]!r}")
                return out
            t = ev.get("type", name) if isinstance(ev, dict) else name
            if not self.native:
                self._event(t, ev, out)
                continue
            mark = len(out)
            self._event(t, ev, out)
            if self.error is not None:
                return out
            if t in ("message_delta", "message_stop"):
                self._held.append([name or t, ev])
                if t == "message_stop":
                    out[-1]["x_native"] = self._held
                continue
            if len(out) == mark:  # no OpenAI chunk of its own (ping, block stops, thinking): a carrier
                out.append(self._c({}))
            out[mark]["x_native"] = [[name or t, ev]]
        return out

    def _event(self, t: str, ev, out: list[dict]) -> None:
        if not isinstance(ev, dict):
            return
        if t == "message_start":
            m = ev.get("message")
            m = m if isinstance(m, dict) else {}
            self._id, self._model = str(m.get("id", "")), str(m.get("model", ""))
            if isinstance(m.get("usage"), dict):
                self._u.update(m["usage"])
            out.append(self._c({"role": "assistant", "content": ""}))
        elif t == "content_block_start":
            b, i = ev.get("content_block") or {}, ev.get("index", 0)
            if b.get("type") == "tool_use":
                if self.json_mode and b.get("name") == JSON_TOOL:
                    self._json_blocks.add(i)
                    return
                k = self._tool_index[i] = len(self._tool_index)
                out.append(self._c({"tool_calls": [{"index": k, "id": b.get("id", ""), "type": "function",
                                                    "function": {"name": b.get("name", ""), "arguments": ""}}]}))
            elif b.get("type") == "text" and b.get("text"):
                out.append(self._c({"content": b["text"]}))
        elif t == "content_block_delta":
            d, i = ev.get("delta") or {}, ev.get("index", 0)
            if d.get("type") == "text_delta":
                out.append(self._c({"content": d.get("text", "")}))
            elif d.get("type") == "input_json_delta":
                if i in self._json_blocks:
                    out.append(self._c({"content": d.get("partial_json", "")}))
                elif i in self._tool_index:
                    out.append(self._c({"tool_calls": [{"index": self._tool_index[i],
                                                        "function": {"arguments": d.get("partial_json", "")}}]}))
            # thinking_delta / signature_delta / citations: not part of the OpenAI chat shape
        elif t == "message_delta":
            u = ev.get("usage")
            if isinstance(u, dict):
                self._u.update({k: v for k, v in u.items() if v is not None})
            sr = (ev.get("delta") or {}).get("stop_reason")
            if sr:
                f = _FINISH.get(sr, "stop")
                self._finish = "stop" if f == "tool_calls" and not self._tool_index else f
                out.append(self._c({}, self._finish))
        elif t == "message_stop":
            self.done = True
            self.usage = _usage(self._u)
            # None: no usage came (the gateway counts); native still needs the chunk as the carrier
            # of message_delta / message_stop (held by the inbound encoder until [DONE])
            if self.usage is not None or self.native:
                out.append({**self._c({}), "choices": [], "usage": self.usage})
        elif t == "error":
            e = ev.get("error") or {}
            self.error = classify_error(529 if e.get("type") == "overloaded_error" else 500,
                                        e.get("message", "stream error"), e.get("type"))

    def close(self) -> list[dict]:
        return []


class AnthropicAdapter:
    provider = "anthropic"
    passthrough = False
    needs_prepare = False

    def __init__(self, cfg, default_max_tokens: int = 4096):
        self.cfg = cfg
        self.default_max_tokens = default_max_tokens
        self.headers = json_headers(cfg, "x-api-key", defaults={"anthropic-version": ANTHROPIC_VERSION})
        self.sampling = self.headers["anthropic-version"] == LEGACY_VERSION
        self._version_configured = any(k.lower() == "anthropic-version" for k in cfg.headers)

    async def prepare(self) -> None:
        return None

    def build_request(self, body: dict, d, *, stream: bool, kind: str = "chat") -> UpstreamRequest | ProviderError:
        got = tr.translated(kind, "Anthropic", lambda: to_anthropic(body, d.model, self.default_max_tokens, stream,
                                                                    self.sampling))
        if isinstance(got, ProviderError):
            return got
        req, warnings = got
        base = d.base_url.removesuffix("/v1")
        return UpstreamRequest(base + "/v1/messages", self.headers, orjson.dumps(req), tuple(warnings),
                               json_mode=tr.json_format(body) is not None)

    def build_native(self, body: dict, d, *, stream: bool, client_headers: dict[str, str] | None = None) -> UpstreamRequest:
        """A /v1/messages request relayed as the client sent it (validated at admission: it also
        translates to chat, so a fallback to another provider stays possible), `model` set to the
        deployment's. anthropic-version: the configured one, else the client's, else ours; the
        client's anthropic-beta is added to the configured one. Sampling fields (temperature,
        top_p, top_k) are sent only on 2023-06-01, which takes them (later versions answer them
        with a 400): else dropped with a warning, as on the translated path."""
        ch = client_headers or {}
        headers = self.headers
        if ch.get("anthropic-version") and not self._version_configured:
            headers = {**headers, "anthropic-version": ch["anthropic-version"]}
        if ch.get("anthropic-beta"):
            mine = headers.get("anthropic-beta")
            headers = {**headers, "anthropic-beta": f"{mine},{ch['anthropic-beta']}" if mine else ch["anthropic-beta"]}
        req = {**body, "model": d.model}
        if stream:
            req["stream"] = True
        else:
            req.pop("stream", None)
        warnings: tuple[str, ...] = ()
        if headers.get("anthropic-version") != LEGACY_VERSION:
            gone = [k for k in ("temperature", "top_p", "top_k") if req.pop(k, None) is not None]
            if gone:
                warnings = (f"dropped {', '.join(gone)}: Anthropic API {headers.get('anthropic-version')} "
                            "has no sampling parameters",)
        return UpstreamRequest(d.base_url.removesuffix("/v1") + "/v1/messages", headers, orjson.dumps(req), warnings,
                               native=True)

    def parse_response(self, status: int, headers: dict[str, str], raw: bytes,
                       req: UpstreamRequest | None = None) -> dict | ProviderError:
        obj = answer_object(status, raw, "Anthropic response")
        if isinstance(obj, ProviderError):
            return obj
        if obj.get("type") != "message" or not isinstance(obj.get("content", []), list):
            return garbage("Anthropic response is not a message object")
        if req is not None and req.native:
            out = from_anthropic(obj, False)
            out["x_native"] = obj  # the message as Anthropic sent it (gateway/messages answers with it)
            return out
        return from_anthropic(obj, req is not None and req.json_mode)

    def stream_decoder(self, req: UpstreamRequest | None = None) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(req is not None and req.json_mode, native=req is not None and req.native)
