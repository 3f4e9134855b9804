"""A cascade whose weak deployment is the REAL llama.cpp server (llama-cpp-python on the tiny model):
the gateway asks it for token logprobs (`cascade-logprobs`), scores the real numbers, records
them in the event's extra.route, and the client's answer carries none (it did not ask)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from engine_procs import MODEL_ALIAS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))
from gw_helpers import gateway, list_dep  # noqa: E402

pytestmark = pytest.mark.engine


def _cfg(llama_url: str, **cascade) -> dict:
    return {"deployments": [list_dep("llama-weak", llama_url, 0.1, 0.2, model=MODEL_ALIAS),
                            {"name": "strong@emu", "model": "m", "emulate": {"time_scale": 0.001},
                             "pricing": {"list": {"input": 5.0, "output": 15.0}}}],
            "model_groups": {"weak": {"deployments": ["llama-weak"]}, "strong": {"deployments": ["strong@emu"]}},
            "routing_groups": {"auto": {"candidates": ["weak", "strong"], "policy": "cascade",
                                        "cascade": {"verifier": "cascade-logprobs", **cascade}}}}


def _route(g, rid: str) -> dict:
    return {e.id: e for e in g.metering.events("t1")}[rid].extra["route"]


def _real_stats(lp: dict, n_out: int) -> None:
    assert 0 < lp["n"] <= n_out + 3
    assert -100.0 <= lp["min"] <= lp["mean"] <= 0.0
    # a random-weight model over a ~256-token byte vocabulary: near-uniform, p ~ 1/vocab per token
    assert lp["mean"] < -2.0
    assert lp["entropy"] is not None and 0.0 < lp["entropy"] <= math.log(5) + 1e-6


async def test_cascade_weak_llama_server_logprobs(llama_server: str, tmp_path: Path):
    from tokenomy.routing.cascade import LogprobStats, load_verifier

    async with gateway(_cfg(llama_server, threshold=0.0), tmp_path / "ledger") as g:
        body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8,
                "temperature": 0.0}
        st, h, out = await g.post("/v1/chat/completions", body, g.key())
        assert st == 200, out
        assert h["x-tokenomy-cascade-served-by"] == "weak" and h["x-tokenomy-deployment"] == "llama-weak"
        assert out["choices"][0].get("logprobs") is None              # the client did not ask
        route = _route(g, h["x-tokenomy-request-id"])
        lp = route["logprobs"]
        _real_stats(lp, out["usage"]["completion_tokens"])
        assert h["x-tokenomy-cascade-logprobs"].startswith(f"n={lp['n']}; ")
        # the score is the prior applied to the real stats (rounded in the event: 4 decimals)
        stats = LogprobStats(lp["n"], lp["mean"], lp["min"], lp["entropy"], lp["low_share"])
        text = out["choices"][0]["message"]["content"]
        assert route["score"] == pytest.approx(load_verifier("cascade-logprobs").score_response("hello", text, stats),
                                               abs=1e-3)

        # legacy completions on the same engine: `logprobs: 5`
        st, h, out = await g.post("/v1/completions", {"model": "auto", "prompt": "hi", "max_tokens": 6,
                                                      "temperature": 0.0}, g.key())
        assert st == 200, out
        assert out["choices"][0].get("logprobs") is None
        _real_stats(_route(g, h["x-tokenomy-request-id"])["logprobs"], out["usage"]["completion_tokens"])
