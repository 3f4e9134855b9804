"""Invoice as HTML or PDF (billing/pdf.py: fpdf2 with embedded Unicode fonts, deterministic bytes).
Both show money the same way (money.money_text)."""

from __future__ import annotations

import html

from tokenomy.billing.invoice import Invoice
from tokenomy.billing.money import money_text


def _rows(inv: Invoice) -> list[tuple[str, str, str]]:
    d = inv.to_dict()
    rows = [(li["kind"], li["description"], li["amount_usd"]) for li in d["lines"]]
    return rows


def to_html(inv: Invoice) -> str:
    d = inv.to_dict()
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(desc)}</td><td class=n>{html.escape(money_text(a))}</td></tr>"
                   for k, desc, a in _rows(inv))
    segs = ", ".join(f"{html.escape(s['plan'])} ({s['start']} to {s['end']})" for s in d["segments"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Invoice {html.escape(inv.tenant)} {inv.period}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}}.n{{text-align:right;font-variant-numeric:tabular-nums}}
tfoot td{{font-weight:bold}}</style></head><body>
<h1>Invoice</h1>
<p>Tenant <b>{html.escape(inv.tenant)}</b> &middot; period <b>{inv.period}</b> &middot; status {d['status']}
{('&middot; closed ' + d['closed_at']) if d['closed_at'] else ''}</p>
<p>Plans: {segs}</p>
<table><thead><tr><th>Kind</th><th>Description</th><th class=n>USD</th></tr></thead>
<tbody>{body}</tbody>
<tfoot><tr><td></td><td>Total</td><td class=n>{html.escape(money_text(d['total_usd']))}</td></tr></tfoot></table>
<p><small>Usage: {d['usage'].get('requests', 0)} requests, {d['usage'].get('input_tokens', 0)} input,
{d['usage'].get('cached_input_tokens', 0)} cached input, {d['usage'].get('output_tokens', 0)} output tokens.
Rounding: {html.escape(d['rounding'])}. Fingerprint {d['fingerprint'][:16]}.</small></p>
</body></html>
"""


def to_pdf(inv: Invoice) -> bytes:
    from tokenomy.billing.pdf import to_pdf as render

    return render(inv)
