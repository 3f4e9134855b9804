"""What one transformer layer does, per device, as GEMMs and attention coefficients.

Tensor parallelism over `count` devices (Megatron style): column-parallel QKV and gate/up,
row-parallel O and down, heads split across devices (KV heads replicated when there are
fewer KV heads than devices; the MLA latent cache is replicated on every device), LM head
split by vocabulary. MoE: every expert's weights are held (memory), the `n_active_experts`
routed experts per token do the arithmetic, and a step reads the weights of the experts the
batch touches.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenomy.catalog.types import ModelArch


@dataclass(frozen=True, slots=True)
class Gemm:
    """A weight GEMM: `tokens` rows of width `k` times a (k x n) weight."""

    name: str
    k: int
    n: int

    def flops_per_token(self) -> float:
        return 2.0 * self.k * self.n


@dataclass(frozen=True, slots=True)
class LayerShapes:
    """Per-device shapes of the model (all layers alike except dense vs MoE MLPs)."""

    attn_gemms: tuple[Gemm, ...]  # projections around attention (every layer)
    dense_mlp: tuple[Gemm, ...]  # MLP of dense layers
    shared_mlp: tuple[Gemm, ...]  # always-on shared experts of MoE layers
    expert_gemms: tuple[Gemm, ...]  # ONE routed expert's GEMMs (MoE layers)
    router: Gemm | None
    lm_head: Gemm
    n_dense_layers: int
    n_moe_layers: int
    n_experts: int
    n_active_experts: int
    heads_q: int  # query heads on this device
    qk_dim: int  # per-head width of q.k
    v_dim: int  # per-head width of values
    kv_values_per_token_layer: int  # KV-cache values per token per layer on this device
    decode_attn_flops_per_kv_token: float  # per layer, per cached token read by a decode query
    mlp_width_per_token: float  # intermediate activations per token (elementwise traffic)
    hidden: int


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def layer_shapes(model: ModelArch, count: int = 1) -> LayerShapes:
    n = max(1, count)
    h = model.hidden_size
    hq = _ceil_div(model.n_heads, n)
    if model.is_mla:
        rope = model.qk_rope_head_dim or 0
        nope = model.qk_nope_head_dim or model.head_dim
        v = model.v_head_dim or model.head_dim
        lora = model.kv_lora_rank or 0
        qk = nope + rope
        attn: list[Gemm] = []
        if model.q_lora_rank:
            attn += [Gemm("q_a", h, model.q_lora_rank), Gemm("q_b", model.q_lora_rank, hq * qk)]
        else:
            attn += [Gemm("q", h, hq * qk)]
        attn += [Gemm("kv_a", h, lora + rope), Gemm("kv_b", lora, hq * (nope + v)), Gemm("o", hq * v, h)]
        kv_values = lora + rope  # one latent per token, replicated on every device
        # absorbed MLA decode: scores over (latent + rope), values over the latent, per head
        dec_flops = 2.0 * hq * (lora + rope) + 2.0 * hq * lora
        v_dim = v
    else:
        d = model.head_dim
        hkv = _ceil_div(model.n_kv_heads, n)
        attn = [Gemm("qkv", h, (hq + 2 * hkv) * d), Gemm("o", hq * d, h)]
        kv_values = 2 * hkv * d
        dec_flops = 4.0 * hq * d
        qk = v_dim = d
    inter = model.intermediate_size
    dense_mlp = (Gemm("gate_up", h, 2 * _ceil_div(inter, n)), Gemm("down", _ceil_div(inter, n), h))
    if model.is_moe:
        mi = model.moe_intermediate_size or model.intermediate_size
        mi_dev = _ceil_div(mi, n)
        experts = (Gemm("expert_gate_up", h, 2 * mi_dev), Gemm("expert_down", mi_dev, h))
        shared: tuple[Gemm, ...] = ()
        if model.n_shared_experts:
            sw = _ceil_div(mi * model.n_shared_experts, n)
            shared = (Gemm("shared_gate_up", h, 2 * sw), Gemm("shared_down", sw, h))
        router: Gemm | None = Gemm("router", h, model.n_experts)
        n_dense = min(model.n_dense_layers, model.n_layers)
        n_moe = model.n_layers - n_dense
        k = max(1, model.n_active_experts)
        mlp_width = k * mi_dev + (shared[1].k if shared else 0)
    else:
        experts, shared, router = (), (), None
        n_dense, n_moe, k = model.n_layers, 0, 0
        mi_dev = 0
        mlp_width = _ceil_div(inter, n)
    return LayerShapes(
        attn_gemms=tuple(attn),
        dense_mlp=dense_mlp,
        shared_mlp=shared,
        expert_gemms=experts,
        router=router,
        lm_head=Gemm("lm_head", h, _ceil_div(model.vocab_size, n)),
        n_dense_layers=n_dense,
        n_moe_layers=n_moe,
        n_experts=model.n_experts,
        n_active_experts=k,
        heads_q=hq,
        qk_dim=qk,
        v_dim=v_dim,
        kv_values_per_token_layer=kv_values,
        decode_attn_flops_per_kv_token=dec_flops,
        mlp_width_per_token=float(mlp_width),
        hidden=h,
    )


def experts_touched(n_experts: int, n_active: int, tokens: float) -> float:
    """Expected number of distinct experts that `tokens` tokens route to (uniform routing).

    E * (1 - (1 - k/E)^T): equals T*k for a few tokens, approaches E for large batches,
    and never exceeds min(E, T*k).
    """
    if tokens <= 0 or n_experts <= 0:
        return 0.0
    return n_experts * (1.0 - (1.0 - n_active / n_experts) ** tokens)


def weight_bytes_total(model: ModelArch, bytes_per_weight: float) -> float:
    """All weights (every expert), across all devices."""
    return model.total_params_b * 1e9 * bytes_per_weight


def kv_bytes_per_token(model: ModelArch, count: int = 1, kv_bytes_per_value: float = 2.0) -> float:
    """KV-cache bytes one token occupies on ONE device (all layers)."""
    s = layer_shapes(model, count)
    return model.n_layers * s.kv_values_per_token_layer * kv_bytes_per_value

