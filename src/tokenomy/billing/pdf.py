"""Invoice as PDF: a real layout (header, plan periods, line table, totals, usage) drawn with fpdf2.

Text is Unicode: DejaVu Sans (shipped inside matplotlib) for most scripts, Droid Sans Fallback
(billing/fonts, Apache-2.0) for the characters DejaVu lacks (CJK among them); fpdf2 embeds only
the glyphs used. The bytes are deterministic: fixed creation date and document id, so the same
invoice always renders to the same file (the fingerprint already names its content).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from tokenomy.billing.invoice import Invoice
from tokenomy.billing.money import money_text

_FONTS = Path(__file__).with_name("fonts")
_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)  # fixed creation date: deterministic bytes
_KIND_LABEL = {"subscription": "Subscription", "usage": "Usage", "overage": "Overage", "cost_plus": "Cost plus",
               "list": "List price", "commitment": "Commitment", "adjustment": "Adjustment", "credit": "Credit",
               "rounding": "Rounding"}


@lru_cache(maxsize=1)
def _dejavu() -> tuple[Path, Path]:
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return ttf / "DejaVuSans.ttf", ttf / "DejaVuSans-Bold.ttf"


@lru_cache(maxsize=1)
def _dejavu_charset() -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(_dejavu()[0]), lazy=True) as font:
        return frozenset(font.getBestCmap())


def _needs_fallback(texts: list[str]) -> bool:
    covered = _dejavu_charset()
    return any(ord(ch) not in covered for t in texts for ch in t if not ch.isspace())


def _texts(d: dict) -> list[str]:
    out = [d["tenant"], *(s["plan"] for s in d["segments"])]
    out += [li["description"] for li in d["lines"]]
    return out


def to_pdf(inv: Invoice) -> bytes:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    d = inv.to_dict()
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_creation_date(_EPOCH)
    pdf.set_title(f"Invoice {inv.tenant} {inv.period}")
    pdf.set_producer("tokenomy")
    regular, bold = _dejavu()
    pdf.add_font("body", "", str(regular))
    pdf.add_font("body", "B", str(bold))
    if _needs_fallback(_texts(d)):  # parse the 4 MB CJK font only when an invoice needs it
        pdf.add_font("fallback", "", str(_FONTS / "DroidSansFallbackFull.ttf"))
        pdf.set_fallback_fonts(["fallback"], exact_match=False)
    pdf.set_auto_page_break(True, margin=18)
    pdf.set_margins(18, 18, 18)
    pdf.add_page()
    width = pdf.epw
    nl = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}

    pdf.set_font("body", "B", 20)
    pdf.cell(width / 2, 10, "Invoice")
    pdf.set_font("body", "", 10)
    status = d["status"] + (f", closed {d['closed_at']}" if d["closed_at"] else "")
    pdf.cell(width / 2, 10, f"Period {inv.period}  ·  {status}", align="R", **nl)
    pdf.set_font("body", "B", 12)
    pdf.cell(width, 7, inv.tenant, **nl)
    pdf.set_font("body", "", 9)
    for s in d["segments"]:
        pdf.cell(width, 5, f"Plan {s['plan']}: {s['start']} to {s['end']}", **nl)
    pdf.ln(4)

    cols = (30, width - 30 - 38, 38)
    pdf.set_fill_color(236, 239, 244)
    pdf.set_font("body", "B", 9)
    for w, title, align in zip(cols, ("Kind", "Description", "Amount (USD)"), ("L", "L", "R"), strict=True):
        pdf.cell(w, 7, title, border="B", align=align, fill=True)
    pdf.ln(7)
    pdf.set_font("body", "", 9)
    for li in d["lines"]:
        y0 = pdf.get_y()
        pdf.multi_cell(cols[0], 6, _KIND_LABEL.get(li["kind"], li["kind"]), new_x=XPos.RIGHT, new_y=YPos.TOP)
        pdf.multi_cell(cols[1], 6, li["description"], new_x=XPos.RIGHT, new_y=YPos.TOP)
        pdf.multi_cell(cols[2], 6, money_text(li["amount_usd"]), align="R", new_x=XPos.RIGHT, new_y=YPos.TOP)
        y1 = max(pdf.get_y(), y0 + 6)
        pdf.set_xy(pdf.l_margin, y1)
        pdf.set_draw_color(221, 221, 221)
        pdf.line(pdf.l_margin, y1, pdf.l_margin + width, y1)

    pdf.ln(2)
    for label, key in (("Charges", "charges_usd"), ("Adjustments", "adjustments_usd"),
                       ("Credits", "credits_usd"), ("Rounding", "rounding_usd")):
        value = money_text(-Decimal(d[key]) if key == "credits_usd" else d[key])  # credits reduce the total
        pdf.cell(cols[0] + cols[1], 6, label, align="R")
        pdf.cell(cols[2], 6, value, align="R", **nl)
    pdf.set_font("body", "B", 11)
    pdf.cell(cols[0] + cols[1], 8, "Total due (USD)", align="R", border="T")
    pdf.cell(cols[2], 8, money_text(d["total_usd"]), align="R", border="T", **nl)

    pdf.ln(6)
    pdf.set_font("body", "", 8)
    u = d["usage"]
    pdf.multi_cell(width, 4.5, (
        f"Usage: {u.get('requests', 0):,} requests, {u.get('input_tokens', 0):,} input tokens "
        f"({u.get('cached_input_tokens', 0):,} cached), {u.get('output_tokens', 0):,} output tokens.\n"
        "Credits: " + (", ".join(_credit_text(c) for c in d["credits"]) or "none") + ".\n"
        f"Rounding: {d['rounding']}.\nFingerprint {d['fingerprint']}"), **nl)
    # a document id from the content, not fpdf2's default (which mixes in the creation time)
    pdf.file_id = lambda: _file_id(d["fingerprint"])  # type: ignore[method-assign]
    return bytes(pdf.output())


def _credit_text(c: dict) -> str:
    state = c.get("state")
    rest = state if state in ("used", "expired") else f"{money_text(c['remaining_usd'])} remaining"
    return f"{c['id']}: drawn {money_text(c['drawn_usd'])}, {rest}"


def _file_id(fingerprint: str) -> str:
    h = hashlib.md5(fingerprint.encode(), usedforsecurity=False).hexdigest().upper()
    return f"<{h}><{h}>"
