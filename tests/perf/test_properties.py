"""Properties of the step model that must hold for any input (hypothesis)."""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenomy.catalog import load_catalog
from tokenomy.perf import make_step_model

_cat = load_catalog()
MODELS = [
    make_step_model(_cat.model("llama-3-8b"), _cat.accelerator("h100")),
    make_step_model(_cat.model("mixtral-8x7b"), _cat.accelerator("h100"), count=2),
    make_step_model(_cat.model("llama-3-70b"), _cat.accelerator("l40s"), count=8, dtype="fp8"),
]

model_idx = st.integers(0, len(MODELS) - 1)


@settings(max_examples=80, deadline=None)
@given(i=model_idx, b=st.integers(1, 512), extra=st.integers(1, 64), ctx=st.integers(1, 16384),
       pre=st.integers(0, 8192))
def test_more_work_never_takes_less_time(i, b, extra, ctx, pre):
    sm = MODELS[i]
    t = sm.step_seconds(prefill_tokens=pre, decode_seqs=b, kv_tokens=b * ctx)
    assert t > 0
    assert sm.step_seconds(prefill_tokens=pre, decode_seqs=b + extra, kv_tokens=(b + extra) * ctx) >= t
    assert sm.step_seconds(prefill_tokens=pre, decode_seqs=b, kv_tokens=b * (ctx + extra)) >= t
    assert sm.step_seconds(prefill_tokens=pre + extra, decode_seqs=b, kv_tokens=b * ctx) >= t


@settings(max_examples=60, deadline=None)
@given(i=model_idx, b=st.integers(1, 512), ctx=st.integers(1, 16384), pre=st.integers(0, 8192))
def test_power_between_idle_and_tdp_and_memo_is_transparent(i, b, ctx, pre):
    sm = MODELS[i]
    w = sm.step_watts(prefill_tokens=pre, decode_seqs=b, kv_tokens=b * ctx)
    assert sm.idle_watts < w <= sm.tdp_watts * sm.count + 1e-9
    first = sm.step_seconds(prefill_tokens=pre, decode_seqs=b, kv_tokens=b * ctx)
    assert sm.step_seconds(prefill_tokens=pre, decode_seqs=b, kv_tokens=b * ctx) == first


def test_validate_script_prints_operator_and_step_errors():
    res = subprocess.run([sys.executable, "-m", "tokenomy.perf.validate", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    errs = json.loads(res.stdout)["errors"]
    assert errs["step"]["median"] <= 0.08 and errs["step"]["worst"] <= 0.20
    assert errs["gemm_bf16"]["n"] == 126 and errs["attn_decode"]["n"] == 20 and errs["attn_prefill"]["n"] == 7
