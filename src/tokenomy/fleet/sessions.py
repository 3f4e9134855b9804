"""A session model of prefix sharing, fitted to Kimi's Mooncake conversation trace, that gives
block hashes (`hash_ids`) to workloads without them (Azure / Splitwise-style traces).

The model (one shared system prompt + multi-turn growth):
- every prompt starts with one shared system prompt of `system_tokens` tokens;
- sessions start as a Poisson process; a session has 1 + Geometric(p) turns (mean 1/(1-p));
- the first turn's prompt is lognormal (system prompt included); each later turn's prompt is the
  previous prompt + the previous answer + a lognormal user message, `gap` seconds (lognormal)
  after the previous turn arrived; outputs are lognormal;
- a prompt of L tokens has ceil(L / B) blocks (B = 512, Mooncake's); a later turn reuses the
  previous prompt's full blocks (its last, partial block changed) and gets fresh ids after them.

`MOONCAKE` holds the parameters `fit_sessions` finds on the full one-hour conversation trace
(12,031 requests; kvcache-ai/Mooncake FAST25-release, Apache-2.0; fitted 2026-12-07 from
../shared/data/traces/mooncake/, see the test for the shipped 3,000-request slice). With one
unbounded cache 36.6 % of that trace's prompt blocks are reusable prefixes (`reusable_block_share`);
the model's generated hour reproduces it (tests/fleet/test_sessions.py states the tolerance).

Two uses:
- `session_workload(rate, seconds)`: a synthetic trace of sessions (`--trace session:RATE[:SECONDS]`);
- `attach_sessions(trace)`: hash ids for a trace's own requests, lengths and times kept
  (`--session-model mooncake`): each request continues, with probability p, the open session
  whose last turn is closest to a sampled gap before it and whose last prompt fits in its
  prompt (reusing that prompt's full blocks: the trace's lengths are independent, so the
  previous answer is not required to be in the history); else it starts a session. The system
  prompt keeps Mooncake's share of the prompt tokens (`system_share`), not its 512 tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tokenomy.errors import TokenomyError
from tokenomy.fleet.workload import MOONCAKE_BLOCK_TOKENS, Trace


@dataclass(frozen=True)
class SessionModel:
    continue_p: float  # P(a session has another turn): follow-up share of requests
    system_tokens: int  # shared system prompt at the start of every prompt
    first_prompt_mu: float  # lognormal (natural log of tokens) of a session's first prompt
    first_prompt_sigma: float
    user_mu: float  # lognormal of the user message a later turn adds (after the previous answer)
    user_sigma: float
    output_mu: float
    output_sigma: float
    gap_mu: float  # lognormal of seconds between a session's consecutive turns
    gap_sigma: float
    max_prompt_tokens: int = 131_072  # context cap (Kimi serves 128k)
    max_output_tokens: int = 4_096
    system_share: float = 0.0425  # system prompt / mean prompt tokens (Mooncake: 512 / 12,035), for attach_sessions
    block_tokens: int = MOONCAKE_BLOCK_TOKENS

    def __post_init__(self) -> None:
        if not 0 <= self.continue_p < 1:
            raise TokenomyError(f"session continue probability must be in [0, 1), got {self.continue_p}")
        if self.block_tokens < 1 or self.system_tokens < 0 or self.max_prompt_tokens < 1:
            raise TokenomyError("session model: block_tokens and max_prompt_tokens must be >= 1, system_tokens >= 0")

    @property
    def mean_turns(self) -> float:
        return 1.0 / (1.0 - self.continue_p)


# fit_sessions(load_trace("../shared/data/traces/mooncake/conversation_trace.jsonl")), 2026-12-07
MOONCAKE = SessionModel(
    continue_p=0.3872, system_tokens=512,
    first_prompt_mu=8.5094, first_prompt_sigma=1.2645,
    user_mu=4.7067, user_sigma=2.4932,
    output_mu=5.3364, output_sigma=1.3584,
    gap_mu=4.8785, gap_sigma=0.9784,
    max_prompt_tokens=126_195, max_output_tokens=2_000,
)
MODELS = {"mooncake": MOONCAKE}
MOONCAKE_REUSABLE_BLOCK_SHARE = 0.366  # issue 18 / the full trace, one unbounded cache


def reusable_block_share(hashes) -> float:
    """Share of all prompt blocks that are a reusable prefix: the leading run of a request's
    blocks already seen in an earlier request (one unbounded cache, arrival order)."""
    seen: set[int] = set()
    reused = total = 0
    for h in hashes:
        k = 0
        while k < len(h) and h[k] in seen:
            k += 1
        reused += k
        total += len(h)
        seen.update(h)
    return reused / total if total else 0.0


def _lognormal_fit(x: np.ndarray) -> tuple[float, float]:
    lx = np.log(np.maximum(np.asarray(x, dtype=np.float64), 1.0))
    return float(lx.mean()), float(lx.std())


def fit_sessions(trace: Trace) -> SessionModel:
    """Fit the session model to a trace with block hashes: each request's parent is the earlier
    request sharing its longest leading run of blocks; more than the system block = a follow-up."""
    if trace.hashes is None:
        raise TokenomyError("fitting a session model needs a trace with hash_ids (Mooncake format)")
    B = trace.hash_block_tokens or MOONCAKE_BLOCK_TOKENS
    trie: dict = {}
    parent = np.full(len(trace), -1, dtype=np.int64)
    match = np.zeros(len(trace), dtype=np.int64)
    for i, h in enumerate(trace.hashes):
        node, k, owner = trie, 0, -1
        for x in h:
            if x not in node:
                break
            node = node[x]
            k += 1
            owner = node["_o"]
        parent[i], match[i] = owner, k
        node = trie
        for x in h:
            node = node.setdefault(x, {"_n": 0})
            node["_o"] = i
            node["_n"] += 1
    # the system prompt: the longest leading run of blocks that most requests share
    system_blocks, node = 0, trie
    while True:
        kids = [v for key, v in node.items() if not isinstance(key, str)]
        top = max(kids, key=lambda v: v["_n"], default=None)
        if top is None or top["_n"] <= len(trace) / 2:
            break
        system_blocks, node = system_blocks + 1, top
    follow = match > system_blocks
    fi = np.where(follow)[0]
    p, o, t = trace.prompt_tokens, trace.output_tokens, trace.arrived_at
    user = p[fi] - p[parent[fi]] - o[parent[fi]]
    gaps = t[fi] - t[parent[fi]]
    first = _lognormal_fit(p[~follow])
    um, us = _lognormal_fit(user[user > 0])
    om, osd = _lognormal_fit(o)
    gm, gs = _lognormal_fit(np.maximum(gaps[gaps > 0], 1.0))
    return SessionModel(continue_p=float(follow.mean()), system_tokens=system_blocks * B,
                        first_prompt_mu=first[0], first_prompt_sigma=first[1], user_mu=um, user_sigma=us,
                        output_mu=om, output_sigma=osd, gap_mu=gm, gap_sigma=gs,
                        max_prompt_tokens=int(p.max()), max_output_tokens=int(o.max()), block_tokens=B)


class _Blocks:
    """Fresh block ids; id 0.. the system prompt's blocks."""

    def __init__(self, model: SessionModel):
        self.B = model.block_tokens
        self.system = tuple(range(model.system_tokens // self.B))
        self.next = len(self.system)

    def prompt(self, tokens: int, reuse: tuple[int, ...] = ()) -> tuple[int, ...]:
        """Block ids of a `tokens`-token prompt that starts with the blocks `reuse` (else the system prompt)."""
        n = -(-tokens // self.B)
        head = (reuse or self.system)[: tokens // self.B]  # full blocks only: a partial block's hash differs
        fresh = n - len(head)
        ids = head + tuple(range(self.next, self.next + fresh))
        self.next += fresh
        return ids

    def full(self, ids: tuple[int, ...], tokens: int) -> tuple[int, ...]:
        return ids[: tokens // self.B]


def _ln(rng: np.random.Generator, mu: float, sigma: float, lo: int = 1, hi: int | None = None) -> int:
    v = int(round(math.exp(mu + sigma * rng.standard_normal())))
    v = max(lo, v)
    return min(v, hi) if hi is not None else v


def session_workload(rate_per_s: float, duration_seconds: float, *, model: SessionModel = MOONCAKE,
                     seed: int = 0, name: str | None = None) -> Trace:
    """Requests of sessions arriving over [0, duration): `rate_per_s` requests per second on
    average (sessions start at rate x (1 - p), also before 0; turns outside the window are dropped)."""
    if not rate_per_s > 0 or not duration_seconds > 0:
        raise TokenomyError("session workload: rate and duration must be > 0")
    rng = np.random.default_rng(seed)
    blocks = _Blocks(model)
    # Sessions already under way at 0 (started up to `warm` seconds before) contribute their later
    # turns, so the window sees steady-state traffic, as a slice of a production trace does.
    warm = 10.0 * math.exp(model.gap_mu + model.gap_sigma**2 / 2)
    n_sessions = rng.poisson(rate_per_s * (1.0 - model.continue_p) * (duration_seconds + warm))
    starts = np.sort(rng.uniform(-warm, duration_seconds, n_sessions))
    rows: list[tuple[float, int, int, tuple[int, ...]]] = []
    cap = model.max_prompt_tokens
    for t in starts.tolist():
        prompt = max(_ln(rng, model.first_prompt_mu, model.first_prompt_sigma, hi=cap), model.system_tokens + 1)
        ids = blocks.prompt(min(prompt, cap))
        while True:
            out = _ln(rng, model.output_mu, model.output_sigma, hi=model.max_output_tokens)
            rows.append((t, prompt, out, ids))
            if rng.uniform() >= model.continue_p:
                break
            t += math.exp(model.gap_mu + model.gap_sigma * rng.standard_normal())
            nxt = prompt + out + _ln(rng, model.user_mu, model.user_sigma)
            if t >= duration_seconds or nxt > cap:
                break
            ids = blocks.prompt(nxt, blocks.full(ids, prompt))
            prompt = nxt
    rows = sorted((r for r in rows if r[0] >= 0.0), key=lambda r: r[0])
    if not rows:
        raise TokenomyError("session workload is empty: raise the rate or the duration")
    return Trace(np.array([r[0] for r in rows], dtype=np.float64), np.array([r[1] for r in rows], dtype=np.int64),
                 np.array([r[2] for r in rows], dtype=np.int64), name or f"session:{rate_per_s:g}",
                 tuple(r[3] for r in rows), model.block_tokens)


def attach_sessions(trace: Trace, *, model: SessionModel = MOONCAKE, seed: int = 0,
                    block_tokens: int | None = None) -> Trace:
    """The same requests with session block hashes (see the module doc). `block_tokens` sets the
    hash block size (default the model's 512; short-prompt traces share more with vLLM's 16)."""
    if trace.hashes is not None:
        raise TokenomyError(f"trace '{trace.name}' already has block hashes; --session-model is for traces without")
    B = int(block_tokens or model.block_tokens)
    if B < 1:
        raise TokenomyError("block_tokens must be >= 1")
    # the system prompt keeps its share of the prompt tokens (a trace of 1k-token prompts does
    # not start each with Kimi's 512 tokens); full blocks only
    system = int(model.system_share * float(trace.prompt_tokens.mean()) // B) * B if len(trace) else 0
    m = SessionModel(**{**model.__dict__, "block_tokens": B, "system_tokens": system})
    rng = np.random.default_rng(seed)
    blocks = _Blocks(m)
    # open sessions: context tokens (prompt + output), full-block ids of the last prompt, last arrival
    ctx: list[int] = []
    full: list[tuple[int, ...]] = []
    last: list[float] = []
    out_ids: list[tuple[int, ...]] = []
    p, o, t = trace.prompt_tokens.tolist(), trace.output_tokens.tolist(), trace.arrived_at.tolist()
    for i in range(len(trace)):
        chosen = -1
        if ctx and rng.uniform() < m.continue_p:
            target = t[i] - math.exp(m.gap_mu + m.gap_sigma * rng.standard_normal())
            best = math.inf
            for s in range(len(ctx) - 1, max(-1, len(ctx) - 2000), -1):  # recent sessions first
                if ctx[s] <= p[i] and abs(last[s] - target) < best:  # ctx: the session's last prompt
                    best, chosen = abs(last[s] - target), s
        if chosen >= 0:
            ids = blocks.prompt(p[i], full[chosen])
            ctx[chosen], full[chosen], last[chosen] = p[i], blocks.full(ids, p[i]), t[i]
        else:
            ids = blocks.prompt(p[i])
            ctx.append(p[i])
            full.append(blocks.full(ids, p[i]))
            last.append(t[i])
        out_ids.append(ids)
    return Trace(trace.arrived_at, trace.prompt_tokens, trace.output_tokens, f"{trace.name}+sessions",
                 tuple(out_ids), B)


def apply_session_model(trace: Trace, spec: str, *, seed: int = 0) -> Trace:
    """`--session-model NAME[:BLOCK_TOKENS]` (NAME: mooncake) on a trace without hashes."""
    name, _, block = spec.partition(":")
    if name not in MODELS:
        raise TokenomyError(f"unknown session model '{name}'; known: {', '.join(MODELS)} (NAME[:BLOCK_TOKENS])")
    try:
        b = int(block) if block else None
        if b is not None and b < 1:
            raise ValueError
    except ValueError:
        raise TokenomyError(f"bad --session-model '{spec}': BLOCK_TOKENS must be an integer >= 1") from None
    return attach_sessions(trace, model=MODELS[name], seed=seed, block_tokens=b)


def session_summary(trace: Trace) -> dict:
    """The figures the model is fitted to, measured on a trace with hashes."""
    if trace.hashes is None:
        return {}
    return {"reusable_block_share": round(reusable_block_share(trace.hashes), 4),
            "hash_block_tokens": trace.hash_block_tokens}
