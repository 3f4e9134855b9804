"""API price lists in LiteLLM's price-map format, normalised to `ApiModelPrice`.

LiteLLM's `model_prices_and_context_window.json` maps a model id to flat fields such as
`input_cost_per_token`, `cache_read_input_token_cost`, `output_cost_per_token_batches`.
We read those into token categories (input, cached_input, cache_write, output, reasoning)
per tier (standard, batch, priority, flex) plus the long-context premium. Entries without
both an input and an output token price (images, audio, per-second billing) are skipped and
counted. Entries are validated lazily, on first lookup, so loading stays fast.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from tokenomy.errors import ConfigError, UnknownNameError

from .types import ApiModelPrice, TokenPrices

DEFAULT_PRICE_FILE = Path(__file__).resolve().parent / "litellm_model_prices.json.gz"
DEFAULT_SOURCE = "LiteLLM model_prices_and_context_window.json v1.110.2 (MIT), https://github.com/BerriAI/litellm"
DEFAULT_DATE = "2026-11"

# category -> LiteLLM base field; a tier appends its suffix ("" | "_batches" | "_priority" | "_flex")
_CATEGORY_FIELDS = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cached_input": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
    "reasoning": "output_cost_per_reasoning_token",
}
TIER_SUFFIXES = {"standard": "", "batch": "_batches", "priority": "_priority", "flex": "_flex"}
_ABOVE = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")


def _num(value: Any) -> float | None:
    """A non-negative finite price, or None (missing, null, text, negative)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if x >= 0 and x == x and x != float("inf") else None


def _tier_prices(entry: Mapping[str, Any], suffix: str) -> TokenPrices | None:
    """One tier's prices; None when the tier lists no input and output price."""
    got = {cat: _num(entry.get(base + suffix)) for cat, base in _CATEGORY_FIELDS.items()}
    if got["cached_input"] is None and not suffix:
        got["cached_input"] = _num(entry.get("input_cost_per_token_cache_hit"))  # DeepSeek-style
    if got["input"] is None or got["output"] is None:
        return None
    if got["reasoning"] is None:
        # reasoning tokens bill as output unless the tier lists a reasoning price
        got["reasoning"] = got["output"]
    return TokenPrices(**got)


def normalize_entry(key: str, entry: Mapping[str, Any], *, source: str, date: str) -> ApiModelPrice | None:
    """One LiteLLM entry as an ApiModelPrice; None when it has no per-token input/output price."""
    standard = _tier_prices(entry, "")
    if standard is None:
        return None
    tiers = {"standard": standard}
    for tier, suffix in TIER_SUFFIXES.items():
        if suffix and (prices := _tier_prices(entry, suffix)) is not None:
            tiers[tier] = prices

    thresholds = sorted(int(m.group(1)) for k in entry if (m := _ABOVE.match(k)))
    long_context: dict[str, TokenPrices] = {}
    above = None
    if thresholds:
        above = thresholds[0] * 1000
        for tier, suffix in TIER_SUFFIXES.items():
            lc = _tier_prices(entry, f"_above_{thresholds[0]}k_tokens{suffix}")
            if lc is not None:
                long_context[tier] = lc
        if not long_context:
            above = None

    provider = str(entry.get("litellm_provider") or (key.split("/", 1)[0] if "/" in key else "unknown"))
    return ApiModelPrice(
        id=key,
        provider=provider,
        mode=entry.get("mode") if isinstance(entry.get("mode"), str) else None,
        tiers=tiers,
        max_input_tokens=_int(entry.get("max_input_tokens")),
        max_output_tokens=_int(entry.get("max_output_tokens") or entry.get("max_tokens")),
        source=str(entry.get("source") or source),
        date=date,
        long_context_above_tokens=above,
        long_context=long_context,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _has_token_prices(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and _num(entry.get("input_cost_per_token")) is not None
        and _num(entry.get("output_cost_per_token")) is not None
    )


class PriceMap(Mapping[str, ApiModelPrice]):
    """Normalised API prices by price-map id. `get` also accepts `provider/id` and any case."""

    def __init__(self, raw: Mapping[str, Any], *, source: str, date: str, path: Path | None = None):
        self.source, self.date, self.path = source, date, path
        self._raw: dict[str, Mapping[str, Any]] = {}
        self._origin: dict[str, tuple[str, str]] = {}  # id -> (source, date) of the map it came from
        self.skipped: list[str] = []  # ids without per-token input and output prices
        for key, entry in raw.items():
            if key == "sample_spec":  # LiteLLM's documentation entry
                continue
            if _has_token_prices(entry):
                self._raw[key] = entry
            else:
                self.skipped.append(key)
        self._cache: dict[str, ApiModelPrice] = {}
        self._index: tuple[dict[str, str], dict[str, str]] | None = None

    def merged(self, other: PriceMap) -> PriceMap:
        """A new map: this one with `other`'s entries added or replacing ours (by exact id)."""
        out = PriceMap({}, source=self.source, date=self.date, path=self.path)
        for pm in (self, other):
            for key, entry in pm._raw.items():
                out._raw[key] = entry
                out._origin[key] = pm._origin.get(key, (pm.source, pm.date))
        out.skipped = [k for k in (*self.skipped, *other.skipped) if k not in out._raw]
        return out

    # -- Mapping protocol over the exact ids
    def __getitem__(self, key: str) -> ApiModelPrice:
        price = self._cache.get(key)
        if price is None:
            source, date = self._origin.get(key, (self.source, self.date))
            price = normalize_entry(key, self._raw[key], source=source, date=date)
            assert price is not None  # filtered at load
            self._cache[key] = price
        return price

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.resolve(key) is not None

    def get(self, name: str, default: Any = ...) -> ApiModelPrice:  # type: ignore[override]
        """The price of `name`: an exact id, `provider/id`, or an unambiguous id ignoring case.

        Unknown names raise UnknownNameError (with close matches) unless `default` is given.
        """
        key = self.resolve(name)
        if key is None:
            if default is not ...:
                return default
            raise UnknownNameError("API model", name, self._raw.keys(), list_command="tokenomy catalog list prices")
        return self[key]

    def resolve(self, name: str) -> str | None:
        """The price-map id that `name` refers to, or None.

        Order: exact id; id ignoring case; `provider/id` where the entry `id` belongs to
        `provider` (e.g. "openai/gpt-4o"); a bare id that exists only as `provider/id`.
        """
        if name in self._raw:
            return name
        exact, stripped = self._lookup_index()
        lowered = name.strip().lower()
        if (key := exact.get(lowered)) is not None:
            return key
        if "/" in lowered:
            provider, rest = lowered.split("/", 1)
            key = exact.get(rest)
            if key is not None and str(self._raw[key].get("litellm_provider", "")).lower() == provider:
                return key
        return stripped.get(lowered)

    def _lookup_index(self) -> tuple[dict[str, str], dict[str, str]]:
        """(lower-cased id -> id, lower-cased id without its provider prefix -> id); shortest key wins."""
        if self._index is None:
            exact: dict[str, str] = {}
            stripped: dict[str, str] = {}
            for key in sorted(self._raw, key=lambda k: (len(k), k)):
                exact.setdefault(key.lower(), key)
                provider = str(self._raw[key].get("litellm_provider") or "").lower()
                if provider and key.lower().startswith(provider + "/"):
                    stripped.setdefault(key[len(provider) + 1 :].lower(), key)
            self._index = (exact, stripped)
        return self._index

    def all(self) -> list[ApiModelPrice]:
        """Every entry, normalised (validates all; slower than single lookups)."""
        return [self[k] for k in self._raw]


def parse_price_map(data: bytes, *, origin: str) -> dict[str, Any]:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{origin}: invalid JSON price map: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: a price map is a JSON object of model id -> prices")
    return raw


def load_price_map(path: Path | str, *, source: str | None = None, date: str | None = None) -> PriceMap:
    """A user's LiteLLM-format price file (`.json` or `.json.gz`)."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read price map ({exc.strerror or exc})") from exc
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if date is None:
        date = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date().isoformat()
    return PriceMap(parse_price_map(data, origin=str(path)), source=source or str(path), date=date, path=path)


@lru_cache(maxsize=1)
def default_price_map() -> PriceMap:
    """The shipped LiteLLM price map (text models), normalised; cached."""
    data = gzip.decompress(DEFAULT_PRICE_FILE.read_bytes())
    return PriceMap(parse_price_map(data, origin=str(DEFAULT_PRICE_FILE)), source=DEFAULT_SOURCE, date=DEFAULT_DATE,
                    path=DEFAULT_PRICE_FILE)
