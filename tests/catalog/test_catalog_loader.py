"""Loading, user overrides by YAML (no code changes), aliases and unknown names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokenomy.catalog import Catalog, load_catalog
from tokenomy.errors import ConfigError, TokenomyError, UnknownNameError


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_default_catalog_is_cached_and_has_every_section():
    a, b = load_catalog(), load_catalog()
    assert a is b
    assert isinstance(a, Catalog)
    assert {"h100", "tpu-v5e"} <= set(a.accelerators) and "llama-3-8b" in a.models and "us-va" in a.sites


def test_aliases_and_case_insensitive_lookup():
    cat = load_catalog()
    assert cat.model("meta-llama/Meta-Llama-3-8B-Instruct").id == "llama-3-8b"
    assert cat.model("LLAMA3-8B").id == "llama-3-8b"
    assert cat.model("Llama_3_8B").id == "llama-3-8b"
    assert cat.model("meta-llama/Llama-3.1-8B-Instruct").id == "llama-3.1-8b"
    assert cat.model("Qwen/Qwen3-235B-A22B").id == "qwen3-235b-a22b"
    assert cat.accelerator("H100").id == "h100"
    assert cat.accelerator("NVIDIA H100 80GB HBM3").id == "h100"  # the name nvidia-smi prints
    assert cat.accelerator("inf2").id == "inferentia2"
    assert cat.accelerator("A100").id == "a100-80g"
    assert cat.site("Virginia").id == "us-va"
    assert cat.site("us-east-1").id == "aws-us-east-1"


def test_unknown_names_raise_with_close_matches():
    cat = load_catalog()
    with pytest.raises(UnknownNameError) as err:
        cat.model("llama-3-80b")
    assert err.value.kind == "model" and "llama-3-8b" in err.value.close
    assert "did you mean" in str(err.value)
    with pytest.raises(UnknownNameError) as err:
        cat.accelerator("h10")
    assert "h100" in err.value.close and isinstance(err.value, TokenomyError)
    with pytest.raises(UnknownNameError) as err:
        cat.site("us-vaa")
    assert err.value.close[0] == "us-va"


def test_user_yaml_adds_a_price_to_an_existing_entry(tmp_path):
    path = _write(tmp_path, "mine.yaml", """
accelerators:
  H100:                      # any case / alias finds the entry
    rental_prices:
      - {provider: my-colo, usd_per_hour: 1.85, kind: reserved, source: "quote #123", date: 2026-10-01}
      - {provider: lambda, usd_per_hour: 2.49, source: "https://lambda.ai/pricing", date: "2026-11"}
sites:
  us-va:
    pue: 1.2
    sources: {pue: {source: "our facility meter", date: "2026-10"}}
""")
    cat = load_catalog(extra=[path])
    h100 = cat.accelerator("h100")
    prices = {(p.provider, p.kind): p for p in h100.rental_prices}
    assert prices[("my-colo", "reserved")].usd_per_hour == 1.85
    assert prices[("my-colo", "reserved")].date == "2026-10-01"  # YAML date read as text
    assert prices[("lambda", "on-demand")].usd_per_hour == 2.49  # same provider+kind: replaced
    assert prices[("aws", "on-demand")].usd_per_hour == pytest.approx(6.88)  # others kept
    assert h100.bf16_tflops == 989 and h100.profile == "h100"  # untouched fields kept
    va = cat.site("us-va")
    assert va.pue == 1.2 and va.sources["pue"].source == "our facility meter"
    assert va.sources["price"].date == "2023"  # deep merge keeps the sibling source
    assert load_catalog().site("us-va").pue == 1.58  # the default catalog is not mutated


def test_user_yaml_adds_new_entries_and_extends(tmp_path):
    path = _write(tmp_path, "new.yaml", """
models:
  my-llama:
    extends: llama-3-8b
    name: Our fine-tune
    aliases: [acme/llama-ft]
    context_length: 32768
    source: internal
    date: "2026-11"
sites:
  home:
    name: Home lab
    country: US
    usd_per_kwh: 0.15
    pue: 1.0
    gco2_per_kwh: 350
    power_cap_mw: 0.01
    sources:
      price: {source: bill, date: "2026-10"}
      pue: {source: no cooling, date: "2026-10"}
      carbon: {source: EIA, date: "2023"}
      power_cap: {source: breaker, date: "2026-10"}
""")
    cat = load_catalog(extra=[path])
    m = cat.model("ACME/llama-ft")
    assert (m.id, m.context_length, m.n_layers, m.n_kv_heads) == ("my-llama", 32768, 32, 8)
    assert cat.model("meta-llama/Meta-Llama-3-8B-Instruct").id == "llama-3-8b"  # aliases not inherited
    assert cat.site("home").power_cap_mw == 0.01
    assert "home" not in load_catalog().sites


def test_new_entry_missing_a_field_names_file_and_field_path(tmp_path):
    path = _write(tmp_path, "bad.yaml", """
accelerators:
  x1:
    name: X1
    vendor: acme
    bf16_tflops: 100
    memory_gb: 64
    interconnect_gb_per_s: 100
    source: datasheet
    date: "2026-01"
""")
    with pytest.raises(ConfigError) as err:
        load_catalog(extra=[path])
    msg = str(err.value)
    assert str(path) in msg and "accelerators.x1.memory_tb_per_s: missing required field" in msg


def test_bad_values_and_unknown_fields_name_the_path(tmp_path):
    bad_type = _write(tmp_path, "t.yaml", "models:\n  llama-3-8b:\n    n_layers: many\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: models\.llama-3-8b\.n_layers: "):
        load_catalog(extra=[bad_type])
    unknown = _write(tmp_path, "u.yaml", "sites:\n  de:\n    price_eur: 0.2\n")
    with pytest.raises(ConfigError, match=r"u\.yaml: sites\.de\.price_eur: unknown field"):
        load_catalog(extra=[unknown])
    nested = _write(tmp_path, "n.yaml", "accelerators:\n  h100:\n    rental_prices:\n      - {provider: x, usd_per_hour: -1, source: s, date: '2026'}\n")
    with pytest.raises(ConfigError, match=r"accelerators\.h100\.rental_prices\.\d+\.usd_per_hour"):
        load_catalog(extra=[nested])


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown section 'gpus'"):
        load_catalog(extra=[_write(tmp_path, "s.yaml", "gpus: {}\n")])
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_catalog(extra=[_write(tmp_path, "y.yaml", "models: [unclosed\n")])
    with pytest.raises(ConfigError, match="cannot read"):
        load_catalog(extra=[tmp_path / "missing.yaml"])
    with pytest.raises(ConfigError, match=r"extends: unknown model 'llama-9b'"):
        load_catalog(extra=[_write(tmp_path, "e.yaml", "models:\n  m:\n    extends: llama-9b\n")])


def test_env_var_files_merge_and_explicit_extra_wins(tmp_path, monkeypatch):
    a = _write(tmp_path, "a.yaml", "sites:\n  de:\n    pue: 1.3\n  fr:\n    pue: 1.25\n")
    b = _write(tmp_path, "b.yaml", "sites:\n  de:\n    pue: 1.1\n")
    monkeypatch.setenv("TOKENOMY_CATALOG", os.pathsep.join([str(a), str(b)]))
    cat = load_catalog()
    assert cat.site("de").pue == 1.1 and cat.site("fr").pue == 1.25  # later env file wins
    c = _write(tmp_path, "c.yaml", "sites:\n  fr:\n    pue: 1.05\n")
    assert load_catalog(extra=[c]).site("fr").pue == 1.05
    monkeypatch.delenv("TOKENOMY_CATALOG")
    assert load_catalog().site("de").pue == 1.58


def test_edited_file_is_reloaded(tmp_path):
    path = _write(tmp_path, "m.yaml", "sites:\n  se:\n    usd_per_kwh: 0.05\n")
    assert load_catalog(extra=[path]).site("se").usd_per_kwh == 0.05
    path.write_text("sites:\n  se:\n    usd_per_kwh: 0.07\n", encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert load_catalog(extra=[path]).site("se").usd_per_kwh == 0.07
