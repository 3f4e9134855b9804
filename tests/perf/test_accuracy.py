"""The performance model against the measured H100 profile shipped in the package."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from tokenomy.catalog import load_catalog
from tokenomy.perf import make_step_model
from tokenomy.perf.calibration import load_calibration, profile_dir

PROFILE = profile_dir("h100")


def rows(name: str) -> list[dict]:
    with open(PROFILE / name, newline="") as f:
        return list(csv.DictReader(f))


def rel_errors(pairs):
    return [abs(p / m - 1.0) for p, m in pairs]


@pytest.fixture(scope="module")
def h100_8b():
    cat = load_catalog()
    return make_step_model(cat.model("llama-3-8b"), cat.accelerator("h100"))


def test_h100_uses_the_measured_profile(h100_8b):
    assert h100_8b.source == "profile"
    assert h100_8b.calibration.device == "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_step_time_error_within_bounds(h100_8b, phase):
    pairs = []
    for r in rows("step.csv"):
        if r["phase"] != phase:
            continue
        b, ctx = int(r["batch"]), int(r["context"])
        if phase == "decode":
            pred = h100_8b.step_seconds(decode_seqs=b, kv_tokens=b * ctx)
        else:
            pred = h100_8b.step_seconds(prefill_tokens=int(r["tokens_per_step"]))
        pairs.append((pred, float(r["seconds"])))
    errs = rel_errors(pairs)
    assert len(errs) >= 4
    assert statistics.median(errs) <= 0.08, errs
    assert max(errs) <= 0.20, errs


def test_all_step_rows_together(h100_8b):
    errs = []
    for r in rows("step.csv"):
        b, ctx, tok = int(r["batch"]), int(r["context"]), int(r["tokens_per_step"])
        args = dict(decode_seqs=b, kv_tokens=b * ctx) if r["phase"] == "decode" else dict(prefill_tokens=tok)
        errs.append(abs(h100_8b.step_seconds(**args) / float(r["seconds"]) - 1))
    assert len(errs) == 18
    assert statistics.median(errs) <= 0.08
    assert max(errs) <= 0.20


def test_batch1_decode_matches_measured_7ms(h100_8b):
    t = h100_8b.step_seconds(decode_seqs=1, kv_tokens=512)
    assert t == pytest.approx(0.007265, rel=0.08)


def test_power_error_within_bounds(h100_8b):
    errs = []
    for r in rows("step.csv"):
        b, ctx, tok = int(r["batch"]), int(r["context"]), int(r["tokens_per_step"])
        args = dict(decode_seqs=b, kv_tokens=b * ctx) if r["phase"] == "decode" else dict(prefill_tokens=tok)
        errs.append(abs(h100_8b.step_watts(**args) / float(r["avg_power_w"]) - 1))
    assert statistics.median(errs) <= 0.08
    assert max(errs) <= 0.15


def test_energy_per_token_matches_measured_at_batch_256(h100_8b):
    t, w = h100_8b.step_seconds_and_watts(decode_seqs=256, kv_tokens=256 * 512)
    assert w * t / 256 == pytest.approx(0.04317, rel=0.10)


def test_operator_fits_reported_in_calibration():
    fit = load_calibration("h100").fit
    for key in ("gemm_bf16", "gemm_fp8", "attn_decode", "attn_prefill", "step", "step_power"):
        assert key in fit
    assert fit["gemm_bf16"]["median"] <= 0.06
    assert fit["attn_decode"]["median"] <= 0.05
    assert fit["step"]["worst"] <= 0.20


def test_calibration_json_is_reproducible_from_the_csvs():
    from tokenomy.perf.fit import fit_profile

    shipped = json.loads((PROFILE / "calibration.json").read_text())
    refit = fit_profile("h100").to_json()
    for key in ("attn_decode_gbps", "attn_prefill_tflops", "layer_s", "elem_passes", "step_s", "power_mem"):
        assert refit[key] == pytest.approx(shipped[key], rel=0.02), key
    for dt in ("bf16", "fp8"):
        assert refit["gemm"][dt]["gbps"] == pytest.approx(shipped["gemm"][dt]["gbps"], rel=0.02)


def test_profile_csvs_are_the_measured_copies():
    assert len(rows("step.csv")) == 18
    assert len(rows("gemm.csv")) == 252
    assert "profile_gpu.py" in (PROFILE / "PROVENANCE.md").read_text()
    env = {r["key"]: r["value"] for r in rows("env.csv")}
    assert float(env["idle_power_w"]) == pytest.approx(71.268)
