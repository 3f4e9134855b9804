"""Fitting cascade-logprobs' weights on labelled rows with weak_logprobs (`tokenomy route train
--router cascade-logprobs`). No real labelled logprob data exists here: the rows below are the
shipped cascade sample with SYNTHETIC logprobs (seeded; worse answers get less likely, more
hesitant tokens), which tests the machinery, not any claim about real models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tokenomy.cli import app
from tokenomy.errors import TokenomyError
from tokenomy.routing.cascade import LogprobVerifier, is_cascade_artifact, load_verifier
from tokenomy.routing.cascade.logprob_fit import (fit_logprob_verifier, read_logprob_rows, row_logprobs,
                                                  stats_from_json)
from tokenomy.routing.cascade.logprobs import PRIOR

SAMPLE = Path(__file__).parent / "data" / "cascade_sample.jsonl"


def _synthetic_logprobs(bad: float, rng: np.random.Generator, as_stats: bool) -> dict:
    n = 40
    lps = -rng.exponential(0.15 + 1.5 * bad, n)
    gap = 2.5 - 2.0 * bad   # a smaller gap to the alternatives: a more hesitant token
    content = [{"token": f"t{i}", "logprob": float(lp),
                "top_logprobs": [{"token": f"a{j}", "logprob": float(lp - j * gap)} for j in range(5)]}
               for i, lp in enumerate(lps)]
    raw = {"content": content}
    if not as_stats:
        return raw
    from tokenomy.routing.cascade import logprob_stats

    return logprob_stats(raw).to_json()  # the form the gateway records in extra.route.logprobs


@pytest.fixture(scope="module")
def rows_path(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("lpfit") / "rows.jsonl"
    with out.open("w", encoding="utf-8") as fh:
        for i, line in enumerate(SAMPLE.read_text(encoding="utf-8").splitlines()):
            obj = json.loads(line)
            if i % 10 != 9:   # every tenth row has none: left out of the fit
                obj["weak_logprobs"] = _synthetic_logprobs(1.0 - obj["weak"], rng, as_stats=i % 2 == 0)
            fh.write(json.dumps(obj) + "\n")
    return out


def test_gateway_stats_are_validated():
    assert stats_from_json({"n": 5, "mean": -0.5, "min": -2.0, "entropy": 0.3}).n_tokens == 5
    s = stats_from_json({"n": 5, "mean": -500, "min": 3, "entropy": -1, "low_share": 9})
    assert (s.mean_logprob, s.min_logprob, s.mean_entropy_nats, s.low_prob_share) == (-100.0, -100.0, 0.0, 1.0)
    for bad in (None, [], {"n": 0, "mean": -1, "min": -1}, {"n": True, "mean": -1, "min": -1},
                {"n": 3, "mean": "x", "min": -1}, {"n": 3, "mean": float("nan"), "min": -1}, {"n": 3.5, "mean": -1, "min": -1}):
        assert stats_from_json(bad) is None
    assert row_logprobs({"content": [{"logprob": -0.2}]}).n_tokens == 1   # a raw logprobs object
    assert row_logprobs("junk") is None


def test_fit_learns_positive_weights_and_beats_text_on_held_out_folds(rows_path):
    rows = read_logprob_rows(rows_path)
    assert len(rows) == 300 and sum(s is not None for _, s in rows) == 270
    v, rep = fit_logprob_verifier(rows, folds=5, seed=0)
    assert rep["n_with_logprobs"] == 270
    w = rep["weights"]
    assert min(w["w_mean"], w["w_min"], w["w_entropy"]) >= 0.0 and w["w_mean"] + w["w_min"] + w["w_entropy"] > 0.5
    cv = rep["cv"]
    # the synthetic logprobs carry the answers' quality: held out, they improve the escalation order
    assert cv["text_logprobs_apgr"] > cv["text_apgr"] + 0.05
    assert 0.0 < rep["prior_apgr"] <= 1.0
    assert set(rep["leave_one_source_out"]) == {"alpacaeval", "gsm8k"}
    assert v.prior.w_mean == pytest.approx(w["w_mean"], abs=1e-4) and v.prior.ref_mean == PRIOR.ref_mean


def test_too_few_rows_with_logprobs_is_an_error(rows_path):
    rows = [(r, None) for r, _ in read_logprob_rows(rows_path)]
    with pytest.raises(TokenomyError, match="at least 20 rows"):
        fit_logprob_verifier(rows)


def test_route_train_cli_writes_an_artifact_the_config_can_name(rows_path, tmp_path):
    out = tmp_path / "lp.npz"
    res = CliRunner().invoke(app, ["route", "train", "--router", "cascade-logprobs", "--data", str(rows_path),
                                   "--out", str(out), "--cv", "3", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)["report"]
    assert rep["cv"]["folds"] == 3 and is_cascade_artifact(out)
    v = load_verifier(out)
    assert isinstance(v, LogprobVerifier) and v.wants_logprobs
    assert v.prior.w_entropy == pytest.approx(rep["weights"]["w_entropy"], abs=1e-4)
    assert v.meta["report"]["n_with_logprobs"] == 270
    # the fitted bias applies only when logprobs are present; text-only stays the text verifier's score
    p, a = "What is 2+2?", "2+2 = 4."
    assert v.score(p, a) == pytest.approx(load_verifier("cascade-default").score(p, a))
    assert math.isfinite(v.score_response(p, a, {"content": [{"logprob": -0.1}]}))

    from tokenomy.gateway.routing import RouteRuntime  # cascade.verifier: <artifact> loads it
    from tokenomy.config import parse_config

    price = {"list": {"input": 1, "output": 2}}
    cfg = parse_config({"deployments": [{"name": "w", "model": "m", "emulate": {}, "pricing": price},
                                        {"name": "s", "model": "m", "emulate": {}, "pricing": price}],
                        "model_groups": {"weak": {"deployments": ["w"]}, "strong": {"deployments": ["s"]}},
                        "routing_groups": {"auto": {"candidates": ["weak", "strong"], "policy": "cascade",
                                                    "cascade": {"verifier": str(out), "escalate_share": 0.2}}}}, "<t>")
    rr = RouteRuntime("auto", cfg.routing_groups["auto"], {"weak": _G("weak"), "strong": _G("strong")})
    assert isinstance(rr.verifier, LogprobVerifier) and rr.kind == "escalate_share"


class _G:
    def __init__(self, alias):
        self.alias = alias
