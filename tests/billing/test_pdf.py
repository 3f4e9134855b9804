"""PDF invoices: a real layout with Unicode text, money formatted like the HTML, deterministic bytes."""

from __future__ import annotations

import io
from decimal import Decimal as D

import pytest

from tokenomy.billing.invoice import Invoice
from tokenomy.billing.money import money_text
from tokenomy.billing.rating import LineItem
from tokenomy.billing.render import to_html, to_pdf


def invoice(tenant: str = "Société Générale 東京") -> Invoice:
    lines = [LineItem("subscription", "plan pro-flat subscription", D("10")),
             LineItem("usage", "input tokens: 1,500,000 x 3 USD/Mtok — 東京リージョン", D("4.5")),
             LineItem("usage", "output tokens: 20 x 12 USD/Mtok", D("0.00024")),
             LineItem("credit", "prepaid credit 'welcome'", D("-5")),
             LineItem("rounding", "rounding to cents (ROUND_HALF_EVEN)", D("-0.00024"))]
    return Invoice(tenant, "2026-11", lines, D("9.50"), segments=[{"plan": "pro-flat", "start": "2026-11-01",
                                                                   "end": "2026-12-01"}],
                   usage={"requests": 1234, "input_tokens": 1_500_000, "output_tokens": 20},
                   credits=[{"id": "welcome", "drawn_usd": "5", "remaining_usd": "0", "state": "used"}])


def text_of(pdf: bytes) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


@pytest.mark.parametrize(("value", "text"), [("10", "10.00"), ("-5", "-5.00"), ("4.5", "4.50"), ("0", "0.00"),
                                             ("-0", "0.00"), ("1234.5", "1,234.50"), ("0.00024", "0.00024"),
                                             ("-0.000001", "-0.000001"), (D("500.00"), "500.00")])
def test_money_text(value, text):
    assert money_text(value) == text


def test_pdf_keeps_unicode_and_shows_every_line():
    data = to_pdf(invoice())
    assert data.startswith(b"%PDF-")
    text = text_of(data)
    assert "Société Générale 東京" in text and "東京リージョン" in text  # not "??" (the old Courier writer)
    for expected in ("Subscription", "10.00", "4.50", "0.00024", "-5.00", "Total due (USD)", "9.50",
                     "welcome: drawn 5.00, used", "1,234 requests"):
        assert expected in text, expected
    assert "expired" not in text


def test_pdf_bytes_are_deterministic_and_fonts_subset():
    a, b = to_pdf(invoice()), to_pdf(invoice())
    assert a == b
    assert len(a) < 200_000  # glyph subsets, not the 4 MB fallback font
    plain = invoice("Acme Corp")
    plain.lines = [li for li in plain.lines if "東京" not in li.description]
    latin = to_pdf(plain)  # no CJK: the fallback font is not embedded at all
    assert b"DroidSans" not in latin and b"DroidSans" in a


def test_html_formats_money_like_the_pdf():
    html = to_html(invoice())
    assert "<td class=n>-5.00</td>" in html and "<td class=n>9.50</td>" in html and "<td class=n>10.00</td>" in html
