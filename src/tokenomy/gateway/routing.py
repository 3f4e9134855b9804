"""Deployment selection inside a model group: cost, latency, cost-under-slo, weighted, prefix-affinity,
committed-first.

`rank()` orders the group's deployments for ONE request (first = chosen, rest = fallbacks).
Cost is the expected cost of this request, not a sum of list prices:
    input_tokens x ((1 - f) x input price + f x cached-input price) + predicted_output x output price
with f the deployment's observed cached-input fraction (EWMA; 0 until seen) and predicted
output = min(max_tokens, the group's EWMA of observed output lengths).

prefix-affinity (self-hosted replicas with prefix caching): cost-under-slo in which f is, per
replica, the share of this prompt's leading blocks the replica is believed to hold (an index
of what was sent where: tokenomy.engine.affinity, the simulator's policy), restricted first to
replicas under a hard load bound (ceil(load_factor x (in-flight + 1) / replicas)), with the
router's load penalty (in-flight above the mean, priced as the recompute it stands for), so
affinity never breaks the SLO nor piles everything on one replica. Blocks are AFFINITY_BLOCK_BYTES of the
prompt's canonical JSON (~256 tokens), chain-hashed with Python's hash (in-process index).

committed-first: owned / reserved deployments (paid by the hour whether used or not) come first
while they have SLO headroom (gateway/committed.py: the perf model's batch at the SLO), cheapest
marginal cost (the energy one more request adds) first; then the others as cost-under-slo orders
them (list prices); committed ones without headroom last, as fallbacks. Ranking happens before the
request's awaits (rate check, reservation), so dispatch checks the headroom again the instant it
takes the slot (`full`) and spills then: the bound holds under any concurrency. Each decision
records the deployment `cost` would have chosen on list prices (`tokenomy route savings`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from tokenomy.config import Deployment, GatewayConfig, ModelGroup
from tokenomy.gateway.health import Breaker, Ewma
from tokenomy.gateway.pricing import DeploymentPrice

AFFINITY_BLOCK_BYTES = 1024  # ~256 tokens of prompt JSON per index block (cl100k ~4 bytes/token)
AFFINITY_HEADER = "x-tokenomy-prefix-affinity"


def prompt_prefix_hashes(body: dict, block_bytes: int = AFFINITY_BLOCK_BYTES) -> list[int]:
    """Chained hashes of the full `block_bytes` blocks of the request's prompt (chat messages or
    completion prompt, canonical JSON): equal leading text -> equal leading hashes."""
    src = body.get("messages")
    if src is None:
        src = body.get("prompt")
    if src is None:
        return []
    try:
        raw = orjson.dumps(src)
    except TypeError:
        return []
    out: list[int] = []
    h = 0
    for i in range(0, len(raw) - block_bytes + 1, block_bytes):
        h = hash((h, raw[i:i + block_bytes]))
        out.append(h)
    return out
from tokenomy.gateway.providers import adapter_for
from tokenomy.gateway.providers.base import resolved_headers


class DeploymentRuntime:
    """A configured deployment plus its live state (breaker, EWMAs, in-flight)."""

    __slots__ = ("name", "cfg", "price", "p_in", "p_cached", "p_out", "p_reason", "base_url", "headers",
                 "model", "breaker", "ttft_ms", "tpot_ms", "cached_frac", "in_flight", "max_in_flight",
                 "timeout", "adapter")

    def __init__(self, cfg: Deployment, price: DeploymentPrice, gc: GatewayConfig):
        self.name, self.cfg, self.price = cfg.name, cfg, price
        self.p_in, self.p_cached, self.p_out, self.p_reason = price.floats
        self.base_url = (cfg.base_url or "").rstrip("/")
        self.headers: dict[str, str] = {"Content-Type": "application/json", **resolved_headers(cfg)}
        self.model = cfg.upstream_model
        # None: an OpenAI-compatible upstream (the fast path in lifecycle/wire.py); else the
        # provider's adapter (gateway/providers) translating requests and answers.
        self.adapter = None if cfg.provider == "openai" else adapter_for(cfg, default_max_tokens=gc.defaults.max_tokens)
        self.breaker = Breaker(gc.breaker.failure_threshold, gc.breaker.cooldown_s)
        self.ttft_ms = Ewma()
        self.tpot_ms = Ewma()
        self.cached_frac = Ewma(value=0.0)
        self.in_flight = 0
        self.max_in_flight = cfg.max_in_flight
        self.timeout = None  # aiohttp.ClientTimeout, set by the app

    def set_base_url(self, url: str) -> None:
        self.base_url = url.rstrip("/")

    def expected_cost_usd(self, input_tokens: int, output_tokens: float) -> float:
        f = self.cached_frac.value or 0.0
        return input_tokens * ((1.0 - f) * self.p_in + f * self.p_cached) + output_tokens * self.p_out

    def expected_latency_ms(self, output_tokens: float) -> float:
        # Unobserved deployments score 0 so they get explored once.
        return (self.ttft_ms.value or 0.0) + (self.tpot_ms.value or 0.0) * output_tokens


@dataclass(slots=True)
class Decision:
    order: list[DeploymentRuntime]
    predicted_output_tokens: float
    slo_met: bool | None = None  # cost-under-slo only
    affinity: bool | None = None  # prefix-affinity only: chosen for the prefix it holds
    affinity_tokens: int = 0  # prefix-affinity: prompt tokens the chosen replica is believed to hold
    counterfactual: dict | None = None  # committed-first: what `cost` would have chosen (event extra)


class GroupRuntime:
    __slots__ = ("alias", "cfg", "deployments", "policy", "out_tokens", "limits", "weights", "rng", "affinity",
                 "headroom", "mode")

    def __init__(self, alias: str, cfg: ModelGroup, deps: dict[str, DeploymentRuntime], prior_out: float,
                 seed: int = 0):
        self.alias, self.cfg, self.policy = alias, cfg, cfg.policy
        self.deployments = [deps[n] for n in cfg.deployments]
        self.mode = self.deployments[0].cfg.mode  # chat | embedding (config: a group's deployments agree)
        self.out_tokens = Ewma(alpha=0.1, value=prior_out)
        self.limits = {d.name: cfg.in_flight_limit(d.name, d.max_in_flight) for d in self.deployments}
        self.weights = [float((cfg.weights or {}).get(d.name, 0.0)) for d in self.deployments]
        self.rng = random.Random(seed)
        self.affinity = None
        if self.policy == "prefix-affinity" and len(self.deployments) > 1:
            from tokenomy.engine.affinity import PrefixAffinityRouter

            blocks = max(1, cfg.affinity_cache_tokens * 4 // AFFINITY_BLOCK_BYTES)
            self.affinity = PrefixAffinityRouter(len(self.deployments), capacity_blocks=blocks,
                                                 load_factor=cfg.affinity_load_factor,
                                                 block_tokens=AFFINITY_BLOCK_BYTES // 4)
        self.headroom = {}  # committed-first: deployment name -> its headroom model (gateway/committed.py)
        if self.policy == "committed-first":
            from tokenomy.gateway.committed import committed_of

            for d in self.deployments:
                c = committed_of(d.cfg, cfg.slo, self.limits[d.name])
                if c is not None:
                    self.headroom[d.name] = c

    def full(self, d: DeploymentRuntime) -> bool:
        """committed-first: a committed deployment with no SLO headroom left (checked at dispatch)."""
        c = self.headroom.get(d.name)
        return c is not None and d.in_flight >= c.capacity

    def at_capacity(self, d: DeploymentRuntime) -> bool:
        limit = self.limits[d.name]
        return limit is not None and d.in_flight >= limit

    def observe_output(self, output_tokens: int) -> None:
        self.out_tokens.update(float(output_tokens))

    def rank(self, input_tokens: int, max_tokens: int | None, body: dict | None = None) -> Decision:
        pred = self.out_tokens.value or 0.0
        if max_tokens is not None and max_tokens < pred:
            pred = float(max_tokens)
        deps = self.deployments
        if len(deps) == 1:
            return Decision(list(deps), pred)
        policy = self.policy
        if policy == "cost":
            key = lambda d: (not d.breaker.available(), self.at_capacity(d),  # noqa: E731
                             d.expected_cost_usd(input_tokens, pred))
            return Decision(sorted(deps, key=key), pred)
        if policy == "latency":
            key = lambda d: (not d.breaker.available(), self.at_capacity(d),  # noqa: E731
                             d.expected_latency_ms(pred))
            return Decision(sorted(deps, key=key), pred)
        if policy == "cost-under-slo":
            return self._cost_under_slo(input_tokens, pred)
        if policy == "prefix-affinity":
            return self._prefix_affinity(input_tokens, pred, prompt_prefix_hashes(body) if body else [])
        if policy == "committed-first":
            return self._committed_first(input_tokens, pred)
        return self._weighted(pred)

    def _committed_first(self, input_tokens: int, pred: float) -> Decision:
        slo = self.cfg.slo
        ttft_slo = slo.ttft_ms if slo is not None else None
        first, spill = [], []
        for d in self.deployments:
            c = self.headroom.get(d.name)
            if c is None:
                continue
            fits = (d.breaker.available() and not self.at_capacity(d) and d.in_flight < c.capacity
                    and (ttft_slo is None or c.ttft_ms(input_tokens) <= ttft_slo))
            if fits:
                first.append((c.marginal_usd(d.in_flight, input_tokens, pred), d.in_flight, d))
            else:
                spill.append((not d.breaker.available(), d.in_flight - c.capacity, d))
        first.sort(key=lambda t: (t[0], t[1]))
        spill.sort(key=lambda t: (t[0], t[1]))
        others = [d for d in self.deployments if d.name not in self.headroom]
        rest = self._cost_under_slo(input_tokens, pred, others) if others else None
        order = [t[2] for t in first] + (rest.order if rest else []) + [t[2] for t in spill]
        # the counterfactual: `cost` on list prices over the live deployments, whatever their load
        cf = min(self.deployments, key=lambda d: (not d.breaker.available(), d.expected_cost_usd(input_tokens, pred)))
        met = None if slo is None else bool(first) or bool(rest and rest.slo_met)
        return Decision(order, pred, slo_met=met,
                        counterfactual={"deployment": cf.name, "usd_per_mtok": _usd_per_mtok(cf),
                                        "committed": sorted(self.headroom)})

    def _prefix_affinity(self, input_tokens: int, pred: float, hashes: list[int]) -> Decision:
        router = self.affinity
        assert router is not None
        deps = self.deployments
        n = len(deps)
        depth, _ = router.depths(hashes)
        loads = [d.in_flight for d in deps]
        bound = router.bound(loads)
        mean = sum(loads) / n
        ok, rest = [], []
        for i, d in enumerate(deps):
            held = min(float(input_tokens), depth[i] * router.block_tokens)
            f = held / input_tokens if input_tokens else 0.0
            if not hashes and d.cached_frac.value:
                f = d.cached_frac.value  # no prompt to hash: the observed average
            cost = input_tokens * ((1.0 - f) * d.p_in + f * d.p_cached) + pred * d.p_out
            # the load penalty is priced as the recompute it stands for (0 when caching is unpriced:
            # then the score breaks the tie between equally priced replicas)
            gain = router.score(depth[i], loads[i], mean)
            penalty = router.load_penalty_tokens * max(0.0, loads[i] - mean) * max(d.p_in - d.p_cached, 0.0)
            bad = self._slo_badness(d)
            live = d.breaker.available() and bad <= 1.0 and not self.at_capacity(d)
            row = (cost + penalty, -gain, loads[i], i, bad)
            (ok if live and loads[i] + 1 <= bound else rest).append(row)
        ok.sort()
        rest.sort(key=lambda t: (not deps[t[3]].breaker.available(), self.at_capacity(deps[t[3]]), t[4] > 1.0,
                                 t[2], t[0]))
        order = [deps[t[3]] for t in ok] + [deps[t[3]] for t in rest]
        chosen = deps.index(order[0])
        router.record(chosen, hashes)
        pool = ok or rest  # routed for affinity: it holds more of the prompt than another eligible replica
        return Decision(order, pred, slo_met=bool(ok) if self.cfg.slo else None,
                        affinity=depth[chosen] > min(depth[t[3]] for t in pool),
                        affinity_tokens=int(min(input_tokens, depth[chosen] * router.block_tokens)))

    def _slo_badness(self, d: DeploymentRuntime) -> float:
        """max(observed / target) over TTFT and TPOT; <= 1 meets the SLO (unobserved counts as met)."""
        slo = self.cfg.slo
        bad = 0.0
        if slo is not None:
            if slo.ttft_ms and d.ttft_ms.value is not None:
                bad = max(bad, d.ttft_ms.value / slo.ttft_ms)
            if slo.tpot_ms and d.tpot_ms.value is not None:
                bad = max(bad, d.tpot_ms.value / slo.tpot_ms)
        return bad

    def _cost_under_slo(self, input_tokens: int, pred: float, deps: list[DeploymentRuntime] | None = None) -> Decision:
        meeting, missing = [], []
        for d in self.deployments if deps is None else deps:
            bad = self._slo_badness(d)
            ok = d.breaker.available() and bad <= 1.0 and not self.at_capacity(d)
            (meeting if ok else missing).append((d.expected_cost_usd(input_tokens, pred), bad, d))
        meeting.sort(key=lambda t: t[0])
        # Least bad first among those that miss: available, with capacity, smallest violation.
        missing.sort(key=lambda t: (not t[2].breaker.available(), self.at_capacity(t[2]), t[1], t[0]))
        order = [t[2] for t in meeting] + [t[2] for t in missing]
        return Decision(order, pred, slo_met=bool(meeting))

    def _weighted(self, pred: float) -> Decision:
        live = [(w, d) for w, d in zip(self.weights, self.deployments)
                if w > 0 and d.breaker.available() and not self.at_capacity(d)]
        rest = sorted(self.deployments, key=lambda d: -self.weights[self.deployments.index(d)])
        if not live:
            return Decision(rest, pred)
        x = self.rng.random() * sum(w for w, _ in live)
        chosen = live[-1][1]
        for w, d in live:
            x -= w
            if x < 0:
                chosen = d
                break
        return Decision([chosen] + [d for d in rest if d is not chosen], pred)


def build_groups(gc: GatewayConfig, deps: dict[str, DeploymentRuntime]) -> dict[str, GroupRuntime]:
    return {alias: GroupRuntime(alias, g, deps, gc.defaults.predicted_output_tokens, seed=i)
            for i, (alias, g) in enumerate(gc.groups().items())}


# ------------------------------------------------------------------ routed aliases (quality router, cascade)
def _calibration_prompts() -> list[str]:
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "routing" / "calibration_prompts.json"
    return list(json.loads(path.read_text(encoding="utf-8"))["prompts"])


def _usd_per_mtok(d: DeploymentRuntime) -> list[str]:
    p = d.price
    return [format(x.normalize(), "f") for x in (p.usd_per_mtok_input, p.usd_per_mtok_cached_input,
                                                 p.usd_per_mtok_output, p.usd_per_mtok_reasoning)]


class RouteRuntime:
    """A routed alias (config `routing_groups`): per request, pick one candidate model group
    (policy router), or answer with the weakest and escalate to the strongest (policy cascade).

    The router is loaded once at start. `strong_share` with a binary router: a live threshold
    (routing.quality.threshold.ShareThreshold) started from the shipped sample of users' requests and
    moved by every decision's score; with a multi-model router: calibrated once on the shipped
    300-prompt sample (tokenomy/routing/calibration_prompts.json)."""

    def __init__(self, alias: str, cfg, groups: dict[str, GroupRuntime], redis: tuple[str, str] | None = None):
        """`redis`: (url, key prefix) of the counters' Redis, where strong_share cuts are shared."""
        from tokenomy.errors import ConfigError, TokenomyError

        self.alias, self.cfg, self.policy = alias, cfg, cfg.policy
        self.candidates = [groups[c] for c in cfg.candidates]
        self.router = None
        self.verifier = None
        self.judge = None  # (GroupRuntime, JudgeVerifier used for its rubric and parsing)
        self.logprobs_refused: set[str] = set()  # weak deployments that answered 400 to a logprobs ask
        self.samples: int | None = None  # verifier agreement: k samples asked of the weak group
        self.kind = "cascade"
        self.threshold = 0.0
        self.share = None  # ShareThreshold of strong_share (binary router) or escalate_share (cascade), online
        self.share_sync = None  # ShareSync merging it with the other replicas' (Redis counters configured)
        where = f"routing_groups.{alias}"
        try:
            if cfg.policy == "cascade":
                spec = cfg.cascade_spec
                self.threshold = spec.threshold
                if spec.escalate_share is not None:  # the cut follows live traffic's escalation scores
                    from tokenomy.routing.quality.threshold import ShareThreshold

                    self.kind = "escalate_share"
                    # no start-up sample of weak answers exists: an empty histogram (cut 0.5) until
                    # the first refresh (16 answers), then the live quantile
                    self.share = ShareThreshold(spec.escalate_share, half_life=cfg.share_half_life)
                    self.threshold = 1.0 - self.share.value
                    self._share_sync(alias, cfg, redis)
                if spec.judge is not None:
                    from tokenomy.routing.cascade import JudgeVerifier

                    jv = JudgeVerifier("http://judge.invalid", None, spec.judge.model,
                                       **({"rubric": spec.judge.rubric} if spec.judge.rubric else {}),
                                       max_tokens=spec.judge.max_tokens)
                    self.judge = (groups[spec.judge.model], jv)
                    self.verifier_name = f"judge:{spec.judge.model}"
                else:
                    from tokenomy.routing.cascade import load_verifier

                    self.verifier = load_verifier(spec.verifier)
                    self.verifier_name = spec.verifier
                    if getattr(self.verifier, "wants_samples", False):
                        self.samples = spec.samples
            else:
                from tokenomy.routing.quality.registry import load_router

                self.router = load_router(cfg.router)
        except TokenomyError as exc:
            field = "cascade.verifier" if cfg.policy == "cascade" else "router"
            raise ConfigError(f"invalid config: {where}.{field}: {exc}") from None
        # Names the router knows the candidates by (multi-model routers).
        self.names = [(cfg.router_models or {}).get(c, c) for c in cfg.candidates]
        self.multi = bool(hasattr(self.router, "quality_of") and set(self.names) <= set(getattr(self.router, "models", None) or ()))
        if cfg.policy == "router":
            for kind in ("strong_share", "min_quality", "threshold", "max_usd_per_request"):
                if getattr(cfg, kind) is not None:
                    self.kind = kind
            if self.kind == "strong_share" and self.multi:
                self.threshold = self.calibrate(_calibration_prompts(), cfg.strong_share)
            elif self.kind == "strong_share":  # binary router: the cut follows live traffic's scores
                from tokenomy.routing.quality.registry import score_prompts
                from tokenomy.routing.quality.threshold import ShareThreshold, startup_prompts

                self.share = ShareThreshold(cfg.strong_share, score_prompts(self.router, startup_prompts()),
                                            half_life=cfg.share_half_life)
                self.threshold = self.share.value
                self._share_sync(alias, cfg, redis)
            elif self.kind in ("min_quality", "threshold"):
                self.threshold = float(getattr(cfg, self.kind))
            else:  # max_usd_per_request: best predicted among the affordable candidates
                self.threshold = 2.0 if self.multi else 0.0

    def _share_sync(self, alias: str, cfg, redis: tuple[str, str] | None) -> None:
        """With Redis counters: merge this alias's live-share histogram with the other replicas'."""
        if redis is not None and cfg.share_sync_every > 0:
            from tokenomy.routing.quality.share_sync import ShareSync

            url, prefix = redis
            self.share_sync = ShareSync(self.share, url=url, key=f"{prefix}share:{alias}", every=cfg.share_sync_every)

    def observe_escalation(self, score: float) -> None:
        """cascade with escalate_share: feed one weak answer's verifier score to the live cut.
        Escalation score = 1 - verifier score; the ShareThreshold's (1 - share) quantile of it is
        the cut, so ~escalate_share of answers score below `threshold` (= 1 - that cut)."""
        if self.share is None:
            return
        self.share.observe(1.0 - float(score))
        if self.share_sync is not None:
            self.share_sync.after_observe()
        self.threshold = 1.0 - self.share.value

    # ------------------------------------------------------------ calibration
    def calibrate(self, prompts: list[str], strong_share: float) -> float:
        """The threshold that sends ~strong_share of `prompts` to the strongest candidate."""
        from tokenomy.routing.quality.choose import threshold_for_strong_share

        if not self.multi:
            return threshold_for_strong_share(self.router, prompts, strong_share)
        import numpy as np

        q = np.array([self.router.quality_of(p, self.names) for p in prompts])  # prompts x candidates
        lo, hi = 0.0, 1.0 + 1e-9
        for _ in range(40):  # strong share falls as the quality bar drops: bisect the bar
            mid = (lo + hi) / 2
            if self._strong_share(q, mid) > strong_share:
                hi = mid
            else:
                lo = mid
        return hi if abs(self._strong_share(q, hi) - strong_share) <= abs(self._strong_share(q, lo) - strong_share) else lo

    @staticmethod
    def _strong_share(q, t: float) -> float:
        """Share of rows where choose_model (candidates priced weak < .. < strong) picks the last."""
        import numpy as np

        cheaper_ok = (q[:, :-1] >= t).any(axis=1)
        strong = ~cheaper_ok & ((q[:, -1] >= t) | (np.argmax(q, axis=1) == q.shape[1] - 1))
        return float(strong.mean()) if len(q) else 0.0

    def strong_share_on(self, prompts: list[str]) -> float:
        """Measured share of `prompts` this alias sends to its strongest candidate (equal token counts)."""
        n = 0
        for p in prompts:
            n += self.decide(p, [(g, float(i + 1)) for i, g in enumerate(self.candidates)], observe=False)[1] \
                is self.candidates[-1]
        return n / len(prompts) if prompts else 0.0

    # ------------------------------------------------------------ per request
    def priced(self, input_tokens: int, max_tokens: int | None) -> list[tuple[GroupRuntime, float, DeploymentRuntime]]:
        """(group, expected USD of this request on it, its cheapest available deployment) per candidate."""
        out = []
        for g in self.candidates:
            pred = g.out_tokens.value or 0.0
            if max_tokens is not None and max_tokens < pred:
                pred = float(max_tokens)
            live = [d for d in g.deployments if d.breaker.available()] or g.deployments
            best = min(live, key=lambda d: d.expected_cost_usd(input_tokens, pred))
            out.append((g, best.expected_cost_usd(input_tokens, pred), best))
        return out

    def decide(self, prompt: str, priced: list[tuple], observe: bool = True) -> tuple:
        """-> (quality Decision, chosen GroupRuntime). `priced`: (group, expected USD[, deployment]).
        With `strong_share`, the decision's score feeds the live threshold (unless `observe` is False)."""
        from tokenomy.routing.quality.choose import choose_model

        cands = [(self.names[self.candidates.index(t[0])], t[1]) for t in priced]
        if self.kind == "max_usd_per_request":
            cap = self.cfg.max_usd_per_request
            fit = [c for c in cands if c[1] <= cap] or [min(cands, key=lambda c: c[1])]
            cands = fit
        d = choose_model(prompt, cands, self.threshold, router=self.router)
        if observe and self.share is not None:
            self.share.observe(d.strong_win_rate)
            if self.share_sync is not None:
                self.share_sync.after_observe()
            self.threshold = self.share.value
        return d, self.candidates[self.names.index(d.model)]

    def route_extra(self, priced: list[tuple], chosen: GroupRuntime) -> dict:
        """The part of extra.route every policy records: alias, candidates with the expected cost
        of this request and the USD/Mtok (input, cached input, output, reasoning) of the
        deployment it would use (so `tokenomy route savings` can re-price the request)."""
        return {"alias": self.alias, "policy": self.policy, "kind": self.kind,
                "strong": chosen is self.candidates[-1], "served": chosen.alias,
                "candidates": [{"model": g.alias, "expected_usd": round(c, 12), "deployment": d.name,
                                "usd_per_mtok": _usd_per_mtok(d)} for g, c, d in priced]}
