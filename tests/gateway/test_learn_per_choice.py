"""What a served call teaches the routing EWMAs is per sequence: n choices (a client's n, an
agreement cascade's k samples) decode side by side, so output length and TPOT are per choice."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tokenomy.gateway.health import Ewma
from tokenomy.gateway.lifecycle.settle import _learn


def _call(n_choices: int, out_tokens: int, *, stream: bool):
    seen: list[int] = []
    ctx = SimpleNamespace(group=SimpleNamespace(observe_output=seen.append), n_choices=n_choices)
    d = SimpleNamespace(name="dep", cached_frac=Ewma(), ttft_ms=Ewma(value=100.0), tpot_ms=Ewma())
    longest: dict[str, int] = {}
    # a call of 1.1 s: first token at 0.1 s, the rest decoded in 1.0 s
    _learn(longest, ctx, d, (500, 0, out_tokens, 0), 100.0 if stream else None, 0.1 if stream else None, 0.0, 1.1)
    return seen, d.tpot_ms.value, longest["dep"]


@pytest.mark.parametrize("stream", [True, False])
def test_k_samples_teach_one_sequence_not_their_sum(stream):
    one = _call(1, 101, stream=stream)
    five = _call(5, 505, stream=stream)   # five samples of 101 tokens each, decoded together
    assert one[0] == five[0] == [101] and one[2] == five[2] == 101
    assert five[1] == pytest.approx(one[1])          # the same per-token decode time
    assert one[1] == pytest.approx(10.0 if stream else 1000.0 / 101)
