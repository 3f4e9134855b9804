"""Amazon Bedrock Converse / ConverseStream, SigV4-signed through botocore.

POST {base_url}/model/{modelId}/converse (stream: /converse-stream, AWS event-stream framing,
decoded with botocore's EventStreamBuffer). base_url: https://bedrock-runtime.{region}.amazonaws.com.
Credentials: botocore's standard chain (env AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE + ~/.aws, SSO, container / instance roles), frozen per request so
refreshable credentials renew; region: `region:` or the chain's (AWS_REGION / profile).
botocore is imported only when a bedrock deployment is configured (extra `providers`).

Request mapping (OpenAI chat -> Converse):
  system / developer -> system [{text}]; user / assistant -> messages (same-role turns merged);
  text parts -> {text}; image_url data: URLs -> {image: {format, source: {bytes}}} (http(s) image
  URLs are rejected: Converse takes bytes or S3 only); assistant tool_calls -> {toolUse}; role tool
  -> a user turn of {toolResult}; max_tokens -> inferenceConfig.maxTokens, temperature, top_p ->
  topP, stop -> stopSequences; tools -> toolConfig.tools[].toolSpec (inputSchema.json);
  tool_choice auto/required/named -> {auto}/{any}/{tool}; none -> tools kept, no choice (Converse
  has no "none"; warned); response_format json_object / json_schema -> a forced tool
  `json_response` (its input returned as the content).
  Rejected (400): n > 1, non-function tools, http(s) image URLs. Dropped with a warning: see
  translate.DROPPED_EVERYWHERE, user, parallel_tool_calls.
Response: text -> content, toolUse -> tool_calls, reasoningContent dropped; stopReason end_turn /
  stop_sequence -> stop, max_tokens -> length, tool_use -> tool_calls, guardrail_intervened /
  content_filtered -> content_filter; usage: prompt = inputTokens + cacheReadInputTokens +
  cacheWriteInputTokens (cached = cacheRead, cache_write_tokens = cacheWrite), completion = outputTokens.
Embeddings (POST /v1/embeddings): InvokeModel POST {base_url}/model/{modelId}/invoke with the
  model's own body: Titan Text Embeddings ({inputText, dimensions, normalize}: one input per
  call, so a list is split into one call per input, at most 128 per request, 4 in flight;
  usage from inputTextTokenCount, summed) or Cohere Embed ({texts, input_type search_document,
  embedding_types [float]}: up to 96 texts per call, longer lists split the same way; usage
  from the X-Amzn-Bedrock-Input-Token-Count header). Vectors come back in input order; one
  failed call fails the request with its error mapped.
Errors: x-amzn-ErrorType ThrottlingException / ModelNotReadyException -> 429, ServiceUnavailable
  -> 503, InternalServer / ModelTimeout -> 502 (retried), ValidationException -> 400
  (context_length_exceeded when the input is too long), AccessDenied -> 403.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import orjson

from tokenomy.gateway.providers import translate as tr
from tokenomy.gateway.providers.base import (MAX_FANOUT_CALLS, ProviderError, UpstreamRequest, answer_object, chunk,
                                             classify_error, embedding_list, garbage, resolved_headers,
                                             translated_usage)
from tokenomy.gateway.upstream import MAX_EVENT_BYTES, UpstreamTooLarge

JSON_TOOL = "json_response"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "guardrail_intervened": "content_filter", "content_filtered": "content_filter",
           "model_context_window_exceeded": "length"}
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
# x-amzn-ErrorType -> the HTTP status the classifier should see
_ERROR_STATUS = {"ThrottlingException": 429, "ModelNotReadyException": 429, "ServiceQuotaExceededException": 429,
                 "ServiceUnavailableException": 503, "InternalServerException": 500, "ModelTimeoutException": 500,
                 "ModelErrorException": 500, "ModelStreamErrorException": 500, "ValidationException": 400,
                 "AccessDeniedException": 403, "ResourceNotFoundException": 404}


def _image(kind: str, media: str, data: str) -> dict:
    if kind != "base64":
        raise tr.BadRequest("Bedrock Converse takes images as bytes only: send a data: URL", "messages")
    fmt = _FORMATS.get(media)
    if fmt is None:
        raise tr.BadRequest(f"image type {media} is not supported by Bedrock (png, jpeg, gif, webp)", "messages")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _content(content) -> list[dict]:
    return tr.content_parts(content, "Bedrock", text=lambda t: {"text": t}, image=_image)


def to_converse(body: dict, default_max_tokens: int) -> tuple[dict, list[str]]:
    tr.check_n(body)
    warnings = tr.common_warnings(body, extra_dropped=("user", "parallel_tool_calls"))
    texts, msgs = tr.conversation(
        body, "Bedrock", parts=_content,
        tool_call=lambda cid, name, args: {"toolUse": {"toolUseId": cid, "name": name, "input": args}},
        tool_result=lambda m: {"toolResult": {"toolUseId": m.get("tool_call_id") or "",
                                              "content": [{"text": tr.text_of(m.get("content"))}]}})
    system = [{"text": t} for t in texts]
    req: dict = {"messages": msgs}
    if system:
        req["system"] = system
    inf: dict = {"maxTokens": tr.max_tokens(body, default_max_tokens)}
    t = body.get("temperature")
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        inf["temperature"] = t
    if isinstance(body.get("top_p"), (int, float)):
        inf["topP"] = body["top_p"]
    stops = tr.stop_list(body)
    if stops:
        inf["stopSequences"] = stops
    req["inferenceConfig"] = inf
    tools = [{"toolSpec": {"name": f["name"], "description": f["description"] or f["name"],
                           "inputSchema": {"json": f["parameters"]}}} for f in tr.function_tools(body)]
    tc = tr.tool_choice(body)
    choice = None
    if tc is not None:
        if tc[0] == "none":
            warnings.append("tool_choice none: Converse has no equivalent (the model may still call a tool)")
        else:
            choice = {"auto": {"auto": {}}, "required": {"any": {}}}.get(tc[0]) or {"tool": {"name": tc[1]}}
    jf = tr.json_format(body)
    if jf is not None:
        schema = jf[1] or {"type": "object"}
        tools.append({"toolSpec": {"name": JSON_TOOL, "description": "Respond with the answer as this JSON object.",
                                   "inputSchema": {"json": schema if schema.get("type") == "object" else
                                                   {"type": "object", "properties": {"value": schema},
                                                    "required": ["value"]}}}})
        choice = {"tool": {"name": JSON_TOOL}}
    if tools:
        req["toolConfig"] = {"tools": tools, **({"toolChoice": choice} if choice else {})}
    return req, warnings


def _usage(u: object) -> object:
    """OpenAI usage of Converse's usage (None when Bedrock sent none: the gateway counts)."""
    return translated_usage(u, ("inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"), ("outputTokens",),
                            cached="cacheReadInputTokens", cache_write="cacheWriteInputTokens")


def from_converse(obj: dict, json_mode: bool, model: str) -> dict:
    text, calls = [], []
    for b in ((obj.get("output") or {}).get("message") or {}).get("content") or ():
        if "text" in b:
            text.append(b["text"])
        elif isinstance(b.get("toolUse"), dict):
            tu = b["toolUse"]
            if json_mode and tu.get("name") == JSON_TOOL:
                inp = tu.get("input") or {}
                text.append(orjson.dumps(inp.get("value", inp) if set(inp) == {"value"} else inp).decode())
            else:
                calls.append(tr.tool_call(tu.get("toolUseId", ""), tu.get("name", ""), tu.get("input") or {}))
    finish = _FINISH.get(obj.get("stopReason") or "end_turn", "stop")
    if finish == "tool_calls" and not calls:
        finish = "stop"
    return tr.completion("bedrock-" + format(int(time.time() * 1e6), "x"), model, int(time.time()),
                         "".join(text) or None, calls, finish, _usage(obj.get("usage")))


def _error(status: int, headers: dict[str, str], raw: bytes) -> ProviderError:
    etype = next((v for k, v in headers.items() if k.lower() == "x-amzn-errortype"), "") or ""
    etype = etype.split(":", 1)[0]
    try:
        obj = orjson.loads(raw)
        msg = str(obj.get("message") or obj.get("Message") or raw[:300]) if isinstance(obj, dict) else str(obj)
        etype = etype or (obj.get("__type", "") if isinstance(obj, dict) else "").rsplit("#", 1)[-1]
    except orjson.JSONDecodeError:
        msg = raw[:300].decode("utf-8", "replace")
    return classify_error(_ERROR_STATUS.get(etype, status), msg, etype)


class ConverseStreamDecoder:
    """AWS event-stream frames (botocore's EventStreamBuffer) -> OpenAI chunks; usage at `metadata`."""

    def __init__(self, json_mode: bool, model: str) -> None:
        from botocore.eventstream import EventStreamBuffer

        self.buf = EventStreamBuffer()
        self.json_mode, self.model = json_mode, model
        self.usage: object = None  # OpenAI-shaped, untrusted (bounded by the gateway)
        self.error: ProviderError | None = None
        self.done = False
        self._id, self._created = "bedrock-" + format(int(time.time() * 1e6), "x"), int(time.time())
        self._tools: dict[int, int] = {}
        self._json_blocks: set[int] = set()
        self._stopped = False
        self._pending = 0  # bytes fed since the last whole frame

    def _c(self, delta: dict, finish: str | None = None) -> dict:
        return chunk(self._id, self.model, self._created, delta, finish)

    def feed(self, data: bytes) -> list[dict]:
        from botocore.exceptions import EventStreamError  # noqa: F401  (the buffer raises its own parser errors)

        out: list[dict] = []
        try:
            self.buf.add_data(data)
            msgs = list(self.buf)
        except Exception as exc:  # botocore's ParserError subclasses: a corrupt frame
            self.error = garbage(f"corrupt AWS event-stream frame: {exc}")
            return out
        # botocore buffers a frame of up to 24 MiB; one event of ours is at most MAX_EVENT_BYTES
        self._pending = 0 if msgs else self._pending + len(data)
        if self._pending > MAX_EVENT_BYTES:
            raise UpstreamTooLarge(MAX_EVENT_BYTES, "stream event")
        for msg in msgs:
            h = msg.headers
            try:
                ev = orjson.loads(msg.payload) if msg.payload else {}
            except orjson.JSONDecodeError:
                self.error = garbage("invalid JSON in a ConverseStream event")
                return out
            if h.get(":message-type") == "exception":
                et = str(h.get(":exception-type", ""))
                self.error = classify_error(_ERROR_STATUS.get(et[:1].upper() + et[1:], 500),
                                            str(ev.get("message", et)), et)
                return out
            t = h.get(":event-type")
            if t == "messageStart":
                out.append(self._c({"role": "assistant", "content": ""}))
            elif t == "contentBlockStart":
                i = ev.get("contentBlockIndex", 0)
                tu = (ev.get("start") or {}).get("toolUse")
                if isinstance(tu, dict):
                    if self.json_mode and tu.get("name") == JSON_TOOL:
                        self._json_blocks.add(i)
                    else:
                        k = self._tools[i] = len(self._tools)
                        out.append(self._c({"tool_calls": [{"index": k, "id": tu.get("toolUseId", ""), "type": "function",
                                                            "function": {"name": tu.get("name", ""), "arguments": ""}}]}))
            elif t == "contentBlockDelta":
                i, d = ev.get("contentBlockIndex", 0), ev.get("delta") or {}
                if "text" in d:
                    out.append(self._c({"content": d["text"]}))
                elif isinstance(d.get("toolUse"), dict):
                    part = d["toolUse"].get("input", "")
                    if i in self._json_blocks:
                        out.append(self._c({"content": part}))
                    elif i in self._tools:
                        out.append(self._c({"tool_calls": [{"index": self._tools[i], "function": {"arguments": part}}]}))
            elif t == "messageStop":
                f = _FINISH.get(ev.get("stopReason") or "end_turn", "stop")
                out.append(self._c({}, "stop" if f == "tool_calls" and not self._tools else f))
                self._stopped = True
            elif t == "metadata":
                self.usage = _usage(ev.get("usage"))
                self.done = self._stopped
                if self.usage is not None:  # none: the gateway counts (and gives its own when asked)
                    out.append({**self._c({}), "choices": [], "usage": self.usage})
        return out

    def close(self) -> list[dict]:
        return []


COHERE_MAX_TEXTS = 96  # Cohere Embed on Bedrock (docs.aws.amazon.com/bedrock, model parameters, checked 2026-12)


def _embed_family(model: str) -> str | None:
    m = model.lower()
    return "cohere" if "cohere.embed" in m else "titan" if "titan-embed" in m else None


def _embed_bodies(model: str, body: dict) -> list[dict]:
    """The InvokeModel bodies of an OpenAI embeddings request (validated at admission): Titan
    embeds one inputText per call (a list is one call per input), Cohere up to 96 texts per call."""
    from tokenomy.gateway.embeddings import embedding_inputs

    inputs = embedding_inputs(body)
    if any(isinstance(x, list) for x in inputs):
        raise tr.BadRequest("Bedrock embedding models take text: send strings, not token ids", "input")
    family, dims = _embed_family(model), body.get("dimensions")
    if family == "titan":
        if len(inputs) > MAX_FANOUT_CALLS:
            raise tr.BadRequest(f"Titan Text Embeddings embeds one input per call: at most {MAX_FANOUT_CALLS} "
                                f"inputs per request here (got {len(inputs)}); split the list", "input")
        one: dict = {"normalize": True, **({"dimensions": dims} if dims else {})}
        return [{"inputText": x, **one} for x in inputs]
    if family == "cohere":
        extra: dict = {"input_type": "search_document", "embedding_types": ["float"]}
        if dims:
            extra["output_dimension"] = dims  # Embed v4; v3 models answer a 400 of their own
        return [{"texts": inputs[i:i + COHERE_MAX_TEXTS], **extra} for i in range(0, len(inputs), COHERE_MAX_TEXTS)]
    raise tr.BadRequest(f"embeddings on bedrock need a Titan Text Embeddings or Cohere Embed model (got {model!r})",
                        "model")


def _embeddings_from_bedrock(obj: object, headers: dict[str, str], model: str, encoding_format: str) -> dict | ProviderError:
    if not isinstance(obj, dict):
        return garbage("Bedrock embedding response is not an object")
    if _embed_family(model) == "titan":
        vectors, count = [obj.get("embedding")], obj.get("inputTextTokenCount")
    else:
        e = obj.get("embeddings")
        vectors = e.get("float") if isinstance(e, dict) else e
        count = headers.get("x-amzn-bedrock-input-token-count")
        count = int(count) if isinstance(count, str) and count.isdigit() else None
    return embedding_list(vectors, [count], model, encoding_format, "Bedrock")


class BedrockAdapter:
    provider = "bedrock"
    passthrough = False
    needs_prepare = False

    def __init__(self, cfg, default_max_tokens: int = 4096):
        try:
            import botocore.session
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest
        except ImportError:  # pragma: no cover - depends on the install
            from tokenomy.errors import ConfigError
            raise ConfigError(f"deployment {cfg.name}: provider bedrock needs botocore "
                              "(pip install 'tokenomy[providers]')") from None
        self.cfg, self.default_max_tokens = cfg, default_max_tokens
        self._session = botocore.session.Session()
        self.region = cfg.region or self._session.get_config_variable("region") or "us-east-1"
        self._creds = self._session.get_credentials()  # the standard chain; None: requests go unsigned (403)
        self._SigV4Auth, self._AWSRequest = SigV4Auth, AWSRequest
        self.extra_headers = resolved_headers(cfg)

    async def prepare(self) -> None:
        return None

    def _signed(self, url: str, body: bytes, stream: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.extra_headers}
        if stream:
            headers["Accept"] = "application/vnd.amazon.eventstream"
        if self._creds is None:
            return headers
        req = self._AWSRequest(method="POST", url=url, data=body, headers=headers)
        self._SigV4Auth(self._creds.get_frozen_credentials(), "bedrock", self.region).add_auth(req)
        return dict(req.headers.items())

    def build_request(self, body: dict, d, *, stream: bool, kind: str = "chat") -> UpstreamRequest | ProviderError:
        if kind == "embeddings":
            return self.embed_request(body, d)
        got = tr.translated(kind, "Bedrock", lambda: to_converse(body, self.default_max_tokens))
        if isinstance(got, ProviderError):
            return got
        req, warnings = got
        base = d.base_url or f"https://bedrock-runtime.{self.region}.amazonaws.com"
        url = f"{base}/model/{quote(d.model, safe='')}/{'converse-stream' if stream else 'converse'}"
        data = orjson.dumps(req)
        return UpstreamRequest(url, self._signed(url, data, stream), data, tuple(warnings),
                               json_mode=tr.json_format(body) is not None)

    def embed_request(self, body: dict, d) -> UpstreamRequest | ProviderError:
        try:
            bodies = _embed_bodies(d.model, body)
        except tr.BadRequest as exc:
            return exc.error
        base = d.base_url or f"https://bedrock-runtime.{self.region}.amazonaws.com"
        url = f"{base}/model/{quote(d.model, safe='')}/invoke"
        warnings = ("dropped unsupported field(s) for this provider: user",) if body.get("user") else ()
        fmt = body.get("encoding_format") or "float"
        parts = tuple(UpstreamRequest(url, self._signed(url, data, False), data, warnings, kind="embeddings",
                                      encoding_format=fmt) for data in map(orjson.dumps, bodies))
        if len(parts) == 1:
            return parts[0]
        return UpstreamRequest(url, {}, b"", warnings, kind="embeddings", encoding_format=fmt, parts=parts)

    def parse_response(self, status: int, headers: dict[str, str], raw: bytes,
                       req: UpstreamRequest | None = None) -> dict | ProviderError:
        if status >= 400:
            return _error(status, headers, raw)
        obj = answer_object(status, raw, "Bedrock response")
        if isinstance(obj, ProviderError):
            return obj
        if req is not None and req.kind == "embeddings":
            return _embeddings_from_bedrock(obj, headers, self.cfg.upstream_model, req.encoding_format)
        if "output" not in obj:
            return garbage("Bedrock response has no output")
        return from_converse(obj, req is not None and req.json_mode, self.cfg.upstream_model)

    def stream_decoder(self, req: UpstreamRequest | None = None) -> ConverseStreamDecoder:
        return ConverseStreamDecoder(req is not None and req.json_mode, self.cfg.upstream_model)
