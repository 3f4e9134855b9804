"""Reading an upstream's answer: OpenAI `usage`, and SSE events off an aiohttp stream."""

from __future__ import annotations

from aiohttp import StreamReader


class UpstreamGarbage(Exception):
    """The upstream answered 200 but with something that is not the OpenAI protocol."""


def usage_counts(usage: object) -> tuple[int, int, int, int] | None:
    """(input incl. cached, cached input, output incl. reasoning, reasoning) from an OpenAI usage
    object, or None when absent/malformed."""
    if not isinstance(usage, dict):
        return None
    inp = usage.get("prompt_tokens")
    out = usage.get("completion_tokens")
    if not isinstance(inp, int) or not isinstance(out, int):
        return None
    cached = reasoning = 0
    pd = usage.get("prompt_tokens_details")
    if isinstance(pd, dict) and isinstance(pd.get("cached_tokens"), int):
        cached = pd["cached_tokens"]
    cd = usage.get("completion_tokens_details")
    if isinstance(cd, dict) and isinstance(cd.get("reasoning_tokens"), int):
        reasoning = cd["reasoning_tokens"]
    return inp, cached, out, reasoning


def reported_energy_joules(obj: dict) -> float | None:
    """Energy an upstream reports for this request (the emulator does), if any."""
    for holder in (obj.get("usage"), obj):
        if isinstance(holder, dict):
            for k in ("x_energy_joules", "energy_joules", "energy_j"):
                v = holder.get(k)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    return float(v)
    x = obj.get("x_emulator")
    if isinstance(x, dict):
        v = x.get("energy_joules")
        if isinstance(v, (int, float)):
            return float(v)
    return None


async def read_event(content: StreamReader) -> bytes | None:
    """One SSE event (its lines joined, blank-line terminator stripped); None at EOF.

    Returns b"" for EOF in the middle of an event only if nothing was read."""
    lines: list[bytes] = []
    while True:
        line = await content.readline()
        if not line:  # EOF
            return b"".join(lines) if lines else None
        if line in (b"\n", b"\r\n"):
            if lines:
                return b"".join(lines)
            continue
        lines.append(line)


def event_data(event: bytes) -> bytes | None:
    """The `data:` payload of an SSE event (multi-line data joined), None for comment-only events."""
    if event.startswith(b"data:") and event.count(b"\n") <= 1:  # the common one-line case
        return event[5:].strip()
    parts = [ln[5:].strip() for ln in event.splitlines() if ln.startswith(b"data:")]
    return b"\n".join(parts) if parts else None
