"""Webhook delivery: a Slack-compatible JSON body (`text` and `blocks`, which Slack incoming
webhooks render) with the alert's machine-readable fields under `tokenomy`, signed with HMAC-SHA256.

Headers: `X-Tokenomy-Alert-Id` (the receiver's idempotency key), `X-Tokenomy-Timestamp` (unix s)
and `X-Tokenomy-Signature: sha256=<hex HMAC of "<timestamp>.<body>" with the webhook's secret>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from tokenomy.alerts.rules import Alert


def body_of(alert: Alert, gateway: str = "tokenomy") -> dict:
    return {"text": f"[{gateway}] {alert.title}: {alert.text}",
            "blocks": [{"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
                       {"type": "section", "text": {"type": "mrkdwn", "text": alert.text}}],
            "tokenomy": {"id": alert.id, "kind": alert.kind, "tenant": alert.tenant, "subject": alert.subject,
                         **{k: v for k, v in alert.fields.items() if k != "silent"}}}


def sign(secret: str, timestamp: int, raw: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify(secret: str, headers: dict, raw: bytes, *, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver checks (and the tests do): the signature and a fresh timestamp."""
    try:
        ts = int(headers["X-Tokenomy-Timestamp"])
    except (KeyError, ValueError):
        return False
    return abs(now - ts) <= tolerance_s and hmac.compare_digest(sign(secret, ts, raw), headers.get("X-Tokenomy-Signature", ""))


def request_of(alert_id: str, body: dict, secret: str | None, now: float) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "X-Tokenomy-Alert-Id": alert_id}
    if secret:
        ts = int(now)
        headers["X-Tokenomy-Timestamp"] = str(ts)
        headers["X-Tokenomy-Signature"] = sign(secret, ts, raw)
    return raw, headers
