"""Exporting: read the ledger in order, send in batches, advance the cursor only after the
receiver acknowledged the batch.

Exactly once: within tokenomy, the cursor and the look-back ids (state.py) mean an event is
handed to the receiver again only if its batch was not acknowledged (a crash, a timeout); the
receiver then drops the duplicate by its idempotency key (the event id, see targets.py). Retries:
connection errors, 429 (honouring Retry-After) and 5xx, with exponential backoff; any other
status stops the export with the receiver's message and leaves the cursor where it was.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tokenomy.errors import TokenomyError
from tokenomy.export.state import LOOKBACK_S, ExportState, save_state
from tokenomy.export.targets import BUILDERS, MAX_BATCH, Request, TargetConfig


class ExportError(TokenomyError):
    """The receiver refused a batch (or stayed unreachable): nothing after it was exported."""


@dataclass
class ExportReport:
    target: str
    url: str
    sent_events: int = 0
    skipped_already_sent: int = 0
    requests: int = 0
    retries: int = 0
    cursor_recorded_at: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"target": self.target, "url": self.url, "sent_events": self.sent_events,
                "skipped_already_sent": self.skipped_already_sent, "requests": self.requests,
                "retries": self.retries, "cursor_recorded_at": self.cursor_recorded_at, "errors": self.errors}


@dataclass
class Sender:
    """POSTs requests to the target with retries (injectable sleep: tests run without waiting)."""

    base_url: str
    auth_headers: dict[str, str]
    session: aiohttp.ClientSession
    attempts: int = 6
    base_delay_s: float = 0.5
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    concurrency: int = 8
    retries: int = 0

    async def send(self, req: Request) -> None:
        url = self.base_url.rstrip("/") + req.path
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                self.retries += 1
            try:
                async with self.session.request(req.method, url, data=req.body,
                                                headers={**req.headers, **self.auth_headers}) as resp:
                    text = (await resp.content.read(4096)).decode("utf-8", "replace")
                    if 200 <= resp.status < 300:
                        return
                    last = f"HTTP {resp.status}: {text.strip()[:300]}"
                    if resp.status != 429 and resp.status < 500:
                        raise ExportError(f"{url} refused events {req.event_ids[0]}..: {last}")
                    delay = _retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last, delay = f"{type(exc).__name__}: {exc}", None
            if attempt + 1 < self.attempts:
                await self.sleep(delay if delay is not None else self.base_delay_s * 2 ** attempt * (0.5 + random.random()))
        raise ExportError(f"{url} did not accept events {req.event_ids[0]}.. after {self.attempts} attempts: {last}")

    async def send_all(self, requests: list[Request]) -> None:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(r: Request) -> None:
            async with gate:
                await self.send(r)

        await asyncio.gather(*(one(r) for r in requests))


def _retry_after(value: str | None) -> float | None:
    try:
        return min(60.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None


async def export_once(source, cfg: TargetConfig, sender: Sender, state: ExportState, state_path: Path, *,
                      batch: int | None = None, since_ts: float | None = None, lookback_s: float = LOOKBACK_S,
                      on_batch: Callable[[ExportReport], None] | None = None) -> ExportReport:
    """Send every billable event not exported yet; returns what was done."""
    size = min(batch or MAX_BATCH[cfg.name], MAX_BATCH[cfg.name])
    report = ExportReport(cfg.name, sender.base_url)
    after = (state.cursor_recorded_at - lookback_s, "") if state.cursor_recorded_at else (float("-inf"), "")
    while True:
        rows = await asyncio.to_thread(source.recorded_after, after[0], after[1], size, since_ts=since_ts)
        if not rows:
            break
        after = (float(rows[-1]["recorded_at"]), str(rows[-1]["id"]))
        fresh = [r for r in rows if r["id"] not in state.sent]
        report.skipped_already_sent += len(rows) - len(fresh)
        if fresh:
            requests = BUILDERS[cfg.name](cfg, fresh)
            await sender.send_all(requests)  # raises ExportError: the cursor stays before this batch
            report.requests += len(requests)
            for r in fresh:
                state.mark(r["id"], float(r["recorded_at"]))
            report.sent_events += len(fresh)
        state.advance(after[0], lookback_s)
        save_state(state_path, state)
        if on_batch is not None:
            on_batch(report)
    report.retries = sender.retries
    report.cursor_recorded_at = state.cursor_recorded_at
    return report
