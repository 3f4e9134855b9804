"""examples/providers.yaml is a valid config: every provider's deployment gets its adapter, priced
from the price map (cache-write price included where the map has one)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import yaml

from tokenomy.config import parse_config
from tokenomy.gateway.pricing import resolve_price
from tokenomy.gateway.providers import PROVIDERS, adapter_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "providers.yaml"


def _service_account(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "k", "private_key": pem,
                                "client_email": "gw@p.iam.gserviceaccount.com", "client_id": "1",
                                "token_uri": "http://127.0.0.1:9/token"}))
    return path


def test_example_config_covers_every_provider(monkeypatch, tmp_path):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_service_account(tmp_path)))  # Vertex's chain
    cfg = parse_config(yaml.safe_load(EXAMPLE.read_text()), str(EXAMPLE))
    assert sorted(d.provider for d in cfg.deployments) == sorted(PROVIDERS)
    adapters = {d.provider: adapter_for(d) for d in cfg.deployments}
    assert adapters["anthropic"].headers["x-api-key"] == "sk-ant-x"
    assert {p for p, a in adapters.items() if a.passthrough} == {"openai", "azure"}
    claude = next(d for d in cfg.deployments if d.name == "claude@anthropic")
    # claude-sonnet-4-5 in the shipped LiteLLM map: cache_creation_input_token_cost 3.75e-06
    assert resolve_price(claude).usd_per_mtok_cache_write == Decimal("3.75")
