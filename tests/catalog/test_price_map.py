"""LiteLLM-format price maps: normalisation of real entries, lookups, user files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tokenomy.catalog.prices import DEFAULT_PRICE_FILE, default_price_map, load_price_map, normalize_entry
from tokenomy.errors import ConfigError, UnknownNameError

SHARED_FILE = Path("/work/shared/data/prices/litellm_model_prices.json")  # only on the dev machine


@pytest.fixture(scope="module")
def pm():
    return default_price_map()


def test_gpt_4o_categories_and_tiers(pm):
    p = pm.get("gpt-4o")
    assert (p.id, p.provider, p.mode) == ("gpt-4o", "openai", "chat")
    std, batch, prio = p.tiers["standard"], p.tiers["batch"], p.tiers["priority"]
    assert (std.input, std.cached_input, std.output) == (2.5e-6, 1.25e-6, 1e-5)
    assert std.cache_write is None and std.usd_per_token("cache_write") == 2.5e-6  # charged as input
    assert std.reasoning == 1e-5  # no reasoning price listed: billed as output
    assert (batch.input, batch.output) == (1.25e-6, 5e-6)
    assert (prio.input, prio.output, prio.cached_input) == (4.25e-6, 1.7e-5, 2.125e-6)
    assert set(p.tiers) == {"standard", "batch", "priority"}
    assert (p.max_input_tokens, p.max_output_tokens) == (128000, 16384)
    assert p.source and p.date


def test_cache_write_reasoning_flex_and_long_context_on_real_entries(pm):
    claude = pm.get("claude-sonnet-4-5")
    assert claude.tiers["standard"].cache_write == 3.75e-6
    assert claude.tiers["standard"].cached_input == 3e-7
    assert claude.tiers["batch"].cache_write == 1.875e-6 and claude.tiers["batch"].cached_input == 1.5e-7
    qwen = pm.get("dashscope/qwen-turbo")
    assert qwen.tiers["standard"].reasoning == 5e-7 and qwen.tiers["standard"].output == 2e-7
    o3 = pm.get("o3")
    assert o3.tiers["flex"].input == 1e-6 and o3.tiers["flex"].cached_input == 2.5e-7
    gem = pm.get("gemini-2.5-pro")
    assert gem.long_context_above_tokens == 200_000
    assert gem.long_context["standard"].input == 2.5e-6 and gem.long_context["priority"].output == 2.7e-5
    assert gem.prices("standard", input_tokens=100_000).input == 1.25e-6
    assert gem.prices("standard", input_tokens=250_000).input == 2.5e-6
    assert gem.prices("batch", input_tokens=250_000).input == 1.25e-6
    assert gem.prices("priority", input_tokens=10).output == 1.8e-5
    assert pm.get("gpt-4o").prices("flex").input == 2.5e-6  # tier not offered: standard


def test_lookup_by_provider_prefix_case_and_close_matches(pm):
    assert pm.get("openai/gpt-4o").id == "gpt-4o"
    assert pm.get("GPT-4o-Mini").id == "gpt-4o-mini"
    assert pm.get("azure/gpt-4o").provider == "azure"
    assert "gpt-4o" in pm and "no-such-model" not in pm
    with pytest.raises(UnknownNameError) as err:
        pm.get("gpt-4oo")
    assert "gpt-4o" in err.value.close
    assert pm.get("gpt-4oo", None) is None


def test_shipped_map_is_text_models_and_skips_entries_without_token_prices(pm):
    assert len(pm) + len(pm.skipped) == 3865  # chat/completion/responses/embedding entries shipped
    assert len(pm) > 3400 and len(pm.skipped) > 0
    assert {p.mode for p in pm.all()} <= {"chat", "completion", "responses", "embedding"}
    emb = pm.get("text-embedding-3-small")  # the default fleet's embedding model
    assert (emb.mode, emb.tiers["standard"].input, emb.tiers["standard"].output) == ("embedding", 2e-8, 0.0)
    assert "azure/container" in pm.skipped  # a chat-mode entry priced per session, not per token


@pytest.mark.skipif(not SHARED_FILE.exists(), reason="full LiteLLM file only on the dev machine")
def test_shipped_copy_matches_the_full_file():
    full = json.loads(SHARED_FILE.read_text())
    shipped = json.loads(gzip.decompress(DEFAULT_PRICE_FILE.read_bytes()))
    assert len(full) == 4878
    assert all(full[k] == v for k, v in shipped.items())
    pm = load_price_map(SHARED_FILE)
    assert len(pm) + len(pm.skipped) == 4877  # all but sample_spec
    assert pm.get("text-embedding-3-small").tiers["standard"].input == 2e-8  # embeddings load from a full file


def test_user_price_file_json_and_gz(tmp_path):
    entries = {
        "my-model": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                     "cache_read_input_token_cost": 1e-7, "input_cost_per_token_batches": 5e-7,
                     "output_cost_per_token_batches": 1e-6, "litellm_provider": "acme", "mode": "chat",
                     "max_input_tokens": 32000},
        "acme/other": {"input_cost_per_token": "3e-6", "output_cost_per_token": 6e-6, "litellm_provider": "acme"},
        "image-only": {"output_cost_per_image": 0.04, "litellm_provider": "acme"},
        "bad": {"input_cost_per_token": None, "output_cost_per_token": 1e-6},
    }
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(entries))
    pm = load_price_map(path)
    assert sorted(pm) == ["acme/other", "my-model"] and sorted(pm.skipped) == ["bad", "image-only"]
    m = pm.get("acme/my-model")
    assert m.tiers["standard"].cached_input == 1e-7 and m.tiers["batch"].input == 5e-7
    assert m.max_input_tokens == 32000 and m.source == str(path)
    assert pm.get("other").tiers["standard"].input == 3e-6  # bare id finds provider/id; text number parsed
    gz = tmp_path / "prices.json.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert load_price_map(gz, source="vendor sheet", date="2026-11").get("my-model").source == "vendor sheet"


def test_user_price_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_price_map(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_price_map(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_price_map(bad)


def test_normalize_entry_without_prices_is_none():
    assert normalize_entry("x", {"output_cost_per_token": 1e-6}, source="s", date="2026") is None
    assert normalize_entry("x", {"input_cost_per_token": -1, "output_cost_per_token": 1e-6}, source="s", date="2026") is None


def test_user_prices_merge_over_the_shipped_map(tmp_path, pm):
    path = tmp_path / "ours.json"
    path.write_text(json.dumps({
        "gpt-4o": {"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6, "litellm_provider": "openai"},
        "acme/llm": {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7, "litellm_provider": "acme"},
    }))
    merged = pm.merged(load_price_map(path, source="negotiated", date="2026-11"))
    assert merged.get("gpt-4o").tiers["standard"].input == 2e-6
    assert merged.get("gpt-4o").source == "negotiated" and set(merged.get("gpt-4o").tiers) == {"standard"}
    assert merged.get("llm").provider == "acme"
    assert merged.get("gpt-4o-mini").tiers["standard"].input == 1.5e-7  # shipped entries kept
    assert len(merged) == len(pm) + 1
    assert pm.get("gpt-4o").tiers["standard"].input == 2.5e-6  # the shipped map is not changed
