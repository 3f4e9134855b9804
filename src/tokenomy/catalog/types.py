"""Typed catalog entries. Every real-world figure carries a source and a date.

These types are the contract between the catalog (data), perf (step times, power) and
economics ($/Mtok, J/token). They are plain, frozen pydantic models: no I/O here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Sourced(_Frozen):
    """Where a figure comes from: a URL or document name, and the date it was read (YYYY-MM[-DD])."""

    source: str
    date: str


# Price classes: prices compare like with like only within one class (tokenomy.catalog.price_classes).
PriceClass = Literal["hyperscaler-on-demand", "neocloud-on-demand", "reserved-1y", "reserved-3y", "spot"]
HYPERSCALERS = frozenset({"aws", "gcp", "azure"})


class RentalPrice(_Frozen):
    """Price to rent one accelerator for one hour from one provider."""

    provider: str
    usd_per_hour: float = Field(gt=0)
    kind: Literal["on-demand", "spot", "reserved", "capacity-block", "committed"] = "on-demand"
    # The class this price belongs to; "none" = in no class (estimates, capacity blocks). When a
    # file leaves it out it is derived: spot -> spot; on-demand -> hyperscaler-on-demand for
    # aws/gcp/azure (and their "aws-..." variants), else neocloud-on-demand; reserved/committed
    # terms must say which (reserved-1y / reserved-3y), else they are in no class.
    price_class: PriceClass | Literal["none"] = "none"
    source: str
    date: str
    note: str | None = None  # e.g. which instance the per-device price was derived from

    @model_validator(mode="before")
    @classmethod
    def _derive_class(cls, data):
        if isinstance(data, dict) and "price_class" not in data:
            data = {**data, "price_class": derive_price_class(str(data.get("provider", "")),
                                                              str(data.get("kind", "on-demand")))}
        return data


def derive_price_class(provider: str, kind: str) -> str:
    """The class of a price whose file does not name one (see RentalPrice.price_class)."""
    if kind == "spot":
        return "spot"
    if kind == "on-demand":
        return "hyperscaler-on-demand" if provider.lower().split("-")[0] in HYPERSCALERS else "neocloud-on-demand"
    return "none"


class PurchasePrice(_Frozen):
    """Price to buy one accelerator (the card/chip share of a server, for ownership cost)."""

    usd: float = Field(gt=0)
    source: str
    date: str
    note: str | None = None  # e.g. "street-price estimate"


class Accelerator(_Frozen):
    id: str  # catalog key, e.g. "h100"
    name: str  # e.g. "NVIDIA H100 SXM 80GB"
    vendor: str
    bf16_tflops: float = Field(gt=0)  # dense
    fp8_tflops: float | None = None  # dense; None when the chip has no fp8 path
    memory_gb: float = Field(gt=0)
    memory_tb_per_s: float = Field(gt=0)
    tdp_watts: float | None = None  # None where the vendor publishes none (TPU v5e, Inferentia2)
    idle_watts: float | None = None  # measured or estimated idle draw
    interconnect_gb_per_s: float = Field(gt=0)  # per-device, one direction (NVLink, IF, ICI, PCIe)
    max_count: int = 8  # devices per node that the interconnect joins
    rental_prices: tuple[RentalPrice, ...] = ()
    purchase: PurchasePrice | None = None
    profile: str | None = None  # name of a measured profile directory in perf/profiles/
    source: str
    date: str
    # Per-figure sources where a figure does not come from the main datasheet (`source`),
    # keyed by field name, e.g. "idle_watts", "interconnect_gb_per_s".
    sources: dict[str, Sourced] = Field(default_factory=dict)


class ModelArch(_Frozen):
    id: str  # catalog key, e.g. "llama-3-8b"
    name: str
    family: str
    n_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)  # dense MLP width (per expert for MoE: see moe_intermediate_size)
    vocab_size: int = Field(gt=0)
    total_params_b: float = Field(gt=0)  # billions, all experts
    active_params_b: float = Field(gt=0)  # billions, per token
    context_length: int = Field(gt=0)
    n_experts: int = 0  # 0 = dense
    n_active_experts: int = 0
    moe_intermediate_size: int | None = None
    n_shared_experts: int = 0
    kv_lora_rank: int | None = None  # MLA (DeepSeek): compressed KV width per layer
    # MLA (DeepSeek) details: the KV cache holds kv_lora_rank + qk_rope_head_dim values per
    # token per layer (one shared latent, not per head); head_dim above is the value head dim.
    qk_rope_head_dim: int | None = None
    qk_nope_head_dim: int | None = None
    v_head_dim: int | None = None
    q_lora_rank: int | None = None
    n_dense_layers: int = 0  # MoE models whose first layers use a dense MLP (DeepSeek: 3)
    sliding_window: int | None = None  # attention window (Mistral-7B v0.1: 4096); None = full
    source: str
    date: str

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def kv_elements_per_token(self) -> int:
        """KV-cache values stored per token across all layers (multiply by bytes per value).

        GQA/MHA: K and V for every KV head; MLA: one compressed latent plus the RoPE key.
        Sliding windows are ignored here (they cap tokens held, not values per token).
        """
        if self.kv_lora_rank is not None:
            return self.n_layers * (self.kv_lora_rank + (self.qk_rope_head_dim or 0))
        return self.n_layers * 2 * self.n_kv_heads * self.head_dim


class Site(_Frozen):
    id: str  # e.g. "us-va"
    name: str
    country: str
    region: str | None = None  # cloud region or grid region, informative
    usd_per_kwh: float = Field(gt=0)
    pue: float = Field(ge=1.0)
    gco2_per_kwh: float = Field(ge=0)
    power_cap_mw: float | None = None
    sources: dict[str, Sourced]  # keys: "price", "pue", "carbon" (and "power_cap" when set)
    note: str | None = None


TokenCategory = Literal[
    "input", "cached_input", "cache_write", "output", "reasoning"
]
PriceTier = Literal["standard", "batch", "priority", "flex"]


class TokenPrices(_Frozen):
    """USD per token for each token category of one API model, one tier."""

    input: float
    output: float
    cached_input: float | None = None  # None: charged as input
    cache_write: float | None = None  # None: charged as input
    reasoning: float | None = None  # None: charged as output

    def usd_per_token(self, category: TokenCategory) -> float:
        value = getattr(self, category)
        if value is not None:
            return float(value)
        return self.output if category == "reasoning" else self.input


class ApiModelPrice(_Frozen):
    """One API model's prices, normalised from a LiteLLM-format price map."""

    id: str  # the price map's key, e.g. "gpt-4o" or "together_ai/meta-llama/..."
    provider: str
    mode: str | None = None
    tiers: dict[str, TokenPrices]  # "standard" always; "batch"/"priority" when listed
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    source: str
    date: str
    # Long-context premium: prompts above this many input tokens are billed at
    # `long_context[tier]` (LiteLLM `*_above_<N>k_tokens` fields; the lowest threshold listed).
    long_context_above_tokens: int | None = None
    long_context: dict[str, TokenPrices] = Field(default_factory=dict)

    def prices(self, tier: str = "standard", *, input_tokens: int = 0) -> TokenPrices:
        """Prices for `tier` (falling back to standard), long-context prices when they apply."""
        if self.long_context_above_tokens is not None and input_tokens > self.long_context_above_tokens:
            lc = self.long_context.get(tier) or self.long_context.get("standard")
            if lc is not None and (tier in self.long_context or tier not in self.tiers):
                return lc
        return self.tiers.get(tier) or self.tiers["standard"]
