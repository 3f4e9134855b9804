import pytest

from tokenomy.routing.cascade import cost_view, evaluate
from tokenomy.routing.cascade.data import CascadeRow
from tokenomy.routing.cascade.evaluate import cascade_cost, prompt_only_cost, share_for_quality
from tokenomy.routing.quality.metrics import curve


def _rows():
    # weak fails on the two "hard" answers; strong is always right. W = 0.5, S = 1.
    return [CascadeRow("a", "p1", 0.0, 1.0, "bad answer", "t"), CascadeRow("b", "p2", 0.0, 1.0, "bad answer 2", "t"),
            CascadeRow("c", "p3", 1.0, 1.0, "good", "t"), CascadeRow("d", "p4", 1.0, 1.0, "good 2", "t")]


class ConstantRouter:
    name = "constant"

    def strong_win_rate(self, prompt):
        return 0.5


def test_cost_formulas():
    assert cascade_cost(0.25, 10.0) == 3.5          # always pays the weak call
    assert prompt_only_cost(0.25, 10.0) == 3.25     # pays the weak call only when not escalated


def test_share_for_quality_hand_case():
    perfect = curve([1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1])
    assert share_for_quality(perfect, 0.9) == pytest.approx(0.4)   # Q(x) = 0.5 + x up to x = 0.5
    assert share_for_quality(perfect, 0.4) == 0.0                  # weak already reaches it
    flat = curve([0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1])
    assert share_for_quality(flat, 0.9) == pytest.approx(0.8)      # Q(x) = 0.5 + 0.5 x


def test_cost_view_hand_case():
    perfect = curve([1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1])
    flat = curve([0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1])
    v = cost_view(perfect, flat, 10.0)
    t90 = v["targets"]["90"]
    assert t90["quality_target"] == 0.9
    assert t90["cascade"] == {"strong_share_pct": 40.0, "cost": 5.0, "saving_pct": 50.0}
    assert t90["prompt_only"] == {"strong_share_pct": 80.0, "cost": 8.2, "saving_pct": 18.0}
    assert t90["cascade_pays_off_above_price_ratio"] == 2.0   # 0.8 / (0.8 - 0.4)
    assert t90["cheaper"] == "cascade"
    # at R = 1.5 the weak call a cascade always pays costs more than its better decisions save
    assert cost_view(perfect, flat, 1.5)["targets"]["90"]["cheaper"] == "prompt_only"
    t95 = v["targets"]["95"]
    assert t95["cascade"]["strong_share_pct"] == 45.0 and t95["prompt_only"]["strong_share_pct"] == 90.0


def test_evaluate_oracle_vs_constant_prompt_router():
    out = evaluate(_rows(), "cascade-oracle", price_ratio=10.0, prompt_router=ConstantRouter())
    assert out["n"] == 4 and out["weak_mean"] == 0.5 and out["strong_mean"] == 1.0
    assert out["cpt50"] == 25.0 and out["cpt80"] == 40.0
    assert out["prompt_only"]["apgr"] == 0.5 and out["prompt_only"]["router"] == "constant"
    assert out["cost"]["targets"]["90"]["cascade"]["cost"] == 5.0
    assert out["cost"]["targets"]["90"]["prompt_only"]["cost"] == 8.2
    assert set(out) >= {"n", "apgr", "cpt50", "cpt80", "weak_mean", "strong_mean"}


def test_evaluate_accepts_dicts_and_rejects_no_gap():
    rows = [r.to_json() for r in _rows()]
    assert evaluate(rows, "answer-length")["n"] == 4
    from tokenomy.errors import TokenomyError

    with pytest.raises(TokenomyError):
        evaluate([{**r, "strong": r["weak"]} for r in rows], "answer-length")
    with pytest.raises(TokenomyError):
        evaluate([{"id": 1, "prompt": "x", "weak": 0, "strong": 1}], "answer-length")   # no weak_output


def test_evaluate_default_on_sample(sample_rows):
    gsm = [r for r in sample_rows if r.source == "gsm8k"]
    out = evaluate(gsm, "cascade-default", price_ratio=20.0)
    base = evaluate(gsm, "answer-length")
    # in-sample regression check (these rows were in the default's training data)
    assert out["apgr"] > base["apgr"] + 0.1
    assert out["prompt_only"].get("apgr") is not None or "error" in out["prompt_only"]
    t = out["cost"]["targets"]["90"]["cascade"]
    assert 0.0 <= t["strong_share_pct"] <= 100.0
    assert t["cost"] == pytest.approx(1 + 20 * t["strong_share_pct"] / 100, abs=1e-3)


def test_by_source_and_text_format(sample_rows):
    from tokenomy.routing.cascade import format_eval

    out = evaluate(sample_rows, "cascade-default", price_ratio=20.0, by_source=True, prompt_router=ConstantRouter())
    assert set(out["by_source"]) == {"alpacaeval", "gsm8k"}
    assert out["by_source"]["gsm8k"]["n"] == 150
    text = format_eval(out)
    assert "cascade-default (cascade): n=300" in text and "prompt-only constant" in text and "95% of strong" in text


def test_wants_cascade(tmp_path):
    from tokenomy.routing.cascade import wants_cascade
    from tokenomy.routing.cascade.registry import DEFAULT_ARTIFACT

    assert wants_cascade("cascade-default") and wants_cascade("answer-length") and wants_cascade("cascade-oracle")
    assert not wants_cascade("default") and not wants_cascade("length") and not wants_cascade("random")
    assert wants_cascade("default", DEFAULT_ARTIFACT) and wants_cascade(str(DEFAULT_ARTIFACT))
    junk = tmp_path / "x.npz"
    junk.write_bytes(b"junk")
    assert not wants_cascade("default", junk)
