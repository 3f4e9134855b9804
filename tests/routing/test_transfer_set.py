"""The shipped default router on a second hand-written transfer set (evaluation only, never trained on).

`data/transfer_user_prompts.jsonl`: 122 realistic user prompts across writing, roleplay, extraction,
reasoning, maths, coding, STEM, humanities and everyday requests in 9 languages, each labelled by hand
with whether a strong model clearly helps (see data/README.md). Unlike the obvious-difficulty set it is
graded (`some` = weak 0.5) and holds long easy requests (newsletters, cover letters, proofreading) and
short hard ones; the router only has to rank it well, and order each same-domain easy/hard pair.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tokenomy.routing.quality import load_router
from tokenomy.routing.quality.baselines import LengthRouter
from tokenomy.routing.quality.metrics import apgr, curve
from tokenomy.routing.quality.threshold import calibration_prompts

from .conftest import DATA

# Floor for the shipped default (measured 0.75-0.78 while building it; prompt length 0.686, oracle 0.818).
# Below it the router has lost the task-kind ordering that transfers to other people's prompts.
APGR_FLOOR = 0.72


@pytest.fixture(scope="module")
def items():
    return [json.loads(line) for line in (DATA / "transfer_user_prompts.jsonl").open(encoding="utf-8")]


@pytest.fixture(scope="module")
def scores(items):
    r = load_router("default")
    return np.array([r.strong_win_rate(x["prompt"]) for x in items])


def _apgr(s, items) -> float:
    return apgr(curve(s, [x["weak"] for x in items], [x["strong"] for x in items]))


def test_set_is_hand_written_varied_and_kept_out_of_training(items, sample_rows):
    assert len(items) >= 120 and len({x["prompt"] for x in items}) == len(items)
    assert {x["category"] for x in items} >= {"writing", "roleplay", "extraction", "reasoning", "math", "coding",
                                               "stem", "humanities"}
    assert len({x["lang"] for x in items}) >= 8
    by = {k: [x for x in items if x["strong_helps"] == k] for k in ("yes", "some", "no")}
    assert len(by["yes"]) >= 30 and len(by["no"]) >= 60 and len(by["some"]) >= 10
    assert all(x["weak"] == {"yes": 0.0, "some": 0.5, "no": 1.0}[x["strong_helps"]] and x["strong"] == 1.0 for x in items)
    # length alone must not solve it: long easy requests and short hard ones are in it
    assert sum(len(x["prompt"]) > 250 for x in by["no"]) >= 5 and sum(len(x["prompt"]) < 80 for x in by["yes"]) >= 5
    seen = {r.prompt for r in sample_rows} | set(calibration_prompts())
    assert not seen & {x["prompt"] for x in items}


def test_apgr_above_floor_and_above_length(items, scores):
    ours = _apgr(scores, items)
    length = _apgr(np.array([LengthRouter().strong_win_rate(x["prompt"]) for x in items]), items)
    assert ours >= APGR_FLOOR, ours
    assert ours > length + 0.03, (ours, length)


def test_every_same_domain_pair_is_ordered_right(items, scores):
    pairs: dict[str, dict[str, float]] = {}
    for x, s in zip(items, scores):
        if "pair" in x:
            pairs.setdefault(x["pair"], {})["easy" if x["strong_helps"] == "no" else "hard"] = float(s)
    assert len(pairs) >= 8 and all(set(p) == {"easy", "hard"} for p in pairs.values())
    wrong = {k: p for k, p in pairs.items() if p["hard"] <= p["easy"]}
    assert wrong == {}


def test_strong_helps_ranks_in_order_on_average(items, scores):
    """Mean score: clearly-helps > somewhat > does-not-help (the graded middle sits in between)."""
    mean = {k: float(np.mean([s for x, s in zip(items, scores) if x["strong_helps"] == k])) for k in ("yes", "some", "no")}
    assert mean["yes"] > mean["some"] > mean["no"], mean
