"""Local servers implementing each export target's documented ingest endpoint, with its dedup
rule, its validation and fault injection (a lost reply: the event is stored, the answer is 500).

- OpenMeter `POST /api/v1/events`: CloudEvents 1.0 (single or batch content type); dedup on (source, id).
- Stripe `POST /v1/billing/meter_events` (form): event_name, payload[stripe_customer_id],
  payload[value] (a positive integer), identifier, timestamp (unix s, at most 35 days old and
  5 minutes ahead); `Idempotency-Key` replays the first answer; a reused identifier is a 400.
- Lago `POST /api/v1/events/batch`: {"events": [...]} with at most 100 events, each with
  transaction_id, external_subscription_id, code, timestamp; dedup on transaction_id.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from aiohttp import web


@dataclass
class Receiver:
    target: str
    events: dict[str, dict] = field(default_factory=dict)  # dedup key -> stored event
    posts: int = 0
    duplicates: int = 0
    lose_replies: int = 0  # the next N accepted requests answer 500 after storing
    refuse_after: int | None = None  # accept this many requests, then answer 400 to the rest
    auth: list[str | None] = field(default_factory=list)
    idempotency: dict[str, tuple[int, str]] = field(default_factory=dict)
    url: str = ""

    def _answer(self, status: int, body: dict) -> web.Response:
        if status < 300 and self.lose_replies > 0:
            self.lose_replies -= 1
            return web.json_response({"error": "lost reply (test)"}, status=500)
        return web.json_response(body, status=status)

    def _gate(self, request: web.Request) -> web.Response | None:
        self.posts += 1
        self.auth.append(request.headers.get("Authorization"))
        if self.refuse_after is not None and self.posts > self.refuse_after:
            return web.json_response({"error": "refused (test)"}, status=400)
        return None

    def _store(self, key: str, event: dict) -> None:
        if key in self.events:
            self.duplicates += 1
        else:
            self.events[key] = event

    async def openmeter(self, request: web.Request) -> web.Response:
        if (refused := self._gate(request)) is not None:
            return refused
        ctype = request.headers.get("Content-Type", "")
        body = json.loads(await request.read())
        if ctype.startswith("application/cloudevents-batch+json"):
            batch = body
        elif ctype.startswith("application/cloudevents+json"):
            batch = [body]
        else:
            return web.json_response({"title": "unsupported content type"}, status=415)
        for e in batch:
            missing = {"specversion", "id", "source", "type", "subject"} - set(e)
            if missing or e["specversion"] != "1.0":
                return web.json_response({"title": f"invalid CloudEvent: missing {sorted(missing)}"}, status=400)
        for e in batch:
            self._store(f"{e['source']}|{e['id']}", e)
        return self._answer(204, {})

    async def stripe(self, request: web.Request) -> web.Response:
        if (refused := self._gate(request)) is not None:
            return refused
        key = request.headers.get("Idempotency-Key")
        if key and key in self.idempotency:
            status, text = self.idempotency[key]
            self.duplicates += 1
            return web.Response(status=status, text=text, content_type="application/json")
        form = dict(parse_qsl((await request.read()).decode()))
        need = {"event_name", "payload[stripe_customer_id]", "payload[value]"}
        if need - set(form):
            return web.json_response({"error": {"message": f"missing {sorted(need - set(form))}"}}, status=400)
        if not form["payload[value]"].isdigit() or int(form["payload[value]"]) <= 0:
            return web.json_response({"error": {"message": "value must be a positive integer"}}, status=400)
        ts = int(form.get("timestamp", time.time()))
        if not time.time() - 35 * 86400 <= ts <= time.time() + 300:
            return web.json_response({"error": {"message": "timestamp outside the allowed window"}}, status=400)
        ident = form.get("identifier")
        if ident in self.events:
            return web.json_response({"error": {"message": "duplicate identifier"}}, status=400)
        self.events[ident] = form
        resp = self._answer(200, {"object": "billing.meter_event", "identifier": ident,
                                  "event_name": form["event_name"]})
        if key and resp.status == 200:
            self.idempotency[key] = (200, resp.text)
        elif key:  # a lost reply: Stripe would replay the stored success to the retry
            self.idempotency[key] = (200, json.dumps({"object": "billing.meter_event", "identifier": ident}))
        return resp

    async def lago(self, request: web.Request) -> web.Response:
        if (refused := self._gate(request)) is not None:
            return refused
        body = json.loads(await request.read())
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or not 1 <= len(events) <= 100:
            return web.json_response({"status": 422, "error": "events: 1 to 100 required"}, status=422)
        for e in events:
            missing = {"transaction_id", "external_subscription_id", "code", "timestamp"} - set(e)
            if missing:
                return web.json_response({"status": 422, "error": f"missing {sorted(missing)}"}, status=422)
        for e in events:
            self._store(e["transaction_id"], e)
        return self._answer(200, {"events": events})


async def start(target: str) -> tuple[Receiver, web.AppRunner]:
    rec = Receiver(target)
    app = web.Application()
    path = {"openmeter": "/api/v1/events", "stripe": "/v1/billing/meter_events",
            "lago": "/api/v1/events/batch"}[target]
    app.router.add_post(path, getattr(rec, target))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    return rec, runner
