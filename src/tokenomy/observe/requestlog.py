"""The request log: one JSON line per request, written off the request path.

A line holds the request id, tenant, key id, model, deployment, status and HTTP status, tokens
by category, cost and price (exact strings), energy, latency and TTFT, the routing decision, the
failed attempts (retries and fallbacks) and the user and tags — never a secret (keys are never
in an event; captured text is redacted first). Prompt and response capture is off unless the
tenant is listed in `capture_tenants`. Sampling is by request id, so every replica keeps the
same requests.

Writing: the request path only puts the line on a queue (logging.handlers.QueueHandler); a
listener thread writes it to stdout or to a file that rotates at `max_bytes` keeping `backups`
files (logging.handlers.RotatingFileHandler).
"""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import queue
import sys
from pathlib import Path

import orjson

from tokenomy.observe.redact import Redactor

MAX_CAPTURE_CHARS = 20_000


class RequestLog:
    def __init__(self, config):
        """`config`: tokenomy.config.RequestLogConfig."""
        self.config = config
        self.sample = float(config.sample)
        self.capture = set(config.capture_tenants)
        self.redact = Redactor(config.redact, defaults=config.redact_defaults)
        if config.path:
            path = Path(config.path).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8")
        else:
            handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(self._queue, handler, respect_handler_level=False)
        self._logger = logging.Logger("tokenomy.requests")  # not in the logging tree: no propagation
        self._logger.addHandler(logging.handlers.QueueHandler(self._queue))
        self._listener.start()
        self.handler = handler

    def sampled(self, request_id: str) -> bool:
        if self.sample >= 1.0:
            return True
        h = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")
        return h / 2**64 < self.sample

    def line(self, ev, *, prompt: str | None = None, response: str | None = None) -> dict:
        x = ev.extra or {}
        out = {"request_id": ev.id, "ts": ev.ts, "tenant": ev.tenant, "key_id": ev.key_id, "model": ev.model,
               "deployment": ev.deployment, "status": ev.status, "http_status": ev.http_status,
               "input_tokens": ev.input_tokens, "cached_input_tokens": ev.cached_input_tokens,
               "output_tokens": ev.output_tokens, "reasoning_tokens": ev.reasoning_tokens,
               "estimated": ev.estimated, "cost_usd": format(ev.cost_usd, "f"), "price_usd": format(ev.price_usd, "f"),
               "energy_joules": ev.energy_joules, "latency_ms": round(ev.latency_ms, 3),
               "ttft_ms": None if ev.ttft_ms is None else round(ev.ttft_ms, 3),
               "policy": x.get("policy"), "route": x.get("route"), "attempts": x.get("attempts", []),
               "retries": len(x.get("attempts", [])), "user": x.get("user"), "tags": x.get("tags")}
        for k in ("plan", "cap_action", "usage_anomaly", "token_counter", "parent", "route_part"):
            if k in x:
                out[k] = x[k]
        if ev.tenant in self.capture:
            if prompt is not None:
                out["prompt"] = self.redact(prompt[:MAX_CAPTURE_CHARS])
            if response is not None:
                out["response"] = self.redact(response[:MAX_CAPTURE_CHARS])
        return out

    def record(self, ev, texts=None) -> None:
        """Queue one line (cheap; the listener thread does the writing). `texts`: a callable
        giving (prompt, response), called only for a tenant whose text is captured."""
        if not self.sampled(ev.id):
            return
        prompt = response = None
        if texts is not None and ev.tenant in self.capture:
            prompt, response = texts()
        self._logger.info(orjson.dumps(self.line(ev, prompt=prompt, response=response),
                                       option=orjson.OPT_NON_STR_KEYS, default=str).decode())

    def refused(self, request_id: str, http_status: int, code: str | None, latency_ms: float) -> None:
        """A request refused at admission (auth, validation, limits, budget): no event, but a line."""
        if self.sampled(request_id):
            self._logger.info(orjson.dumps({"request_id": request_id, "status": "refused", "http_status": http_status,
                                            "code": code, "latency_ms": round(latency_ms, 3)}).decode())

    def close(self) -> None:
        self._listener.stop()  # drains the queue
        self.handler.close()
