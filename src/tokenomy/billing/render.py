"""Invoice as HTML or PDF. The PDF writer is a small, dependency-free, deterministic one
(Courier text only; no timestamps), so the same invoice always gives the same bytes."""

from __future__ import annotations

import html

from tokenomy.billing.invoice import Invoice


def _rows(inv: Invoice) -> list[tuple[str, str, str]]:
    d = inv.to_dict()
    rows = [(li["kind"], li["description"], li["amount_usd"]) for li in d["lines"]]
    return rows


def to_html(inv: Invoice) -> str:
    d = inv.to_dict()
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(desc)}</td><td class=n>{html.escape(a)}</td></tr>"
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
<tfoot><tr><td></td><td>Total</td><td class=n>{d['total_usd']}</td></tr></tfoot></table>
<p><small>Usage: {d['usage'].get('requests', 0)} requests, {d['usage'].get('input_tokens', 0)} input,
{d['usage'].get('cached_input_tokens', 0)} cached input, {d['usage'].get('output_tokens', 0)} output tokens.
Rounding: {html.escape(d['rounding'])}. Fingerprint {d['fingerprint'][:16]}.</small></p>
</body></html>
"""


def _pdf_text(s: str) -> str:
    s = s.encode("latin-1", "replace").decode("latin-1")
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def to_pdf(inv: Invoice) -> bytes:
    d = inv.to_dict()
    lines = [f"Invoice - tenant {inv.tenant} - period {inv.period} - {d['status']}", ""]
    lines += [f"Plan {s['plan']}: {s['start']} to {s['end']}" for s in d["segments"]] + [""]
    for kind, desc, amount in _rows(inv):
        lines.append(f"{kind:<13} {desc[:78]:<78} {amount:>14}")
    lines += ["", f"{'TOTAL USD':<92} {d['total_usd']:>14}", "", f"Rounding: {d['rounding']}",
              f"Fingerprint: {d['fingerprint']}"]
    pages, per_page = [], 60
    for i in range(0, len(lines), per_page):
        chunk = lines[i:i + per_page]
        ops = ["BT", "/F1 7 Tf", "9 TL", "36 806 Td"] + [f"({_pdf_text(t)}) '" for t in chunk] + ["ET"]
        pages.append("\n".join(ops).encode("latin-1"))
    n = len(pages)
    objs: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>",
                         b"<< /Type /Pages /Kids [" + " ".join(f"{4 + 2 * i} 0 R" for i in range(n)).encode()
                         + b"] /Count " + str(n).encode() + b" >>",
                         b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>"]
    for i, content in enumerate(pages):
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                    f"/Contents {5 + 2 * i} 0 R >>".encode())
        objs.append(b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
