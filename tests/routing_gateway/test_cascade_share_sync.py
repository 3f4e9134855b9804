"""cascade.escalate_share across replicas: two real gateway processes (`tokenomy up`) on one private
redis-server (a private key prefix) merge their escalation-score histograms (routing.quality.share_sync),
so ONE cut holds for the fleet. The weak upstream is the emulator with verifier cascade-logprobs;
max_tokens spreads the scores (the emulator's longer answers score lower, as in
test_cascade_logprobs). The load balancer is skewed on purpose: replica A gets mostly short answers,
replica B mostly long ones. Per-replica cuts would each escalate 30 % of their own traffic; the shared
cut escalates the long ones wherever they land, and the COMBINED share meets the target.
Counts only (decisions read from the response headers), never timings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rg_helpers import replica_outcomes
from service_procs import private_redis_server

KEY = "tk-cascadeshare-0123456789abcdef"
TARGET = 0.3
PER_REPLICA = 400
SYNC_EVERY = 8


@pytest.fixture
def private_redis(tmp_path):
    with private_redis_server(tmp_path, "shared escalate_share") as pr:
        yield pr


def _config(tmp_path: Path, redis_url: str | None) -> Path:
    def emu(name: str, usd_in: float) -> dict:
        return {"name": name, "model": "m", "emulate": {"time_scale": 0.001},
                "pricing": {"list": {"input": usd_in, "output": usd_in * 4}}}

    cfg = {
        "deployments": [emu("weak@emu", 0.1), emu("strong@emu", 1.0)],
        "model_groups": {"weak": {"deployments": ["weak@emu"]}, "strong": {"deployments": ["strong@emu"]}},
        "routing_groups": {"auto": {"candidates": ["weak", "strong"], "policy": "cascade",
                                    "share_sync_every": SYNC_EVERY, "share_half_life": 100,
                                    "cascade": {"verifier": "cascade-logprobs", "escalate_share": TARGET}}},
        "tenants": [{"name": "t"}],
        "keys": [{"tenant": "t", "secret": KEY}],
    }
    if redis_url:
        cfg["counters"] = {"url": redis_url, "prefix": "cascadesharetest:"}
    path = tmp_path / ("with_redis.json" if redis_url else "local.json")
    path.write_text(json.dumps(cfg))
    return path


def _streams():
    """Replica A: 80 % short answers (max_tokens 2..31); replica B: 80 % long ones (60..91). Seeded."""
    rng = np.random.default_rng(11)

    def one(p_long: float, tag: str) -> list[tuple[str, int, bool]]:
        out = []
        for i in range(PER_REPLICA):
            long = bool(rng.random() < p_long)
            mt = int(rng.integers(60, 92) if long else rng.integers(2, 32))
            out.append((f"Request {tag}{i}: summarise item {int(rng.integers(1000))} of the catalogue.", mt, long))
        return out

    return one(0.2, "a"), one(0.8, "b")


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "per-replica"])
async def test_two_gateways_share_one_escalation_cut(private_redis, tmp_path, shared):
    _, url = private_redis
    config = _config(tmp_path, url if shared else None)
    streams = _streams()
    a, b = await replica_outcomes(config, tmp_path, streams, KEY, lambda item: (item[0], item[1]),
                                  lambda h: h["x-tokenomy-cascade-escalated"] == "true")
    half = PER_REPLICA // 2   # once adapted: the second half of each stream
    share_a, share_b = np.mean(a[half:]), np.mean(b[half:])
    combined = np.mean(a[half:] + b[half:])
    short_escalated = [sum(e and not long for e, (_, _, long) in zip(went[half:], stream[half:]))
                       for went, stream in ((a, streams[0]), (b, streams[1]))]
    if shared:
        # one cut for the fleet: the combined share meets the target, spent on B's long answers
        # (measured: combined 0.330-0.333, A 0.195, B 0.465-0.470, short answers escalated A 12, B 4)
        assert abs(combined - TARGET) <= 0.06, (share_a, share_b, combined)
        assert share_a < 0.25 and share_b > 0.4 and short_escalated[0] <= 20, (share_a, share_b, short_escalated)
    else:
        # per-replica cuts: each replica escalates ~30 % of its OWN traffic, so A (mostly short answers)
        # escalates short ones that the shared cut keeps (deterministic: no Redis, a fixed stream;
        # measured A 0.345 with 29 short ones escalated, B 0.365)
        assert abs(share_a - TARGET) <= 0.08 and abs(share_b - TARGET) <= 0.08, (share_a, share_b)
        assert short_escalated[0] >= 25, short_escalated
