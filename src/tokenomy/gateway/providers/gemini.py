"""Google Gemini (generateContent / streamGenerateContent) and Vertex AI (the same wire format on
Vertex URLs, google-auth credentials).

Gemini API: POST {base_url}/v1/models/{model}:generateContent (`api_version: v1beta` for beta), `x-goog-api-key: $api_key_env`;
streams: :streamGenerateContent?alt=sse (SSE, one GenerateContentResponse per event).
Vertex: POST {base_url}/v1/projects/{project}/locations/{region}/publishers/google/models/{model}
:generateContent, `Authorization: Bearer <token>` from google-auth's default credential chain
(GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata server), refreshed before it expires.
base_url default for Vertex: https://{region}-aiplatform.googleapis.com (region default us-central1).

Request mapping (OpenAI chat -> Gemini):
  system / developer -> systemInstruction; user -> role user; assistant -> role model (text and
  functionCall parts); tool -> a user turn of functionResponse parts (named after the call they
  answer); text parts; image_url data: URLs -> inlineData, http(s) URLs -> fileData (mime type from
  the extension); max_tokens / max_completion_tokens -> maxOutputTokens; temperature, top_p
  (topP), stop (stopSequences), n (candidateCount), seed, presence_penalty, frequency_penalty ->
  generationConfig; response_format json_object -> responseMimeType application/json, json_schema
  -> + responseJsonSchema; tools -> one functionDeclarations tool (parametersJsonSchema);
  tool_choice auto/none/required/named -> functionCallingConfig AUTO/NONE/ANY/ANY+allowedFunctionNames.
  Rejected (400): non-function tools. Dropped with a warning: the rest of translate.DROPPED_EVERYWHERE
  (logprobs, logit_bias, ...), parallel_tool_calls, user.
Embeddings (POST /v1/embeddings): Gemini API batchEmbedContents; Vertex :predict (text-embedding-*,
  gemini-embedding-001: one instance per call) or :embedContent (newer Gemini embedding models),
  lists fanned out beyond one call's limits; see the adapters' embed_request.
Response: text parts -> content (thought parts dropped), functionCall -> tool_calls; finishReason
  STOP -> stop (tool_calls when calls were made), MAX_TOKENS -> length, SAFETY / RECITATION /
  BLOCKLIST / PROHIBITED_CONTENT / SPII -> content_filter; usage: prompt = promptTokenCount
  (cached = cachedContentTokenCount), completion = candidatesTokenCount + thoughtsTokenCount
  (reasoning = thoughtsTokenCount).
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import time

import orjson

from tokenomy.gateway.providers import translate as tr
from tokenomy.gateway.providers.base import (MAX_FANOUT_CALLS, ProviderError, SseSplitter, UpstreamRequest, answer_object,
                                             chunk, classify_error, embedding_list, garbage, json_headers,
                                             translated_usage)

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
           "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
           "IMAGE_SAFETY": "content_filter"}
_KNOWN_HERE = ("seed", "presence_penalty", "frequency_penalty")


def _image(kind: str, media: str, data: str) -> dict:
    if kind == "base64":
        return {"inlineData": {"mimeType": media, "data": data}}
    return {"fileData": {"mimeType": mimetypes.guess_type(data.split("?")[0])[0] or "image/jpeg", "fileUri": data}}


def _parts(content) -> list[dict]:
    return tr.content_parts(content, "Gemini", text=lambda t: {"text": t}, image=_image)


def to_gemini(body: dict) -> tuple[dict, list[str]]:
    warnings = tr.common_warnings({k: v for k, v in body.items() if k not in _KNOWN_HERE},
                                  extra_dropped=("parallel_tool_calls", "user"))
    call_names: dict[str, str] = {}  # a functionResponse is named after the call it answers

    def call(cid: str, name: str, args: dict) -> dict:
        call_names[cid] = name
        return {"functionCall": {"name": name, "args": args}}

    def result(m: dict) -> dict:
        name = call_names.get(m.get("tool_call_id") or "") or m.get("name") or "tool"
        return {"functionResponse": {"name": name, "response": {"content": tr.text_of(m.get("content"))}}}

    texts, contents = tr.conversation(body, "Gemini", parts=_parts, tool_call=call, tool_result=result,
                                      model_role="model", key="parts")
    system = [{"text": t} for t in texts]
    req: dict = {"contents": contents}
    if system:
        req["systemInstruction"] = {"parts": system}
    gc: dict = {}
    mt = tr.max_tokens(body, 0)
    if mt:
        gc["maxOutputTokens"] = mt
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("presence_penalty", "presencePenalty"),
                     ("frequency_penalty", "frequencyPenalty")):
        v = body.get(src)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            gc[dst] = v
    if isinstance(body.get("seed"), int):
        gc["seed"] = body["seed"]
    stops = tr.stop_list(body)
    if stops:
        gc["stopSequences"] = stops
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        gc["candidateCount"] = n
    jf = tr.json_format(body)
    if jf is not None:
        gc["responseMimeType"] = "application/json"
        if jf[0] == "json_schema":
            gc["responseJsonSchema"] = jf[1]
    if gc:
        req["generationConfig"] = gc
    fns = tr.function_tools(body)
    if fns:
        req["tools"] = [{"functionDeclarations": [{"name": f["name"], "description": f["description"],
                                                   "parametersJsonSchema": f["parameters"]} for f in fns]}]
    tc = tr.tool_choice(body)
    if tc is not None:
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY", "named": "ANY"}[tc[0]]
        fcc: dict = {"mode": mode}
        if tc[0] == "named":
            fcc["allowedFunctionNames"] = [tc[1]]
        req["toolConfig"] = {"functionCallingConfig": fcc}
    return req, warnings


def _usage(u: object) -> object:
    """OpenAI usage of usageMetadata (None when Gemini sent none: the gateway counts)."""
    return translated_usage(u, ("promptTokenCount",), ("candidatesTokenCount", "thoughtsTokenCount"),
                            cached="cachedContentTokenCount", reasoning="thoughtsTokenCount")


def _candidate(c: dict, call_base: int = 0) -> tuple[str, list[dict]]:
    text, calls = [], []
    for p in (c.get("content") or {}).get("parts") or ():
        if p.get("thought"):
            continue
        if "text" in p:
            text.append(p.get("text") or "")
        elif isinstance(p.get("functionCall"), dict):
            fc = p["functionCall"]
            calls.append(tr.tool_call(fc.get("id") or f"call_{call_base + len(calls)}", fc.get("name", ""),
                                      fc.get("args") or {}))
    return "".join(text), calls


def _finish(c: dict, calls: bool) -> str:
    f = _FINISH.get(c.get("finishReason") or "STOP", "stop")
    return "tool_calls" if calls and f == "stop" else f


def from_gemini(obj: dict, model: str) -> dict:
    cands = obj.get("candidates") or []
    choices = []
    for i, c in enumerate(cands):
        text, calls = _candidate(c)
        msg: dict = {"role": "assistant", "content": text if (text or not calls) else None}
        if calls:
            msg["tool_calls"] = calls
        choices.append({"index": c.get("index", i), "message": msg, "finish_reason": _finish(c, bool(calls)),
                        "logprobs": None})
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        choices = [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter",
                    "logprobs": None}]
    return {"id": obj.get("responseId") or "gemini", "object": "chat.completion", "created": int(time.time()),
            "model": obj.get("modelVersion") or model, "choices": choices,
            "usage": _usage(obj.get("usageMetadata"))}


class GeminiStreamDecoder:
    """Gemini SSE (one GenerateContentResponse per event) -> OpenAI chunks; usage chunk at the end."""

    def __init__(self, model: str) -> None:
        self.sse = SseSplitter()
        self.usage: object = None  # OpenAI-shaped, untrusted (bounded by the gateway)
        self.error: ProviderError | None = None
        self.done = False  # a finishReason arrived
        self._model, self._created = model, int(time.time())
        self._id = "gemini"
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}
        self._u: object = None  # the last usageMetadata (each event carries the running totals)

    def feed(self, data: bytes) -> list[dict]:
        out: list[dict] = []
        for _, payload in self.sse.feed(data):
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.error = garbage(f"invalid JSON in Gemini stream event: {payload[:100]!r}")
                return out
            if not isinstance(obj, dict):
                continue
            if "error" in obj:
                e = obj["error"] if isinstance(obj["error"], dict) else {}
                self.error = classify_error(int(e.get("code") or 500), str(e.get("message", "stream error")),
                                            e.get("status"))
                return out
            self._id = obj.get("responseId") or self._id
            self._model = obj.get("modelVersion") or self._model
            if obj.get("usageMetadata") is not None:
                self._u = obj["usageMetadata"]
            for i, c in enumerate(obj.get("candidates") or ()):
                idx = c.get("index", i)
                if idx not in self._started:
                    self._started.add(idx)
                    out.append(chunk(self._id, self._model, self._created, {"role": "assistant", "content": ""},
                                     index=idx))
                text, calls = _candidate(c, self._calls.get(idx, 0))
                if text:
                    out.append(chunk(self._id, self._model, self._created, {"content": text}, index=idx))
                if calls:
                    base = self._calls.get(idx, 0)
                    self._calls[idx] = base + len(calls)
                    out.append(chunk(self._id, self._model, self._created,
                                     {"tool_calls": [{"index": base + k, **tc} for k, tc in enumerate(calls)]}, index=idx))
                if c.get("finishReason"):
                    self.done = True
                    out.append(chunk(self._id, self._model, self._created, {},
                                     _finish(c, bool(self._calls.get(idx))), index=idx))
        return out

    def close(self) -> list[dict]:
        if self.error is not None or not self.done:
            return []
        self.usage = _usage(self._u)
        if self.usage is None:  # no usage chunk: the gateway counts (and gives its own when asked)
            return []
        return [{**chunk(self._id, self._model, self._created, {}), "choices": [], "usage": self.usage}]


def _values(embs: object) -> list | None:
    """The value lists of [{"values": [...]}, ...] (None where an item has none: garbage)."""
    return [e.get("values") if isinstance(e, dict) else None for e in embs] if isinstance(embs, list) else None


def _embeddings_from_gemini(obj: dict, model: str, encoding_format: str) -> dict | ProviderError:
    """batchEmbedContents' {"embeddings": [{"values"}], "usageMetadata"?} as OpenAI's embedding list
    (no usage when Gemini reports no token count: the gateway counts, marked estimated)."""
    um = obj.get("usageMetadata")
    return embedding_list(_values(obj.get("embeddings")), [um.get("promptTokenCount") if isinstance(um, dict) else None],
                          model, encoding_format, "Gemini")


# Vertex text embeddings (cloud.google.com/vertex-ai/generative-ai/docs/embeddings/get-text-embeddings
# and the Text embeddings API reference, checked 2026-12): at most 250 input texts and 20,000
# tokens per :predict request; gemini-embedding-001 takes one instance per request.
VERTEX_MAX_INSTANCES = 250
# Characters per :predict call: keeps a call under the 20,000-token limit for text down to ~2.4
# characters per token (the gateway cannot count with Google's tokenizer before sending).
VERTEX_MAX_CHARS_PER_CALL = 48_000


def vertex_embed_content(model: str) -> bool:
    """Whether Vertex serves this embedding model through :embedContent rather than :predict
    (google-genai's _transformers.t_is_vertex_embed_content_model: Gemini embedding models but
    gemini-embedding-001, and MaaS models)."""
    return ("gemini" in model and model != "gemini-embedding-001") or "maas" in model


def predict_batches(model: str, inputs: list[str]) -> list[list[str]]:
    """The inputs split into :predict calls, in order, within Vertex's per-request limits."""
    if model.startswith("gemini-embedding-001"):
        return [[x] for x in inputs]
    out: list[list[str]] = []
    chars = 0
    for x in inputs:
        if not out or len(out[-1]) >= VERTEX_MAX_INSTANCES or chars + len(x) > VERTEX_MAX_CHARS_PER_CALL:
            out.append([])
            chars = 0
        out[-1].append(x)
        chars += len(x)
    return out


def _embeddings_from_vertex(obj: dict, model: str, encoding_format: str) -> dict | ProviderError:
    """A :predict answer ({"predictions": [{"embeddings": {"values", "statistics": {"token_count",
    "truncated"}}}]}) or an :embedContent one ({"embedding": {"values"}, "usageMetadata":
    {"promptTokenCount"}}) as OpenAI's embedding list; usage only when every count is valid."""
    if isinstance(obj.get("predictions"), list):
        embs = [p.get("embeddings") if isinstance(p, dict) else None for p in obj["predictions"]]
        counts = [(e.get("statistics") or {}).get("token_count") if isinstance(e, dict)
                  and isinstance(e.get("statistics"), dict) else None for e in embs]
    elif isinstance(obj.get("embedding"), dict):
        embs = [obj["embedding"]]
        um = obj.get("usageMetadata")
        counts = [um.get("promptTokenCount") if isinstance(um, dict) else None]
    else:
        return garbage("Vertex embedding response has neither predictions nor embedding")
    return embedding_list(_values(embs), counts, model, encoding_format, "Vertex")


class GeminiAdapter:
    provider = "gemini"
    passthrough = False
    needs_prepare = False

    def __init__(self, cfg, default_max_tokens: int = 4096):
        self.cfg = cfg
        self.headers = json_headers(cfg, "x-goog-api-key")

    async def prepare(self) -> None:
        return None

    def model_url(self, d) -> str:
        # v1: what google-genai 3.x calls by default; `api_version: v1beta` for preview features.
        ver = self.cfg.api_version or "v1"
        base = d.base_url.removesuffix("/" + ver)
        return f"{base}/{ver}/models/{d.model}"

    def build_request(self, body: dict, d, *, stream: bool, kind: str = "chat") -> UpstreamRequest | ProviderError:
        if kind == "embeddings":
            return self.embed_request(body, d)
        got = tr.translated(kind, self.provider, lambda: to_gemini(body))
        if isinstance(got, ProviderError):
            return got
        req, warnings = got
        op = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        return UpstreamRequest(self.model_url(d) + op, self.headers, orjson.dumps(req), tuple(warnings),
                               json_mode=tr.json_format(body) is not None)

    def embed_request(self, body: dict, d) -> UpstreamRequest | ProviderError:
        """POST /v1/embeddings as batchEmbedContents: one request per input (text only), `dimensions`
        as outputDimensionality (ai.google.dev/api/embeddings, checked 2026-12)."""
        from tokenomy.gateway.embeddings import embedding_inputs

        inputs = embedding_inputs(body)  # validated at admission
        if any(isinstance(x, list) for x in inputs):
            return tr.BadRequest("Gemini embeds text: send strings, not token ids", "input").error
        one: dict = {"model": f"models/{d.model}"}
        if body.get("dimensions"):
            one["outputDimensionality"] = body["dimensions"]
        reqs = [{**one, "content": {"parts": [{"text": x}]}} for x in inputs]
        warnings = ("dropped unsupported field(s) for this provider: user",) if body.get("user") else ()
        return UpstreamRequest(self.model_url(d) + ":batchEmbedContents", self.headers,
                               orjson.dumps({"requests": reqs}), warnings, kind="embeddings",
                               encoding_format=body.get("encoding_format") or "float")

    def parse_response(self, status: int, headers: dict[str, str], raw: bytes,
                       req: UpstreamRequest | None = None) -> dict | ProviderError:
        obj = answer_object(status, raw, "Gemini response")
        if isinstance(obj, ProviderError):
            return obj
        if req is not None and req.kind == "embeddings":
            return _embeddings_from_gemini(obj, self.cfg.upstream_model, req.encoding_format)
        if not ("candidates" in obj or "promptFeedback" in obj):
            return garbage("Gemini response has no candidates")
        return from_gemini(obj, self.cfg.upstream_model)

    def stream_decoder(self, req: UpstreamRequest | None = None) -> GeminiStreamDecoder:
        return GeminiStreamDecoder(self.cfg.upstream_model)


_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class VertexAdapter(GeminiAdapter):
    """Gemini on Vertex AI: OAuth2 access tokens from google-auth (imported only here)."""

    provider = "vertex"
    needs_prepare = True

    def __init__(self, cfg, default_max_tokens: int = 4096):
        super().__init__(cfg, default_max_tokens)
        self.headers.pop("x-goog-api-key", None)
        try:
            import google.auth
            import google.auth.transport.requests
        except ImportError:  # pragma: no cover - depends on the install
            from tokenomy.errors import ConfigError
            raise ConfigError(f"deployment {cfg.name}: provider vertex needs google-auth "
                              "(pip install 'tokenomy[providers]')") from None
        self.region = cfg.region or "us-central1"
        self._google = google.auth
        self._creds, project = google.auth.default(scopes=list(_SCOPES))
        self.project = cfg.project or project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if not self.project:
            from tokenomy.errors import ConfigError
            raise ConfigError(f"deployment {cfg.name}: provider vertex needs `project:` (or credentials that name one)")
        self._lock = asyncio.Lock()

    async def prepare(self) -> None:
        """A valid access token in the Authorization header (refreshed off the event loop when
        missing or about to expire; one refresh at a time)."""
        if self._creds.valid and "authorization" in self.headers:
            return
        async with self._lock:
            if not self._creds.valid:
                from google.auth.transport.requests import Request
                try:
                    await asyncio.to_thread(self._creds.refresh, Request())
                except Exception as exc:  # google.auth RefreshError, transport errors: this attempt fails
                    import aiohttp
                    raise aiohttp.ClientConnectionError(f"vertex credential refresh failed: {exc}") from None
            self.headers = {**self.headers, "authorization": f"Bearer {self._creds.token}"}

    def embed_request(self, body: dict, d) -> UpstreamRequest | ProviderError:
        """POST /v1/embeddings on Vertex: text-embedding-* / gemini-embedding-001 through :predict
        (instances [{content}], parameters {outputDimensionality, autoTruncate}), newer Gemini
        embedding models through :embedContent (one content per call), as google-genai picks.
        Lists beyond one call's limits are fanned out (UpstreamRequest.parts)."""
        from tokenomy.gateway.embeddings import embedding_inputs

        inputs = embedding_inputs(body)  # validated at admission
        if any(isinstance(x, list) for x in inputs):
            return tr.BadRequest("Vertex embeds text: send strings, not token ids", "input").error
        dims = body.get("dimensions")
        fmt = body.get("encoding_format") or "float"
        url = self.model_url(d)
        if vertex_embed_content(d.model):
            cfg: dict = {"autoTruncate": False, **({"outputDimensionality": dims} if dims else {})}
            bodies = [{"content": {"role": "user", "parts": [{"text": x}]}, "embedContentConfig": cfg} for x in inputs]
            url += ":embedContent"
        else:
            params: dict = {"autoTruncate": False, **({"outputDimensionality": dims} if dims else {})}
            bodies = [{"instances": [{"content": x} for x in batch], "parameters": params}
                      for batch in predict_batches(d.model, inputs)]
            url += ":predict"
        if len(bodies) > MAX_FANOUT_CALLS:
            return tr.BadRequest(f"{d.model} on Vertex takes this list in {len(bodies)} calls; at most "
                                 f"{MAX_FANOUT_CALLS} per request here: split the list", "input").error
        warnings = ("dropped unsupported field(s) for this provider: user",) if body.get("user") else ()
        parts = tuple(UpstreamRequest(url, self.headers, orjson.dumps(b), warnings, kind="embeddings",
                                      encoding_format=fmt) for b in bodies)
        if len(parts) == 1:
            return parts[0]
        return UpstreamRequest(url, self.headers, b"", warnings, kind="embeddings", encoding_format=fmt, parts=parts)

    def parse_response(self, status: int, headers: dict[str, str], raw: bytes,
                       req: UpstreamRequest | None = None) -> dict | ProviderError:
        if req is None or req.kind != "embeddings":
            return super().parse_response(status, headers, raw, req)
        obj = answer_object(status, raw, "Vertex embedding response")
        if isinstance(obj, ProviderError):
            return obj
        return _embeddings_from_vertex(obj, self.cfg.upstream_model, req.encoding_format)

    def model_url(self, d) -> str:
        base = (d.base_url or f"https://{self.region}-aiplatform.googleapis.com").removesuffix("/v1")
        return (f"{base}/v1/projects/{self.project}/locations/{self.region}/publishers/google/models/{d.model}")
