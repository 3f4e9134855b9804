"""Parsing the bench command line: endpoints, price specs, synthetic workloads, rate lists.

Every parse error is a TokenomyError with one line naming the offending text.

    --endpoint NAME=URL[,model=M][,api-key-env=VAR][,price=PRICESPEC][,header=K:V][,timeout=S]
    PRICESPEC: a price-map id (gpt-4o-mini) | in:0.15/out:0.60 (USD per Mtok)
             | ACC x COUNT @ SITE (h100x1@us-va: self-hosted, hourly cost at the measured throughput)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

from tokenomy.errors import TokenomyError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LIST_PRICE = re.compile(r"^in:(?P<i>\d+(?:\.\d*)?|\.\d+)/out:(?P<o>\d+(?:\.\d*)?|\.\d+)$", re.IGNORECASE)
_SELF_HOSTED = re.compile(r"^(?P<acc>[a-z0-9][a-z0-9.-]*?)x(?P<count>\d+)@(?P<site>[a-z0-9][a-z0-9-]*)"
                          r"(?::(?P<basis>rental|ownership))?$", re.IGNORECASE)
_ENDPOINT_KEYS = ("model", "api-key-env", "price", "header", "timeout")


@dataclass(frozen=True, slots=True)
class PriceSpec:
    """How an endpoint is priced: kind is "map" (price-map id), "list" (explicit USD/Mtok)
    or "self_hosted" (accelerator x count at a site; hourly cost over measured throughput)."""

    kind: str
    text: str
    price_id: str | None = None
    usd_per_mtok_input: float | None = None
    usd_per_mtok_output: float | None = None
    accelerator: str | None = None
    count: int = 1
    site: str | None = None
    ownership: bool = False


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    name: str
    base_url: str  # ".../v1" (requests go to base_url + "/chat/completions")
    model: str | None = None  # None: ask /models for the first id
    api_key_env: str | None = None
    price: PriceSpec | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    input_tokens: int
    output_tokens: int


def parse_price(text: str) -> PriceSpec:
    value = text.strip()
    if not value:
        raise TokenomyError("empty price spec; use a price-map id (gpt-4o-mini), in:0.15/out:0.60 or h100x1@us-va")
    m = _LIST_PRICE.match(value)
    if m:
        return PriceSpec("list", value, usd_per_mtok_input=float(m["i"]), usd_per_mtok_output=float(m["o"]))
    if value.lower().startswith("in:") or value.lower().startswith("out:"):
        raise TokenomyError(f"bad list price '{value}': use in:USD/out:USD per Mtok, e.g. in:0.15/out:0.60")
    m = _SELF_HOSTED.match(value)
    if m:
        count = int(m["count"])
        if count < 1:
            raise TokenomyError(f"bad self-hosted price '{value}': count must be >= 1")
        return PriceSpec("self_hosted", value, accelerator=m["acc"].lower(), count=count, site=m["site"].lower(),
                         ownership=(m["basis"] or "").lower() == "ownership")
    if "@" in value:
        raise TokenomyError(f"bad self-hosted price '{value}': use ACCxCOUNT@SITE, e.g. h100x1@us-va")
    return PriceSpec("map", value, price_id=value)


def _split_options(text: str) -> list[str]:
    """Split on commas that start a new `key=` option (so header values may contain commas)."""
    parts: list[str] = []
    for piece in text.split(","):
        key = piece.split("=", 1)[0].strip().lower()
        if parts and (("=" not in piece) or key not in _ENDPOINT_KEYS):
            parts[-1] += "," + piece
        else:
            parts.append(piece)
    return parts


def parse_endpoint(text: str) -> EndpointSpec:
    """NAME=URL[,model=M][,api-key-env=VAR][,price=SPEC][,header=K:V][,timeout=S]."""
    head, _, rest = text.partition(",")
    name, sep, url = head.partition("=")
    name, url = name.strip(), url.strip()
    if not sep or not name or not url:
        raise TokenomyError(f"bad --endpoint '{text}': use NAME=URL[,model=M][,api-key-env=VAR][,price=SPEC]")
    if not _NAME.match(name):
        raise TokenomyError(f"bad endpoint name '{name}': use letters, digits, '-', '_' or '.'")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise TokenomyError(f"bad URL '{url}' for endpoint {name}: use http(s)://HOST[:PORT]/v1")
    opts: dict[str, str] = {}
    headers: dict[str, str] = {}
    for part in _split_options(rest) if rest else []:
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or key not in _ENDPOINT_KEYS:
            raise TokenomyError(f"bad option '{part}' for endpoint {name}: known options are "
                                f"{', '.join(k + '=' for k in _ENDPOINT_KEYS)}")
        if not value:
            raise TokenomyError(f"empty {key}= for endpoint {name}")
        if key == "header":
            hk, hsep, hv = value.partition(":")
            if not hsep or not hk.strip():
                raise TokenomyError(f"bad header '{value}' for endpoint {name}: use header=NAME:VALUE")
            headers[hk.strip()] = hv.strip()
            continue
        if key in opts:
            raise TokenomyError(f"{key}= given twice for endpoint {name}")
        opts[key] = value
    timeout = None
    if "timeout" in opts:
        try:
            timeout = float(opts["timeout"])
        except ValueError:
            timeout = -1.0
        if not (timeout > 0 and math.isfinite(timeout)):
            raise TokenomyError(f"bad timeout '{opts['timeout']}' for endpoint {name}: seconds > 0")
    return EndpointSpec(
        name=name, base_url=url.rstrip("/"), model=opts.get("model"), api_key_env=opts.get("api-key-env"),
        price=parse_price(opts["price"]) if "price" in opts else None, headers=headers, timeout_seconds=timeout,
    )


def parse_endpoints(texts: list[str]) -> list[EndpointSpec]:
    specs = [parse_endpoint(t) for t in texts]
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise TokenomyError(f"endpoint name '{s.name}' used twice")
        seen.add(s.name)
    return specs


def parse_synthetic(text: str) -> SyntheticSpec:
    """in=512,out=128 (tokens per request)."""
    values: dict[str, int] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("in", "out") or not value.strip().isdigit() or int(value) < 1:
            raise TokenomyError(f"bad --synthetic '{text}': use in=TOKENS,out=TOKENS (integers >= 1)")
        values[key] = int(value)
    if set(values) != {"in", "out"}:
        raise TokenomyError(f"bad --synthetic '{text}': give both in= and out=")
    return SyntheticSpec(values["in"], values["out"])


def parse_rates(text: str) -> list[float]:
    """'4' or a sweep '1,2,4' (requests per second); 'inf' sends everything at once."""
    rates: list[float] = []
    for part in text.split(","):
        try:
            rate = float(part.strip())
        except ValueError:
            raise TokenomyError(f"bad --rate '{text}': use requests/s, or a list like 1,2,4") from None
        if not rate > 0:
            raise TokenomyError(f"bad --rate '{text}': rates must be > 0")
        rates.append(rate)
    return rates
