"""The shipped catalog: every required id, every field, a source and a date on every figure."""

from __future__ import annotations

import re

import pytest

from tokenomy.catalog import load_catalog

ACCELERATORS = "h100 h200 b200 a100-80g l40s l4 a10g mi300x gaudi3 tpu-v5e inferentia2".split()
MODELS = (
    "llama-2-7b llama-2-13b llama-2-70b llama-3-8b llama-3-70b llama-3.1-405b mistral-7b "
    "mixtral-8x7b deepseek-v3 qwen3-235b-a22b gemma-2b gemma-7b"
).split()
SITES = "us-va us-tx us-wa us-or us-ga us-az us-ca de fr se ie nl".split()
DATE = re.compile(r"^\d{4}(-(\d{2}|S[12]))?(-\d{2})?$")  # YYYY, YYYY-MM, YYYY-MM-DD, YYYY-S2 (Eurostat half)


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def _sourced(obj) -> None:
    assert obj.source.strip(), obj
    assert DATE.match(obj.date), obj.date


@pytest.mark.parametrize("acc_id", ACCELERATORS)
def test_accelerator_has_every_figure_with_source(cat, acc_id):
    acc = cat.accelerator(acc_id)
    assert acc.id == acc_id
    _sourced(acc)
    assert acc.bf16_tflops > 0 and acc.memory_gb > 0 and acc.memory_tb_per_s > 0
    assert acc.interconnect_gb_per_s > 0 and acc.max_count >= 1
    assert acc.idle_watts is not None and acc.idle_watts > 0
    # figures not on the main datasheet carry their own source
    for key in ("idle_watts", "interconnect_gb_per_s"):
        _sourced(acc.sources[key])
    if acc.tdp_watts is None:  # only where the vendor publishes none, and then it says so
        _sourced(acc.sources["tdp_watts"])
    else:
        assert acc.idle_watts < acc.tdp_watts
    assert len(acc.rental_prices) >= 1
    for price in acc.rental_prices:
        _sourced(price)
        assert price.provider and 0.1 < price.usd_per_hour < 20
    if acc.purchase is not None:
        _sourced(acc.purchase)
        # a purchase pays back in 0.2-5 years at the cheapest rental rate: catches unit slips
        cheapest = min(p.usd_per_hour for p in acc.rental_prices)
        assert 0.2 < acc.purchase.usd / cheapest / 8760 < 5


def test_datasheet_anchor_figures(cat):
    # anchors.md: dense bf16 / fp8 TFLOP/s, memory GB, TB/s, W
    expect = {
        "h100": (989, 1979, 80, 3.35, 700), "h200": (989, 1979, 141, 4.8, 700),
        "b200": (2250, 4500, 192, 8.0, 1000), "a100-80g": (312, None, 80, 2.04, 400),
        "l40s": (362, 733, 48, 0.864, 350), "l4": (121, 242, 24, 0.30, 72),
        "a10g": (70, None, 24, 0.60, 150), "mi300x": (1307, 2610, 192, 5.3, 750),
        "gaudi3": (1835, 1835, 128, 3.7, 900), "tpu-v5e": (197, None, 16, 0.82, None),
        "inferentia2": (190, 190, 32, 0.82, None),
    }
    for acc_id, (bf16, fp8, gb, tbs, watts) in expect.items():
        a = cat.accelerator(acc_id)
        assert (a.bf16_tflops, a.fp8_tflops, a.memory_gb, a.memory_tb_per_s, a.tdp_watts) == (bf16, fp8, gb, tbs, watts)


def test_h100_is_the_profiled_device_with_measured_idle_and_anchor_prices(cat):
    h100 = cat.accelerator("h100")
    assert h100.profile == "h100"
    assert h100.idle_watts == pytest.approx(71.268, abs=0.1)  # env.csv idle_power_w
    by_class = {(p.provider, p.price_class): p.usd_per_hour for p in h100.rental_prices}
    assert by_class[("lambda", "neocloud-on-demand")] == 2.99
    assert by_class[("aws", "hyperscaler-on-demand")] == pytest.approx(6.88)  # p5.48xlarge $55.04 / 8
    assert by_class[("aws", "spot")] == pytest.approx(17.6289 / 8, abs=1e-4)
    assert {p.usd_per_hour for p in cat.accelerator("tpu-v5e").rental_prices} >= {1.20}
    assert cat.accelerator("a10g").rental_prices[0].usd_per_hour == pytest.approx(1.006)
    assert cat.accelerator("l4").rental_prices[0].usd_per_hour == pytest.approx(0.7068)
    assert sum(a.profile is not None for a in cat.accelerators.values()) == 1


def test_interconnect_is_one_direction_per_device(cat):
    # types.Accelerator: one direction; vendors quote both directions combined (NVLink 4 "900 GB/s")
    one_way = {"h100": 450, "h200": 450, "b200": 900, "a100-80g": 300, "mi300x": 448, "gaudi3": 600,
               "l4": 32, "l40s": 32, "a10g": 32}
    for acc_id, gb_per_s in one_way.items():
        assert cat.accelerator(acc_id).interconnect_gb_per_s == gb_per_s
        assert "bidirectional" in cat.accelerator(acc_id).sources["interconnect_gb_per_s"].source


@pytest.mark.parametrize("model_id", MODELS)
def test_model_has_every_field_with_source(cat, model_id):
    m = cat.model(model_id)
    assert m.id == model_id
    _sourced(m)
    assert m.source.startswith("https://huggingface.co/") and m.source.endswith("config.json")
    assert m.n_heads % m.n_kv_heads == 0
    assert m.active_params_b <= m.total_params_b
    assert m.is_moe == (m.n_experts > 0)
    if m.is_moe:
        assert 0 < m.n_active_experts <= m.n_experts and m.moe_intermediate_size
        assert m.active_params_b < m.total_params_b


def _param_count(m) -> tuple[float, float]:
    """Parameters (total, active) implied by the architecture fields, in billions."""
    h = m.hidden_size
    if m.is_mla:
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        attn = (h * m.q_lora_rank + m.q_lora_rank * m.n_heads * qk + h * (m.kv_lora_rank + m.qk_rope_head_dim)
                + m.kv_lora_rank * m.n_heads * (m.qk_nope_head_dim + m.v_head_dim) + m.n_heads * m.v_head_dim * h)
    else:
        attn = 2 * h * m.n_heads * m.head_dim + 2 * h * m.n_kv_heads * m.head_dim
    dense_layer = attn + 3 * h * m.intermediate_size
    if m.is_moe:
        expert = 3 * h * m.moe_intermediate_size
        moe_layers = m.n_layers - m.n_dense_layers
        total = m.n_dense_layers * dense_layer + moe_layers * (attn + (m.n_experts + m.n_shared_experts) * expert)
        active = m.n_dense_layers * dense_layer + moe_layers * (attn + (m.n_active_experts + m.n_shared_experts) * expert)
    else:
        total = active = m.n_layers * dense_layer
    embeddings = m.vocab_size * h * (1 if m.family == "gemma" else 2)  # gemma ties input/output embeddings
    return (total + embeddings) / 1e9, (active + embeddings) / 1e9


@pytest.mark.parametrize("model_id", MODELS + ["llama-3.1-8b", "llama-3.1-70b"])
def test_architecture_fields_reproduce_published_parameter_counts(cat, model_id):
    # A typo in any shape field (layers, widths, heads, experts, vocab) moves the count.
    m = cat.model(model_id)
    total, active = _param_count(m)
    assert total == pytest.approx(m.total_params_b, rel=0.005)
    assert active == pytest.approx(m.active_params_b, rel=0.02)


def test_kv_cache_elements_gqa_and_mla(cat):
    assert cat.model("llama-3-8b").kv_elements_per_token == 32 * 2 * 8 * 128  # 128 KiB/token in bf16
    assert cat.model("llama-2-7b").kv_elements_per_token == 32 * 2 * 32 * 128
    ds = cat.model("deepseek-v3")
    assert ds.is_mla and ds.kv_lora_rank == 512 and ds.qk_rope_head_dim == 64
    assert ds.kv_elements_per_token == 61 * (512 + 64)
    assert cat.model("qwen3-235b-a22b").kv_elements_per_token == 94 * 2 * 4 * 128
    assert cat.model("mistral-7b").sliding_window == 4096


@pytest.mark.parametrize("site_id", SITES)
def test_site_has_every_figure_with_source(cat, site_id):
    s = cat.site(site_id)
    assert s.id == site_id
    assert 0.03 < s.usd_per_kwh < 0.4
    assert 1.0 <= s.pue <= 2.0
    assert 0 <= s.gco2_per_kwh < 900
    for key in ("price", "pue", "carbon"):
        _sourced(s.sources[key])
    if s.power_cap_mw is not None:
        _sourced(s.sources["power_cap"])


def test_site_anchor_figures(cat):
    eia = {"us-va": 0.089, "us-tx": 0.066, "us-wa": 0.064, "us-or": 0.075, "us-ga": 0.069, "us-az": 0.081, "us-ca": 0.186}
    for site_id, price in eia.items():
        assert cat.site(site_id).usd_per_kwh == price
        assert cat.site(site_id).pue == 1.58
    for eu in ("de", "fr", "se", "ie", "nl"):  # 0.09-0.26 EUR/kWh x 1.0813
        assert 0.09 * 1.0813 * 0.8 < cat.site(eu).usd_per_kwh < 0.26 * 1.0813
    assert len(cat.sites) >= 12
    assert cat.site("fr").gco2_per_kwh < cat.site("de").gco2_per_kwh  # nuclear vs coal/gas
