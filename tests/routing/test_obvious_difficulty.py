"""The shipped default router on the hand-written obvious-difficulty set (never trained on)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tokenomy.routing.quality import load_router
from tokenomy.routing.quality.metrics import apgr, curve
from tokenomy.routing.quality.threshold import ShareThreshold, calibration_prompts, startup_threshold

from .conftest import DATA


@pytest.fixture(scope="module")
def obvious():
    return [json.loads(line) for line in (DATA / "obvious_difficulty.jsonl").open(encoding="utf-8")]


@pytest.fixture(scope="module")
def scored(obvious):
    r = load_router("default")
    scores = np.array([r.strong_win_rate(x["prompt"]) for x in obvious])
    hard = np.array([x["difficulty"] == "hard" for x in obvious])
    return scores, hard


def test_set_is_hand_written_and_kept_out_of_training(obvious, sample_rows):
    assert len(obvious) >= 150 and len({x["prompt"] for x in obvious}) == len(obvious)
    hard = [x for x in obvious if x["difficulty"] == "hard"]
    easy = [x for x in obvious if x["difficulty"] == "easy"]
    assert len(hard) >= 60 and len(easy) >= 60
    assert {x["lang"] for x in obvious} >= {"en", "de", "fr", "es", "pl", "ja", "zh"}
    # long easy and short hard ones are in it (length alone must not solve it)
    assert sum(len(x["prompt"]) > 400 for x in easy) >= 4 and sum(len(x["prompt"]) < 45 for x in hard) >= 4
    seen = {r.prompt for r in sample_rows} | set(calibration_prompts())
    assert not seen & {x["prompt"] for x in obvious}


def test_no_obvious_case_routed_the_wrong_way_round(obvious, scored):
    scores, hard = scored
    # at the default threshold of `tokenomy route choose` / `route explain` (the gateway's start-up cut
    # for strong_share 0.3) every easy prompt goes weak, every hard one strong
    t = startup_threshold(load_router("default"), 0.3)
    wrong = [(x["prompt"][:60], round(float(s), 3)) for x, s, h in zip(obvious, scores, hard)
             if (s >= t) != h]
    assert wrong == []
    # and no pair is inverted: every hard prompt scores above every easy one
    assert scores[hard].min() > scores[~hard].max()


def test_obvious_set_apgr_reaches_the_oracle(obvious, scored):
    scores, hard = scored
    weak = np.array([x["weak"] for x in obvious])
    strong = np.array([x["strong"] for x in obvious])
    ours = apgr(curve(scores, weak, strong))
    oracle = apgr(curve(strong - weak, weak, strong))
    length = apgr(curve([len(x["prompt"]) for x in obvious], weak, strong))
    assert oracle == pytest.approx(1 - hard.mean() / 2, abs=1e-3)   # 0/1 gains: PGR = min(share / hard, 1)
    assert ours >= 0.98 * oracle and ours > length + 0.05


def test_start_up_threshold_routes_every_obvious_case_right(scored):
    """The gateway's default (`strong_share: 0.3`) starts from the start-up sample's quantile: a new
    user's first "hi" goes weak and first "Implement a lock-free MPMC queue" goes strong."""
    scores, hard = scored
    t = startup_threshold(load_router("default"), 0.3)
    assert not (scores[~hard] >= t).any() and (scores[hard] >= t).all()


def test_live_threshold_on_obvious_traffic_sends_exactly_the_hard_ones(obvious, scored):
    """Traffic like this set, a target share a little below its hard share: once adapted, only hard ones go strong."""
    scores, hard = scored
    share = ShareThreshold(float(hard.mean()) - 0.05, [0.9] * 300, half_life=500)   # a start-up sample far off
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(scores), 4000):
        share.observe(float(scores[i]))
    strong = scores >= share.value
    assert not strong[~hard].any() and strong[hard].mean() >= 0.8
