"""An upstream's `usage` is untrusted input: validate and bound every count before pricing.

Pure functions. A count is valid when it is a JSON integer (not a boolean, not a float, not
negative) of at most 2^53 (what every JSON implementation represents exactly); an invalid
prompt or completion count counts as missing, and the gateway counts itself (`estimated`).
Valid counts are then bounded:
    completion <= n x max_tokens + COMPLETION_SLACK_TOKENS   (the request's own output limit)
    prompt     <= own prompt count x PROMPT_MARGIN + PROMPT_SLACK_TOKENS
    cached     <= prompt,  reasoning <= completion,  cache_write <= prompt - cached
Slack, and why: an upstream may count a stop/EOS token or a chat-template token past max_tokens
(16 covers every template we know); the gateway's own prompt count is an approximation of the
upstream's tokenizer (a different model family, the regex fallback counter: up to ~1.8x for
some languages, measured in issue 14 §3), so only a count beyond twice it, plus a template's
worth of tokens, is taken as a lie. Whatever was invalid or clipped is an anomaly: the event
records the billed (bounded) figures, the raw ones and the reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

MAX_COUNT = 2**53
COMPLETION_SLACK_TOKENS = 16
PROMPT_MARGIN = 2.0
PROMPT_SLACK_TOKENS = 64
# The output bound of a request that set no max_tokens, on a key without a hard budget (nothing
# was capped): above the largest documented output limit of current API models (OpenAI o1/o3:
# 100,000 completion tokens, platform.openai.com model pages, checked 2025).
UNSTATED_MAX_OUTPUT_TOKENS = 131_072

Counts = tuple[int, int, int, int]  # input incl. cached, cached input, output incl. reasoning, reasoning


@dataclass(frozen=True, slots=True)
class BilledUsage:
    counts: Counts  # what is priced and recorded
    estimated: bool  # input or output counted by the gateway (the upstream's count missing or invalid)
    anomalies: tuple[str, ...] = ()  # why the upstream's figures were not taken as reported
    raw: dict | None = None  # the upstream's figures (JSON-safe), kept when there is an anomaly
    cache_write: int = 0  # of counts' input: written to the provider's prompt cache (priced of its own)


def valid_count(x: object) -> bool:
    return type(x) is int and 0 <= x <= MAX_COUNT  # type(): a bool is an int subclass


def _json_safe(x: object) -> object:
    """A raw figure as it can be stored: small ints, finite floats and booleans as they are, the
    rest (huge ints, nested junk) as a short string."""
    if x is None or isinstance(x, bool):
        return x
    if type(x) is int and -(2**63) <= x < 2**63:
        return x
    if type(x) is float and x == x and abs(x) != float("inf"):
        return x
    return repr(x)[:64]


def _field(usage: dict, detail: str | None, name: str) -> object:
    holder = usage.get(detail) if detail else usage
    return holder.get(name) if isinstance(holder, dict) else None


def bound_usage(usage: object, *, own_input_tokens: int, max_output_tokens: int,
                own_output_tokens: Callable[[], int]) -> BilledUsage:
    b = _bound(usage, own_input_tokens=own_input_tokens, max_output_tokens=max_output_tokens,
               own_output_tokens=own_output_tokens)
    write = _field(usage, "prompt_tokens_details", "cache_write_tokens") if isinstance(usage, dict) else None
    if write is None or write == 0:  # the common case: no cache-write category
        return b
    room = b.counts[0] - b.counts[1]  # input that is not a cache read
    if valid_count(write) and write <= room:
        return replace(b, cache_write=write)
    why = f"cache_write_tokens invalid ({type(write).__name__} {repr(write)[:32]})" if not valid_count(write) \
        else f"cache_write_tokens {write} > uncached prompt_tokens {room}"
    raw = {**(b.raw or {}), "cache_write_tokens": _json_safe(write)}
    return replace(b, anomalies=(*b.anomalies, why), raw=raw, cache_write=min(write, room) if valid_count(write) else 0)


def _bound(usage: object, *, own_input_tokens: int, max_output_tokens: int,
           own_output_tokens: Callable[[], int]) -> BilledUsage:
    """The billed counts of one answer. `max_output_tokens`: n x the max_tokens sent upstream;
    `own_output_tokens`: the gateway's count of the generated text (called only when needed)."""
    if not isinstance(usage, dict):
        if usage is not None:
            return BilledUsage((own_input_tokens, 0, own_output_tokens(), 0), True,
                               (f"usage is not an object: {type(usage).__name__}",), {"usage": _json_safe(usage)})
        return BilledUsage((own_input_tokens, 0, own_output_tokens(), 0), True)
    inp = usage.get("prompt_tokens")
    out = usage.get("completion_tokens")
    cached = _field(usage, "prompt_tokens_details", "cached_tokens")
    reasoning = _field(usage, "completion_tokens_details", "reasoning_tokens")
    if (valid_count(inp) and valid_count(out) and (cached is None or valid_count(cached))
            and (reasoning is None or valid_count(reasoning))):
        # the common case: all valid; one comparison each
        c = cached or 0
        r = reasoning or 0
        if (out <= max_output_tokens + COMPLETION_SLACK_TOKENS
                and inp <= own_input_tokens * PROMPT_MARGIN + PROMPT_SLACK_TOKENS and c <= inp and r <= out):
            return BilledUsage((inp, c, out, r), False)
    return _bound_slow(inp, out, cached, reasoning, own_input_tokens, max_output_tokens, own_output_tokens)


def _bound_slow(inp, out, cached, reasoning, own_input_tokens: int, max_output_tokens: int,
                own_output_tokens: Callable[[], int]) -> BilledUsage:
    why: list[str] = []
    estimated = False
    raw = {"prompt_tokens": _json_safe(inp), "completion_tokens": _json_safe(out),
           "cached_tokens": _json_safe(cached), "reasoning_tokens": _json_safe(reasoning)}

    def check(name: str, x: object) -> int | None:
        if x is None:  # absent: counted by the gateway, not a lie
            return None
        if not valid_count(x):
            why.append(f"{name} invalid ({type(x).__name__} {repr(x)[:32]})")
            return None
        return x  # type: ignore[return-value]

    i = check("prompt_tokens", inp)
    o = check("completion_tokens", out)
    c = check("cached_tokens", cached) or 0
    r = check("reasoning_tokens", reasoning) or 0
    if i is None:
        i, estimated = own_input_tokens, True
    else:
        limit = int(own_input_tokens * PROMPT_MARGIN) + PROMPT_SLACK_TOKENS
        if i > limit:
            why.append(f"prompt_tokens {i} > bound {limit}")
            i = limit
    if o is None:
        o, estimated = own_output_tokens(), True
    else:
        limit = max_output_tokens + COMPLETION_SLACK_TOKENS
        if o > limit:
            why.append(f"completion_tokens {o} > bound {limit}")
            o = limit
    if c > i:
        why.append(f"cached_tokens {c} > prompt_tokens {i}")
        c = i
    if r > o:
        why.append(f"reasoning_tokens {r} > completion_tokens {o}")
        r = o
    return BilledUsage((i, c, o, r), estimated, tuple(why), raw if why else None)
