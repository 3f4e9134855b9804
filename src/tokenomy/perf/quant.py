"""Weight and KV-cache number formats the perf model (and so the planner) can choose.

Memory: weights x bytes per weight (all parameters at the format's rate; AWQ keeps embeddings
and the LM head in 16 bit, so int4 memory is a slight underestimate); KV cache x bytes per
value, which sets the KV capacity (max batch x context). Speed: decode is memory-bound, so the
weight bytes each step streams set its time; prefill / large batches are compute-bound:
- fp8 (W8A8, e4m3): fp8 tensor cores at the chip's fp8 peak with the profile's fitted fp8
  GEMM ceiling -- only on chips that have them (H100/H200/B200, L4/L40S: Hopper/Ada/Blackwell;
  not A100/A10G: Ampere has no fp8 tensor cores, NVIDIA A100 datasheet 2021-06).
- int4-awq (W4A16, AWQ group size 128): weights dequantized in registers, math on the 16-bit
  tensor cores at `INT4_COMPUTE_EFFICIENCY` of the bf16 ceiling; runs on every chip here.
- fp8 KV cache: half the bytes per cached token (stored and read by decode attention);
  attention math stays 16-bit.

Quality is NOT modelled: a plan that picks fp8 or int4 assumes the quantized model is
acceptable for the workload (check it on your own evaluation; AWQ reports small perplexity
losses at 4 bit, the loss is task dependent).
"""

from __future__ import annotations

from tokenomy.catalog.types import Accelerator
from tokenomy.errors import TokenomyError

DTYPES = ("bf16", "fp8", "int4-awq")  # weight formats
KV_DTYPES = ("bf16", "fp8")

# Bytes per weight. int4-awq: 4-bit weights plus, per group of 128, an fp16 scale and a 4-bit
# zero point: (128 x 0.5 + 2 + 0.5) / 128. Source: Lin et al., "AWQ: Activation-aware Weight
# Quantization for LLM Compression and Acceleration", MLSys 2024, arXiv:2306.00978 (2023-06;
# group size 128, the AutoAWQ / vLLM `awq` checkpoint layout).
WEIGHT_BYTES = {"bf16": 2.0, "fp8": 1.0, "int4-awq": (128 * 0.5 + 2.0 + 0.5) / 128}

# Bytes per cached K/V value. fp8 (e4m3 / e5m2): vLLM "Quantized KV Cache" docs
# (https://docs.vllm.ai/en/latest/features/quantization/quantized_kvcache.html, read 2026-12):
# one byte per value, about twice the tokens in the same memory.
KV_BYTES = {"bf16": 2.0, "fp8": 1.0}

# Compute-bound W4A16 GEMM throughput over bf16 on the same tensor cores (estimate, 2026-12).
# Marlin (Frantar et al., arXiv:2408.11743, 2024-08; IST-DASLab/marlin README 2024-01) keeps
# near-ideal ~4x speedups only while memory-bound (batches up to 16-32 tokens); beyond that the
# dequant instructions compete with the MMAs and the kernel runs below fp16 GEMM speed; older
# AWQ GEMM kernels lose more. 0.85 sits between; the memory-bound regime needs no factor.
INT4_COMPUTE_EFFICIENCY = 0.85

QUALITY_NOTE = ("quantization quality is not modelled: fp8 / int4-awq / fp8-KV plans assume the quantized "
                "model is acceptable for the workload; evaluate it before deploying")


def check_weight_dtype(acc: Accelerator, dtype: str) -> None:
    if dtype not in DTYPES:
        raise TokenomyError(f"unknown dtype '{dtype}'; use one of: {', '.join(DTYPES)}")
    if dtype == "fp8" and not acc.fp8_tflops:
        raise TokenomyError(f"{acc.id} ({acc.name}) has no fp8 compute path; use --dtype bf16 or int4-awq")


def check_kv_dtype(kv_dtype: str) -> None:
    if kv_dtype not in KV_DTYPES:
        raise TokenomyError(f"unknown KV-cache dtype '{kv_dtype}'; use one of: {', '.join(KV_DTYPES)}")
