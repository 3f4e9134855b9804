"""Weight and KV-cache formats: memory (weights, KV capacity) and speed effects, per chip."""

from __future__ import annotations

import pytest

from tokenomy.catalog import load_catalog
from tokenomy.errors import TokenomyError
from tokenomy.perf import make_step_model, max_batch_size
from tokenomy.perf.quant import INT4_COMPUTE_EFFICIENCY, WEIGHT_BYTES
from tokenomy.perf.step import USABLE_MEMORY_FRACTION

CAT = load_catalog()
M = CAT.model("llama-3-8b")


def _sm(acc, dtype="bf16", kv="bf16", count=1):
    return make_step_model(M, CAT.accelerator(acc), count=count, dtype=dtype, kv_dtype=kv)


def test_weight_bytes_and_kv_capacity_follow_the_formats():
    bf, f8, i4 = _sm("l4"), _sm("l4", "fp8"), _sm("l4", "int4-awq")
    assert f8.weight_bytes == pytest.approx(bf.weight_bytes / 2)
    assert i4.weight_bytes == pytest.approx(bf.weight_bytes * WEIGHT_BYTES["int4-awq"] / 2)
    assert WEIGHT_BYTES["int4-awq"] == pytest.approx(0.5195, abs=1e-4)  # 4 bits + fp16 scale/int4 zero per 128
    usable = 24e9 * USABLE_MEMORY_FRACTION  # L4: 24 GB
    for sm in (bf, f8, i4):
        assert sm.max_kv_tokens == int((usable - sm.weight_bytes) // sm.kv_bytes_per_token)
    assert bf.max_kv_tokens < f8.max_kv_tokens < i4.max_kv_tokens
    kv8 = _sm("l4", "bf16", "fp8")
    assert kv8.kv_bytes_per_token == bf.kv_bytes_per_token / 2
    assert kv8.max_kv_tokens == 2 * bf.max_kv_tokens or abs(kv8.max_kv_tokens - 2 * bf.max_kv_tokens) <= 1
    acc = CAT.accelerator("l4")
    assert max_batch_size(M, acc, context=4096, kv_dtype="fp8") >= 2 * max_batch_size(M, acc, context=4096) - 1


def test_decode_is_memory_bound_quantized_weights_step_faster():
    kw = dict(decode_seqs=8, kv_tokens=8 * 1024)
    for acc in ("l4", "a100-80g", "h100"):
        if CAT.accelerator(acc).fp8_tflops:
            assert _sm(acc, "fp8").step_seconds(**kw) < 0.7 * _sm(acc).step_seconds(**kw)
        # int4 streams ~1/4 of the weight bytes: at least 2x faster than bf16 at small batch
        assert _sm(acc, "int4-awq").step_seconds(**kw) < 0.5 * _sm(acc).step_seconds(**kw)


def test_fp8_kv_halves_attention_reads_at_long_context():
    kw = dict(decode_seqs=64, kv_tokens=64 * 8192)
    bf, kv8 = _sm("h100"), _sm("h100", "bf16", "fp8")
    assert kv8.step_seconds(**kw) < bf.step_seconds(**kw)
    short = dict(decode_seqs=1, kv_tokens=16)
    assert kv8.step_seconds(**short) == pytest.approx(bf.step_seconds(**short), rel=1e-3)


def test_prefill_compute_fp8_only_where_the_chip_has_it_int4_pays_dequant():
    pf = dict(prefill_tokens=2048)
    h_bf, h_f8, h_i4 = _sm("h100").step_seconds(**pf), _sm("h100", "fp8").step_seconds(**pf), \
        _sm("h100", "int4-awq").step_seconds(**pf)
    assert h_f8 < 0.85 * h_bf  # fp8 tensor cores
    assert h_i4 > h_bf  # compute-bound W4A16: dequant overhead, 16-bit math
    assert h_i4 < h_bf / INT4_COMPUTE_EFFICIENCY
    for acc in ("a100-80g", "a10g"):  # Ampere: no fp8 tensor cores
        with pytest.raises(TokenomyError, match="no fp8 compute path"):
            _sm(acc, "fp8")
        assert _sm(acc, "int4-awq").max_kv_tokens > _sm(acc).max_kv_tokens


def test_bad_formats_are_named():
    with pytest.raises(TokenomyError, match="unknown dtype 'int3'"):
        _sm("h100", "int3")
    with pytest.raises(TokenomyError, match="unknown KV-cache dtype 'int4'"):
        _sm("h100", "bf16", "int4")


def test_int4_fits_a_model_bf16_cannot():
    m = CAT.model("llama-3-70b")
    with pytest.raises(TokenomyError, match="does not fit"):
        make_step_model(m, CAT.accelerator("a100-80g"), count=1)
    sm = make_step_model(m, CAT.accelerator("a100-80g"), count=1, dtype="int4-awq")
    assert sm.max_kv_tokens > 0
