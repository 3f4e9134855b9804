"""Money rules of billing (Decimal only; floats never touch an invoice).

Rounding, explicitly:
- every line item is computed exactly and quantized to 1e-6 USD (ROUND_HALF_EVEN);
- the invoice total is the exact sum of the lines, rounded to cents (0.01 USD, ROUND_HALF_EVEN);
- the difference is shown as its own `rounding` line, so the lines always add up to the total.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

LINE_QUANTUM = Decimal("0.000001")
CENT = Decimal("0.01")
ZERO = Decimal(0)
PICO_PER_USD = 10**12
ROUNDING_RULE = "lines at 0.000001 USD, total at 0.01 USD, both ROUND_HALF_EVEN; a rounding line closes the gap"


def dec(value: Decimal | int | float | str) -> Decimal:
    """Decimal from any number; floats go through repr so 0.1 stays 0.1."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def line_amount(value: Decimal) -> Decimal:
    return value.quantize(LINE_QUANTUM, rounding=ROUND_HALF_EVEN)


def to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def from_pusd(pusd: int) -> Decimal:
    return Decimal(int(pusd)).scaleb(-12)


def usd_str(value: Decimal) -> str:
    """Plain string, no exponent: '12.5', '0', '-0.000001'."""
    value = value.normalize()
    if value == 0:
        return "0"
    return format(value, "f")


def money_text(value: Decimal | str | int) -> str:
    """An amount for people: at least cents, more digits only where they carry value, thousands
    separated, minus sign kept ('10.00', '-5.00', '1,234.50', '0.000123'; never '-0.00')."""
    v = dec(value)
    if v == v.quantize(CENT):
        v = v.quantize(CENT)
    else:
        v = v.normalize()
    if v == 0:
        v = abs(v).quantize(CENT)
    return f"{v:,f}"
