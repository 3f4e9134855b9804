"""How the CLI shows numbers and tables to a person (JSON output never goes through here).

Money keeps its significant digits ($0.00000587, not 0.0000...), counts get thousands separators,
and tables fit the terminal: identifiers fold onto a second line instead of being cut to "llama-...".
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

_SIGNIFICANT = 3


def usd(value: Decimal | float | int | str | None, *, sign: str = "$") -> str:
    """'$12.35', '$0.0123', '$0.00000587', '-$5.00', '$0' ; None -> '-'."""
    if value is None or value == "":
        return "-"
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not d.is_finite():
        return str(d)
    if d == 0:
        return f"{sign}0"
    neg, mag = d < 0, abs(d)
    if mag >= 1:
        text = f"{mag:,.2f}"
    else:  # keep _SIGNIFICANT digits after the leading zeros
        digits = -mag.adjusted() - 1 + _SIGNIFICANT
        text = f"{mag:.{digits}f}".rstrip("0").rstrip(".")
    return f"{'-' if neg else ''}{sign}{text}"


def count(value: int | float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def joules(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("MJ", 1e6), ("kJ", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:,.2f} {unit}"
    return f"{value:,.2f} J"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], *,
                numeric: Sequence[str] = (), caption: str | None = None) -> None:
    """A table that fits the terminal: numeric columns right-aligned and never wrapped, text
    columns folded (whole identifiers, over two lines if need be) rather than cut."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for c in columns:
        if c in numeric:
            table.add_column(c, justify="right", no_wrap=True)
        else:
            table.add_column(c, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)
