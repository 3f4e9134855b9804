"""Behaviour of the step model: shapes, memory, MoE, TP, dtypes, SLO search, datasheet scaling."""

from __future__ import annotations

import pytest

from tokenomy.catalog import load_catalog
from tokenomy.errors import TokenomyError
from tokenomy.perf import (
    kv_bytes_per_token,
    make_step_model,
    max_batch_size,
    predict_decode_step,
    predict_prefill,
    throughput_at_tpot,
)
from tokenomy.perf.shapes import experts_touched, layer_shapes


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def test_kv_bytes_per_token_gqa_mha_mla(cat):
    assert kv_bytes_per_token(cat.model("llama-3-8b")) == 32 * 2 * 8 * 128 * 2  # GQA 8 KV heads
    assert kv_bytes_per_token(cat.model("llama-2-7b")) == 32 * 2 * 32 * 128 * 2  # MHA
    assert kv_bytes_per_token(cat.model("deepseek-v3")) == 61 * (512 + 64) * 2  # MLA latent + rope key
    # TP splits KV heads; MLA latent is replicated on every device
    assert kv_bytes_per_token(cat.model("llama-3-70b"), count=4) == 80 * 2 * 2 * 128 * 2
    assert kv_bytes_per_token(cat.model("deepseek-v3"), count=8) == 61 * 576 * 2


def test_gemm_shapes_add_up_to_parameter_count(cat):
    m = cat.model("llama-3-8b")
    s = layer_shapes(m)
    per_layer = sum(g.k * g.n for g in s.attn_gemms + s.dense_mlp)
    total = m.n_layers * per_layer + 2 * s.lm_head.k * s.lm_head.n  # + embedding
    assert total / 1e9 == pytest.approx(m.total_params_b, rel=0.01)


def test_max_batch_is_memory_after_weights(cat):
    m, acc = cat.model("llama-3-8b"), cat.accelerator("h100")
    expected = int((80e9 * 0.9 - 8.03e9 * 2) // (32 * 2 * 8 * 128 * 2)) // 2048
    assert max_batch_size(m, acc, context=2048) == expected
    assert max_batch_size(m, acc, context=2048, dtype="fp8") > expected  # 1-byte weights leave more room
    assert max_batch_size(cat.model("llama-3-70b"), acc, context=2048) == 0  # 141 GB of weights
    assert max_batch_size(cat.model("llama-3-70b"), acc, context=2048, count=4) > 100


def test_step_time_grows_with_batch_context_and_tokens(cat):
    sm = make_step_model(cat.model("llama-3-8b"), cat.accelerator("h100"))
    batches = [sm.step_seconds(decode_seqs=b, kv_tokens=b * 2048) for b in (1, 8, 64, 256)]
    assert batches == sorted(batches) and batches[-1] > 2 * batches[0]
    ctxs = [sm.step_seconds(decode_seqs=32, kv_tokens=32 * c) for c in (512, 2048, 8192)]
    assert ctxs == sorted(ctxs)
    pre = [sm.step_seconds(prefill_tokens=n) for n in (512, 2048, 8192)]
    assert pre == sorted(pre) and pre[2] > 3 * pre[1]
    assert sm.step_seconds() == 0.0
    # a mixed step costs more than either part alone, less than both apart
    mixed = sm.step_seconds(prefill_tokens=512, decode_seqs=32, kv_tokens=32 * 2048)
    alone = sm.step_seconds(prefill_tokens=512), sm.step_seconds(decode_seqs=32, kv_tokens=32 * 2048)
    assert max(alone) < mixed < sum(alone)


def test_engine_efficiency_divides_time(cat):
    m, acc = cat.model("llama-3-8b"), cat.accelerator("h100")
    base = make_step_model(m, acc).step_seconds(decode_seqs=16, kv_tokens=16 * 1024)
    fast = make_step_model(m, acc, engine_efficiency=1.25).step_seconds(decode_seqs=16, kv_tokens=16 * 1024)
    assert fast == pytest.approx(base / 1.25)


def test_decode_is_bandwidth_bound_so_datasheet_chips_scale_with_bandwidth(cat):
    m = cat.model("llama-3-8b")
    h100 = predict_decode_step(m, cat.accelerator("h100"), batch=1, context=512)
    h200 = predict_decode_step(m, cat.accelerator("h200"), batch=1, context=512)
    l4 = predict_decode_step(m, cat.accelerator("l4"), batch=1, context=512)
    assert h100.source == "profile" and h200.source == "datasheet" and l4.source == "datasheet"
    # weights stream at the bandwidth: H200 faster (4.8 vs 3.35 TB/s) but fixed overheads do not shrink
    assert 3.35 / 4.8 < h200.seconds / h100.seconds < 0.9
    # L4 (0.3 TB/s): 16 GB of weights take ~ 16e9 / (0.3e12 * 0.79) s
    assert l4.seconds == pytest.approx(16.06e9 / (0.3e12 * 2660 / 3350), rel=0.1)


def test_prefill_is_compute_bound(cat):
    m = cat.model("llama-3-8b")
    h100 = predict_prefill(m, cat.accelerator("h100"), tokens=8192)
    b200 = predict_prefill(m, cat.accelerator("b200"), tokens=8192)
    assert h100.seconds == pytest.approx(0.252, rel=0.08)  # measured 252 ms
    assert b200.seconds / h100.seconds == pytest.approx(989 / 2250, rel=0.15)
    assert h100.tokens_per_s == pytest.approx(8192 / h100.seconds)


def test_fp8_halves_weight_bytes_and_needs_an_fp8_chip(cat):
    m = cat.model("llama-3-8b")
    bf16 = predict_decode_step(m, cat.accelerator("h100"), batch=1, context=512)
    fp8 = predict_decode_step(m, cat.accelerator("h100"), batch=1, context=512, dtype="fp8")
    assert 0.5 < fp8.seconds / bf16.seconds < 0.8
    with pytest.raises(TokenomyError, match="no fp8"):
        make_step_model(m, cat.accelerator("a100-80g"), dtype="fp8")
    with pytest.raises(TokenomyError, match="dtype"):
        make_step_model(m, cat.accelerator("h100"), dtype="int3")


def test_model_that_does_not_fit_is_a_clear_error(cat):
    with pytest.raises(TokenomyError, match="does not fit.*needs about 2 devices"):
        make_step_model(cat.model("llama-3-70b"), cat.accelerator("h100"))
    with pytest.raises(TokenomyError, match="exceeds"):
        make_step_model(cat.model("llama-3-8b"), cat.accelerator("h100"), count=16)


def test_tensor_parallel_speeds_up_decode_with_communication_cost(cat):
    m, acc = cat.model("llama-3-70b"), cat.accelerator("h100")
    t2 = make_step_model(m, acc, count=2).step_seconds(decode_seqs=8, kv_tokens=8 * 2048)
    t8 = make_step_model(m, acc, count=8).step_seconds(decode_seqs=8, kv_tokens=8 * 2048)
    assert t8 < t2
    assert t8 > t2 / 4  # not linear: fixed per-layer time and all-reduces
    pcie = make_step_model(m, cat.accelerator("l40s"), count=4)
    assert pcie._ar_bytes_s > make_step_model(m, acc, count=4)._ar_bytes_s  # PCIe slower than NVLink


def test_moe_reads_touched_experts_only(cat):
    assert experts_touched(8, 2, 1) == pytest.approx(2.0)
    assert experts_touched(256, 8, 1) == pytest.approx(8.0)
    assert experts_touched(8, 2, 64) == pytest.approx(8.0, rel=1e-3)
    assert experts_touched(256, 8, 4) <= min(256, 4 * 8)
    m = cat.model("mixtral-8x7b")
    sm = make_step_model(m, cat.accelerator("h100"), count=2)
    t1 = sm.step_seconds(decode_seqs=1, kv_tokens=1024)
    t64 = sm.step_seconds(decode_seqs=64, kv_tokens=64 * 1024)
    # batch 1 reads ~2 of 8 experts (~13 B of 47 B params); batch 64 reads all of them
    assert t64 / t1 > 2.0
    dense_equiv = make_step_model(cat.model("llama-2-13b"), cat.accelerator("h100"), count=2)
    assert t1 == pytest.approx(dense_equiv.step_seconds(decode_seqs=1, kv_tokens=1024), rel=0.35)


def test_throughput_at_tpot_is_the_largest_batch_meeting_the_slo(cat):
    m, acc = cat.model("llama-3-8b"), cat.accelerator("h100")
    batch, tps = throughput_at_tpot(m, acc, slo_tpot_ms=15, context=2048)
    sm = make_step_model(m, acc)
    assert sm.step_seconds(decode_seqs=batch, kv_tokens=batch * 2048) <= 0.015
    assert sm.step_seconds(decode_seqs=batch + 1, kv_tokens=(batch + 1) * 2048) > 0.015
    assert tps == pytest.approx(batch / sm.step_seconds(decode_seqs=batch, kv_tokens=batch * 2048))
    # a loose SLO is memory-bound
    assert throughput_at_tpot(m, acc, slo_tpot_ms=1000, context=2048)[0] == max_batch_size(m, acc, context=2048)
    with pytest.raises(TokenomyError, match="below the batch-1 decode step"):
        throughput_at_tpot(m, acc, slo_tpot_ms=2, context=2048)


def test_power_between_idle_and_tdp(cat):
    m, acc = cat.model("llama-3-70b"), cat.accelerator("h100")
    sm = make_step_model(m, acc, count=4)
    assert sm.idle_watts == pytest.approx(4 * 71.3)
    w1 = sm.step_watts(decode_seqs=1, kv_tokens=512)
    w256 = sm.step_watts(decode_seqs=128, kv_tokens=128 * 2048)
    wp = sm.step_watts(prefill_tokens=8192)
    assert sm.idle_watts < w1 < w256 <= wp <= 4 * 700
    assert sm.step_watts() == sm.idle_watts
    # chips without a published TDP get an estimate, not a crash
    v5e = make_step_model(cat.model("gemma-2b"), cat.accelerator("tpu-v5e"))
    assert v5e.idle_watts < v5e.step_watts(decode_seqs=8, kv_tokens=8000) <= v5e.tdp_watts


def test_sliding_window_caps_attention(cat):
    m = cat.model("mistral-7b")
    sm = make_step_model(m, cat.accelerator("h100"))
    assert m.sliding_window, "the catalog's mistral-7b must keep its sliding window (4,096 tokens)"
    w = m.sliding_window
    assert sm.step_seconds(decode_seqs=4, kv_tokens=4 * 4 * w) == sm.step_seconds(decode_seqs=4, kv_tokens=4 * w)


def test_every_catalog_pair_gives_finite_positive_times(cat):
    import math

    for mid, m in cat.models.items():
        for aid, acc in cat.accelerators.items():
            for n in (1, 2, 4, 8):
                if n > acc.max_count:
                    continue
                try:
                    sm = make_step_model(m, acc, count=n)
                except TokenomyError as exc:
                    assert "does not fit" in str(exc)
                    continue
                t = sm.step_seconds(decode_seqs=4, kv_tokens=4 * 1024)
                p = sm.step_seconds(prefill_tokens=1024)
                assert math.isfinite(t) and t > 0 and math.isfinite(p) and p > 0, (mid, aid, n)
                break
