"""$/Mtok and $ per 1k requests of each benchmarked endpoint (pure arithmetic).

List prices (explicit or from the price map): $/Mtok as listed; $ per 1k requests =
1000 x (mean input tokens x input price + mean output tokens x output price) / 1e6.

Self-hosted (`h100x1@us-va`): the replica costs `usd_per_hour` whether busy or not, so over
the benchmark it cost usd_per_hour x duration / 3600. That bill is split between input and
output by the time requests spent in each phase (sum of TTFTs vs sum of E2E - TTFT: TTFT
includes queueing, which is charged to input), then divided by the measured tokens:
    usd_per_mtok_input  = bill x share_prefill / input_tokens  x 1e6
    usd_per_mtok_output = bill x share_decode  / output_tokens x 1e6
    usd_per_1k_requests = bill / requests_ok x 1000
i.e. the hourly cost over the *measured* throughput at the load offered (an idle replica
makes tokens expensive). usd_per_hour = device rental (cheapest on-demand, or ownership)
x count + energy at the devices' TDP x site PUE x site $/kWh (an upper bound on power).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tokenomy.catalog.types import Accelerator, ApiModelPrice, Site

from .metrics import Metrics
from .spec import PriceSpec


@dataclass(frozen=True, slots=True)
class Pricing:
    basis: str  # "list" | "price_map" | "self_hosted"
    spec: str
    usd_per_mtok_input: float | None
    usd_per_mtok_output: float | None
    usd_per_1k_requests: float | None
    usd_per_hour: float | None = None
    usd_per_hour_devices: float | None = None
    usd_per_hour_energy: float | None = None
    share_prefill: float | None = None
    source: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def per_1k_requests(usd_per_mtok_input: float, usd_per_mtok_output: float, metrics: Metrics) -> float | None:
    if not metrics.requests_ok:
        return None
    return 1000.0 * (metrics.mean_input_tokens * usd_per_mtok_input
                     + metrics.mean_output_tokens * usd_per_mtok_output) / 1e6


def list_pricing(spec: PriceSpec, usd_per_mtok_input: float, usd_per_mtok_output: float, metrics: Metrics, *,
                 basis: str = "list", source: str | None = None) -> Pricing:
    return Pricing(basis, spec.text, usd_per_mtok_input, usd_per_mtok_output,
                   per_1k_requests(usd_per_mtok_input, usd_per_mtok_output, metrics), source=source)


def price_map_pricing(spec: PriceSpec, price: ApiModelPrice, metrics: Metrics) -> Pricing:
    prices = price.prices("standard", input_tokens=int(round(metrics.mean_input_tokens)))
    return list_pricing(spec, prices.input * 1e6, prices.output * 1e6, metrics, basis="price_map",
                        source=f"{price.source} ({price.date})")


def replica_usd_per_hour(acc: Accelerator, site: Site, count: int, device_usd_per_hour: float) -> tuple[float, float]:
    """(devices $/h, energy $/h at TDP) of one replica of `count` devices at `site`."""
    devices = device_usd_per_hour * count
    energy = (acc.tdp_watts or 0.0) * count / 1000.0 * site.pue * site.usd_per_kwh
    return devices, energy


def self_hosted_pricing(spec: PriceSpec, usd_per_hour_devices: float, usd_per_hour_energy: float,
                        metrics: Metrics, *, source: str | None = None) -> Pricing:
    usd_per_hour = usd_per_hour_devices + usd_per_hour_energy
    bill = usd_per_hour * metrics.duration_s / 3600.0
    busy = metrics.prefill_seconds_sum + metrics.decode_seconds_sum
    share = metrics.prefill_seconds_sum / busy if busy > 0 else None
    usd_in = usd_out = per_1k = None
    if share is not None and metrics.input_tokens:
        usd_in = bill * share / metrics.input_tokens * 1e6
    if share is not None and metrics.output_tokens:
        usd_out = bill * (1.0 - share) / metrics.output_tokens * 1e6
    if metrics.requests_ok:
        per_1k = bill / metrics.requests_ok * 1000.0
    return Pricing("self_hosted", spec.text, usd_in, usd_out, per_1k, usd_per_hour=usd_per_hour,
                   usd_per_hour_devices=usd_per_hour_devices, usd_per_hour_energy=usd_per_hour_energy,
                   share_prefill=share, source=source)


def resolve_pricing(spec: PriceSpec | None, metrics: Metrics) -> Pricing | None:
    """Price an endpoint from its spec using the default catalog and price map."""
    if spec is None:
        return None
    if spec.kind == "list":
        assert spec.usd_per_mtok_input is not None and spec.usd_per_mtok_output is not None
        return list_pricing(spec, spec.usd_per_mtok_input, spec.usd_per_mtok_output, metrics)
    if spec.kind == "map":
        from tokenomy.catalog.prices import default_price_map

        return price_map_pricing(spec, default_price_map().get(spec.price_id or spec.text), metrics)
    from tokenomy.catalog import load_catalog
    from tokenomy.economics import ownership_price, rental_price

    cat = load_catalog()
    acc = cat.accelerator(spec.accelerator or "")
    site = cat.site(spec.site or "")
    hourly = ownership_price(acc) if spec.ownership else rental_price(acc)
    devices, energy = replica_usd_per_hour(acc, site, spec.count, hourly.usd_per_hour)
    source = f"{hourly.basis} {hourly.provider or ''} {hourly.source} ({hourly.date}); energy {site.id}".replace("  ", " ")
    return self_hosted_pricing(spec, devices, energy, metrics, source=source)
