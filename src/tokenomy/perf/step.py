"""The engine-step time model: one continuous-batching step of a (model, accelerator, TP) replica.

step time = sum over layers of
              sum of weight GEMMs          smooth roofline, calibrated ceilings
            + attention                    decode: KV bytes read; prefill: causal FLOPs
            + elementwise traffic          norms, activations, residuals (per token)
            + TP all-reduces               2 per layer, latency + ring bandwidth
            + fixed per-layer time
          + LM head + fixed per-step time
A step that contains prefill runs eagerly (as in the profile) and cannot be faster than the
host's kernel-launch time. Everything is precomputed in make_step_model(); step_seconds() is
a few dozen float operations.
"""

from __future__ import annotations

from tokenomy.catalog.types import Accelerator, ModelArch
from tokenomy.errors import TokenomyError

from .calibration import DEFAULT_PROFILE, Calibration, load_calibration
from .collectives import comm_terms, ring_factor
from .kernels import roofline_seconds
from .quant import DTYPES, INT4_COMPUTE_EFFICIENCY, KV_BYTES, KV_DTYPES, WEIGHT_BYTES, check_kv_dtype, check_weight_dtype

__all__ = ["DTYPES", "KV_DTYPES", "StepModel", "check_dtype", "make_step_model", "min_devices"]
from .shapes import experts_touched, layer_shapes, weight_bytes_total

USABLE_MEMORY_FRACTION = 0.9  # engines reserve ~10% for activations, CUDA graphs, fragmentation
OUT_BYTES = 2.0  # GEMM outputs are bf16
EAGER_SMOOTH_P = 4.0  # soft max between GPU time and host launch time in eager steps


def estimated_tdp_watts(acc: Accelerator) -> float:
    """TDP when the vendor publishes none: ~1 W per dense bf16 TFLOP/s (H100 0.7, L4 0.6, A10G 2.1)."""
    return acc.tdp_watts if acc.tdp_watts else max(1.0 * acc.bf16_tflops, 2.0 * (acc.idle_watts or 0.0))


class StepModel:
    """Step time and power of one replica; build with make_step_model()."""

    __slots__ = (
        "model", "accelerator", "count", "dtype", "kv_dtype", "engine_efficiency", "source", "calibration",
        "idle_watts", "tdp_watts", "max_kv_tokens", "weight_bytes", "kv_bytes_per_token",
        "_C", "_B", "_p", "_ops_dense", "_ops_moe", "_experts", "_E", "_k", "_lm",
        "_n_dense", "_n_moe", "_n_layers", "_kvb", "_kv_flops", "_Batt", "_pf_coeff", "_Cpf",
        "_pf_half", "_elem_s", "_layer_s", "_step_s", "_eager_s", "_ar_bytes_s", "_ar_lat",
        "_window", "_cache", "_peak_flops", "_peak_bytes", "_pmem", "_pcomp",
    )

    def __init__(self, model: ModelArch, acc: Accelerator, *, count: int, dtype: str,
                 engine_efficiency: float, cal: Calibration, source: str, kv_dtype: str = "bf16"):
        self.model, self.accelerator, self.count, self.dtype = model, acc, count, dtype
        self.kv_dtype = kv_dtype
        self.engine_efficiency, self.source, self.calibration = engine_efficiency, source, cal
        fp8 = dtype == "fp8"  # W8A8 on fp8 tensor cores (check_weight_dtype: only chips that have them)
        # Scale the profiled device's effective ceilings to this accelerator's datasheet.
        peak_tflops = (acc.fp8_tflops if fp8 else acc.bf16_tflops) or 0.0
        ref_tflops = (cal.datasheet_fp8_tflops if fp8 else cal.datasheet_bf16_tflops) or cal.datasheet_bf16_tflops
        s_c = peak_tflops / ref_tflops
        s_c_bf16 = acc.bf16_tflops / cal.datasheet_bf16_tflops
        s_b = acc.memory_tb_per_s / cal.datasheet_tb_per_s
        g = cal.gemm["fp8" if fp8 else "bf16"]
        # int4-awq (W4A16): 16-bit tensor-core math after an in-register dequant (quant.py)
        self._C = g.tflops * 1e12 * s_c * (INT4_COMPUTE_EFFICIENCY if dtype == "int4-awq" else 1.0)
        self._B = g.gbps * 1e9 * s_b
        self._p = g.p
        self._Batt = cal.attn_decode_gbps * 1e9 * s_b
        self._Cpf = cal.attn_prefill_tflops * 1e12 * s_c_bf16  # attention math stays bf16
        self._pf_half = cal.attn_prefill_half_tokens
        self._peak_flops = peak_tflops * 1e12
        self._peak_bytes = acc.memory_tb_per_s * 1e12
        wb = WEIGHT_BYTES[dtype]
        ab = 1.0 if fp8 else 2.0  # activations enter GEMMs in fp8 (W8A8) or 16-bit (bf16, W4A16)

        s = layer_shapes(model, count)

        def op(gm):  # (flops per token, weight bytes, activation bytes per token)
            return (gm.flops_per_token(), gm.k * gm.n * wb, gm.k * ab + gm.n * OUT_BYTES)

        self._ops_dense = tuple(op(gm) for gm in s.attn_gemms + s.dense_mlp)
        moe_ops = s.attn_gemms + s.shared_mlp + ((s.router,) if s.router else ())
        self._ops_moe = tuple(op(gm) for gm in moe_ops)
        self._experts = tuple(op(gm) for gm in s.expert_gemms)
        self._E, self._k = float(s.n_experts), float(s.n_active_experts)
        self._lm = op(s.lm_head)
        self._n_dense, self._n_moe, self._n_layers = s.n_dense_layers, s.n_moe_layers, model.n_layers
        self._kvb = s.kv_values_per_token_layer * KV_BYTES[kv_dtype]  # fp8 KV: half the bytes stored and read
        self._kv_flops = s.decode_attn_flops_per_kv_token
        self._pf_coeff = 2.0 * s.heads_q * (s.qk_dim + s.v_dim)  # x tokens x attended context
        self._window = float(model.sliding_window) if model.sliding_window else 0.0
        elem_bytes_per_token = cal.elem_passes * (s.hidden + s.mlp_width_per_token) * 2.0
        self._elem_s = elem_bytes_per_token / self._Batt
        self._layer_s = cal.layer_s
        self._step_s = cal.step_s
        self._eager_s = cal.eager_layer_s * model.n_layers
        n = count
        if n > 1:
            # ring all-reduce of tokens x hidden bf16 values, twice per layer (collectives.py)
            lat, bus_gbps = comm_terms(cal.allreduce, cal.datasheet_interconnect_gb_per_s,
                                       acc.interconnect_gb_per_s, n)
            self._ar_bytes_s = 2 * (ring_factor(n) * s.hidden * 2.0) / (bus_gbps * 1e9)
            self._ar_lat = 2 * lat
        else:
            self._ar_bytes_s = self._ar_lat = 0.0

        # Memory: all weights (every expert) split over the devices; KV in what is left.
        self.weight_bytes = weight_bytes_total(model, wb)
        self.kv_bytes_per_token = model.n_layers * self._kvb  # per device
        usable = acc.memory_gb * 1e9 * USABLE_MEMORY_FRACTION
        free = usable - self.weight_bytes / count
        self.max_kv_tokens = int(free // self.kv_bytes_per_token) if free > 0 else 0

        self.tdp_watts = float(estimated_tdp_watts(acc))
        self.idle_watts = float(acc.idle_watts if acc.idle_watts is not None
                                else self.tdp_watts * cal.idle_watts / cal.tdp_watts) * count
        self._pmem, self._pcomp = cal.power_mem, cal.power_compute
        self._cache: dict[tuple[int, int], tuple[float, float, float]] = {}

    # ---- the hot path ----
    def _token_part(self, T: int, lm_rows: int) -> tuple[float, float, float]:
        """(seconds, flops, bytes) of everything that depends only on the token count: weight
        GEMMs of all layers, elementwise traffic, fixed and communication time, LM head.
        Memoised: a simulator revisits the same batch sizes millions of times."""
        key = (T, lm_rows)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        C, B, p = self._C, self._B, self._p
        flops = nbytes = 0.0
        total = 0.0
        if self._n_dense:
            t = f_l = b_l = 0.0
            for fpt, wbytes, bpt in self._ops_dense:
                f, b = fpt * T, wbytes + bpt * T
                t += roofline_seconds(f, b, C, B, p)
                f_l += f
                b_l += b
            total += self._n_dense * t
            flops += self._n_dense * f_l
            nbytes += self._n_dense * b_l
        if self._n_moe:
            t = f_l = b_l = 0.0
            for fpt, wbytes, bpt in self._ops_moe:
                f, b = fpt * T, wbytes + bpt * T
                t += roofline_seconds(f, b, C, B, p)
                f_l += f
                b_l += b
            routed = T * self._k
            touched = experts_touched(int(self._E), int(self._k), T)
            for fpt, wbytes, bpt in self._experts:
                f, b = fpt * routed, wbytes * touched + bpt * routed
                t += roofline_seconds(f, b, C, B, p)
                f_l += f
                b_l += b
            total += self._n_moe * t
            flops += self._n_moe * f_l
            nbytes += self._n_moe * b_l
        t_elem = self._elem_s * T
        total += self._n_layers * (t_elem + self._layer_s + self._ar_lat + self._ar_bytes_s * T)
        nbytes += self._n_layers * t_elem * self._Batt
        # LM head: one row per decoding sequence and per prefilled sequence's last token
        fpt, wbytes, bpt = self._lm
        f, b = fpt * lm_rows, wbytes + bpt * lm_rows
        total += roofline_seconds(f, b, C, B, p) + self._step_s
        out = (total, flops + f, nbytes + b)
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[key] = out
        return out

    def _evaluate(self, prefill_tokens: int, decode_seqs: int, kv_tokens: int,
                  prefill_context: int, prefill_seqs: int) -> tuple[float, float, float]:
        """(seconds, flops, bytes) of one step, per device."""
        T = prefill_tokens + decode_seqs
        if T <= 0:
            return 0.0, 0.0, 0.0
        lm_rows = decode_seqs + (prefill_seqs if prefill_seqs > 1 else 1) if prefill_tokens > 0 else decode_seqs
        total, flops, nbytes = self._token_part(T, lm_rows)
        t_attn = af = ab = 0.0  # per layer
        # attention: decode reads every cached token of every decoding sequence
        if decode_seqs > 0 and kv_tokens > 0:
            kv = float(kv_tokens)
            if self._window and kv > decode_seqs * self._window:
                kv = decode_seqs * self._window
            af, ab = self._kv_flops * kv, self._kvb * kv
            t_attn = roofline_seconds(af, ab, self._C, self._Batt, self._p)
        if prefill_tokens > 0:
            seqs = prefill_seqs if prefill_seqs > 1 else 1
            S = prefill_tokens / seqs
            ctx = prefill_context / seqs + S / 2.0
            if self._window and ctx > self._window:
                ctx = self._window
            f = self._pf_coeff * prefill_tokens * ctx
            t_attn += f / (self._Cpf * (S / (S + self._pf_half)))
            af += f
        n = self._n_layers
        total += n * t_attn
        if prefill_tokens > 0 and self._eager_s > 0:
            q = EAGER_SMOOTH_P
            total = (total**q + self._eager_s**q) ** (1.0 / q)
        return total / self.engine_efficiency, flops + n * af, nbytes + n * ab

    def step_seconds(self, *, prefill_tokens: int = 0, decode_seqs: int = 0, kv_tokens: int = 0,
                     prefill_context: int = 0, prefill_seqs: int = 1) -> float:
        """Seconds of one engine step: a (chunked) prefill of `prefill_tokens` (of `prefill_seqs`
        sequences, after `prefill_context` already-cached tokens) plus one decode token for each of
        `decode_seqs` sequences whose KV caches hold `kv_tokens` tokens in total."""
        return self._evaluate(prefill_tokens, decode_seqs, kv_tokens, prefill_context, prefill_seqs)[0]

    def step_watts(self, *, prefill_tokens: int = 0, decode_seqs: int = 0, kv_tokens: int = 0,
                   prefill_context: int = 0, prefill_seqs: int = 1) -> float:
        """Average power of all `count` devices during that step (idle power when there is no work)."""
        t, f, b = self._evaluate(prefill_tokens, decode_seqs, kv_tokens, prefill_context, prefill_seqs)
        return self.watts_for(t, f, b)

    def watts_for(self, seconds: float, flops: float, nbytes: float) -> float:
        idle_dev = self.idle_watts / self.count
        if seconds <= 0:
            return self.idle_watts
        u = self._pmem * nbytes / (seconds * self._peak_bytes) + self._pcomp * flops / (seconds * self._peak_flops)
        u = 1.0 if u > 1.0 else u
        return (idle_dev + (self.tdp_watts - idle_dev) * u) * self.count

    def step_seconds_and_watts(self, *, prefill_tokens: int = 0, decode_seqs: int = 0, kv_tokens: int = 0,
                               prefill_context: int = 0, prefill_seqs: int = 1) -> tuple[float, float]:
        t, f, b = self._evaluate(prefill_tokens, decode_seqs, kv_tokens, prefill_context, prefill_seqs)
        return t, self.watts_for(t, f, b)

    def __repr__(self) -> str:
        return (f"StepModel({self.model.id} on {self.count}x {self.accelerator.id}, {self.dtype}, kv {self.kv_dtype}, "
                f"source={self.source}, engine_efficiency={self.engine_efficiency})")


def check_dtype(acc: Accelerator, dtype: str, kv_dtype: str = "bf16") -> None:
    check_weight_dtype(acc, dtype)
    check_kv_dtype(kv_dtype)


def min_devices(model: ModelArch, acc: Accelerator, dtype: str = "bf16") -> int:
    """Fewest devices whose usable memory holds the weights (ignoring KV cache)."""
    wb = WEIGHT_BYTES.get(dtype, 2.0)
    usable = acc.memory_gb * 1e9 * USABLE_MEMORY_FRACTION
    n = 1
    while n * usable <= weight_bytes_total(model, wb) and n < 1024:
        n *= 2
    return n


def make_step_model(model: ModelArch, acc: Accelerator, *, count: int = 1, dtype: str = "bf16",
                    engine_efficiency: float = 1.0, calibration: Calibration | None = None,
                    kv_dtype: str = "bf16") -> StepModel:
    """Build the step-time/power model of one replica (`count` = tensor-parallel degree).

    `dtype` is the weight format (bf16 | fp8 | int4-awq), `kv_dtype` the KV cache's (bf16 | fp8).
    Raises TokenomyError for an unknown dtype, fp8 weights on a chip without fp8, a bad count or
    a model whose weights do not fit in `count` devices.
    """
    check_dtype(acc, dtype, kv_dtype)
    if count < 1:
        raise TokenomyError(f"count must be >= 1 (got {count})")
    if count > acc.max_count:
        raise TokenomyError(
            f"tensor parallelism over {count} x {acc.id} exceeds the {acc.max_count} devices its interconnect joins")
    if not engine_efficiency > 0:
        raise TokenomyError(f"engine_efficiency must be > 0 (got {engine_efficiency})")
    if calibration is None:
        calibration = load_calibration(acc.profile or DEFAULT_PROFILE)
    source = "profile" if acc.profile and calibration.profile == acc.profile else "datasheet"
    sm = StepModel(model, acc, count=count, dtype=dtype, engine_efficiency=engine_efficiency,
                   cal=calibration, source=source, kv_dtype=kv_dtype)
    if sm.max_kv_tokens <= 0:
        need = min_devices(model, acc, dtype)
        raise TokenomyError(
            f"{model.id} ({dtype}: {sm.weight_bytes / 1e9:.0f} GB of weights) does not fit on {count} x {acc.id} "
            f"({acc.memory_gb:g} GB each, {USABLE_MEMORY_FRACTION:.0%} usable); needs about {need} devices")
    return sm
