"""Providers' committed terms and compliance of measured figures with them.

Terms file (YAML), keyed by endpoint name (or gateway deployment name with --from-ledger):

    fast:
      max_usd_per_mtok_input: 0.20
      max_usd_per_mtok_output: 0.80
      ttft_ms: {percentile: 90, max: 500}   # p90 TTFT must be <= 500 ms
      tpot_ms: {percentile: 99, max: 50}
      availability_pct: 99.5                # successful requests / all requests
    slow: {...}

(An optional top-level `providers:` mapping holding the same is accepted.) Every term is
optional; a provider is compliant when every term it states is met. A term that cannot be
measured (no successful request, no price) is reported with ok = null and is not met.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenomy.errors import ConfigError

from .metrics import percentile


class LatencyTerm(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    percentile: float = Field(90.0, gt=0, le=100, alias="p")
    max: float = Field(gt=0)


class ProviderTerms(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_usd_per_mtok_input: float | None = Field(None, ge=0)
    max_usd_per_mtok_output: float | None = Field(None, ge=0)
    ttft_ms: LatencyTerm | None = None
    tpot_ms: LatencyTerm | None = None
    availability_pct: float | None = Field(None, ge=0, le=100)


def load_terms(path: Path | str) -> dict[str, ProviderTerms]:
    import yaml

    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read terms ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("providers"), dict):
        data = data["providers"]
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping of provider name -> terms")
    out: dict[str, ProviderTerms] = {}
    for name, raw in data.items():
        try:
            out[str(name)] = ProviderTerms.model_validate(raw or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{path}: {name}.{where}: {err['msg']}") from None
    return out


@dataclass(frozen=True)
class Measured:
    """What compliance is judged on (samples in ms, availability as a share 0..1)."""

    usd_per_mtok_input: float | None
    usd_per_mtok_output: float | None
    ttft_samples_ms: list[float]
    tpot_samples_ms: list[float]
    availability: float | None
    requests: int


def _max_check(committed: float, measured: float | None) -> dict:
    return {"committed": committed, "measured": measured, "ok": None if measured is None else measured <= committed}


def _latency_check(term: LatencyTerm, samples: list[float]) -> dict:
    value = percentile(samples, term.percentile)
    return {"percentile": term.percentile, "committed_ms": term.max, "measured_ms": value,
            "ok": None if value is None else value <= term.max}


def check_terms(terms: ProviderTerms, m: Measured) -> dict:
    """{"compliant": bool, "checks": {name: {..., "ok": bool | None}}}."""
    checks: dict[str, dict] = {}
    if terms.max_usd_per_mtok_input is not None:
        checks["price_input"] = _max_check(terms.max_usd_per_mtok_input, m.usd_per_mtok_input)
    if terms.max_usd_per_mtok_output is not None:
        checks["price_output"] = _max_check(terms.max_usd_per_mtok_output, m.usd_per_mtok_output)
    if terms.ttft_ms is not None:
        checks["ttft"] = _latency_check(terms.ttft_ms, m.ttft_samples_ms)
    if terms.tpot_ms is not None:
        checks["tpot"] = _latency_check(terms.tpot_ms, m.tpot_samples_ms)
    if terms.availability_pct is not None:
        pct = None if m.availability is None or not m.requests else m.availability * 100.0
        checks["availability"] = {"committed_pct": terms.availability_pct, "measured_pct": pct,
                                  "ok": None if pct is None else pct >= terms.availability_pct}
    return {"compliant": all(c["ok"] is True for c in checks.values()), "requests": m.requests, "checks": checks}
