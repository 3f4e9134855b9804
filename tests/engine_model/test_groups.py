"""Sequence groups in the shared engine model (OpenAI's `n`): n requests on one prompt share its
prefill through the prefix cache within one batch (vLLM V1's fan-out), hold its blocks once, and
decode as n sequences of the batch."""

from __future__ import annotations

import pytest

from tokenomy.catalog import load_catalog
from tokenomy.engine.predictor import StepPredictor
from tokenomy.engine.request import RequestTable
from tokenomy.engine.scheduler import ReplicaScheduler, SchedulerConfig
from tokenomy.perf import make_step_model

PROMPT, HASHES, OUTS = 100, list(range(1, 7)), [3, 5, 2, 4]  # 100 tokens: 6 full 16-token blocks


@pytest.fixture(scope="module")
def sm():
    cat = load_catalog()
    return make_step_model(cat.model("llama-3-8b"), cat.accelerator("h100"))


def _sched(sm, caching: bool = True) -> tuple[ReplicaScheduler, list[int]]:
    req = RequestTable()
    s = ReplicaScheduler(StepPredictor(sm), SchedulerConfig(kv_policy="reserve", kv_watermark=0.0,
                                                            macro_steps=False, prefix_caching=caching), req,
                         max_kv_tokens=10_000)
    rids = [req.add(0.0, PROMPT, o, tuple(HASHES)) for o in OUTS]
    s.submit_group(rids)
    return s, rids


def test_a_group_prefills_its_prompt_once_and_decodes_together(sm):
    s, rids = _sched(sm)
    rec = s.step()
    # the leader computes the prompt; each sibling only its tail (6 blocks cached, the last 4 tokens computed)
    assert rec.chunks == [(rids[0], 100), (rids[1], 4), (rids[2], 4), (rids[3], 4)]
    assert s.req.cached_tokens == [0, 96, 96, 96]
    assert rec.seconds == pytest.approx(sm.step_seconds(prefill_tokens=112, prefill_context=288, prefill_seqs=4),
                                        rel=1e-12)
    assert all(s.req.first_token_s[r] == rec.seconds for r in rids)  # one step: every choice's first token
    # KV ("reserve": context + whole output) holds the prompt once: 100 + 3 tails of 4 + the outputs
    assert s.mem_tokens() == 100 + 3 * 4 + sum(OUTS) and s.cache.tokens == 96
    steps = [rec]
    while (r := s.step()) is not None:
        steps.append(r)
    assert len(steps) == max(OUTS) and [s.generated(r) for r in rids] == OUTS
    assert [len(r.decoded) for r in steps[1:]] == [4, 3, 2, 1]  # n sequences of the batch, leaving as they end


def test_without_prefix_caching_each_sequence_prefills_the_prompt(sm):
    s, rids = _sched(sm, caching=False)
    rec = s.step()
    assert rec.chunks == [(r, 100) for r in rids] and s.req.cached_tokens == [0, 0, 0, 0]
    assert s.mem_tokens() == 4 * 100 + sum(OUTS)


def test_a_lone_request_publishes_its_blocks_only_after_its_prefill(sm):
    # submit_group of one is submit(): a same-prefix request in the same batch gets no hit (the simulator's rule)
    req = RequestTable()
    s = ReplicaScheduler(StepPredictor(sm), SchedulerConfig(macro_steps=False), req, max_kv_tokens=10_000)
    a, b = req.add(0.0, PROMPT, 2, tuple(HASHES)), req.add(0.0, PROMPT, 2, tuple(HASHES))
    s.submit_group([a])
    s.submit(b)
    rec = s.step()
    assert rec.chunks == [(a, 100), (b, 100)] and req.cached_tokens == [0, 0] and not s.leaders


def test_a_dropped_leader_is_forgotten(sm):
    s, rids = _sched(sm)
    s.drop(rids[0])
    assert not s.leaders
    rec = s.step()
    assert rec.chunks[0] == (rids[1], 100)  # the next sibling prefills the whole prompt
