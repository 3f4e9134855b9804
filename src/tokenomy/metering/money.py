"""Money in the ledger: Decimal in Python, integer pico-USD (1e-12 USD) in storage.

Integers keep SQL sums exact; pico-USD is fine enough for per-token prices (e.g.
$0.0375/Mtok x 1 token = 37,500 pUSD). Amounts are rounded half-even to 1 pUSD on entry.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

PICO_PER_USD = 10**12


def to_decimal(value: Decimal | int | float | str) -> Decimal:
    """Decimal from any number; floats go through repr so 0.1 stays 0.1."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def to_pusd(value: Decimal | int | float | str) -> int:
    if type(value) is Decimal:  # hot path: scaleb is exact and cheaper than a multiplication
        return int(value.scaleb(12).to_integral_value(rounding=ROUND_HALF_EVEN))
    return int((to_decimal(value) * PICO_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_pusd(pusd: int) -> Decimal:
    """Exact Decimal, trailing zeros dropped, never in exponent form (str gives '100', '0.3')."""
    value = Decimal(int(pusd)).scaleb(-12).normalize()
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value


def money_str(value: Decimal) -> str:
    """Plain decimal string without exponent or trailing zeros: '0.3', '100', '0'."""
    return format(value.normalize(), "f")
