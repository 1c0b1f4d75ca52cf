"""The HTML every report shares: page skeleton and CSS, banners, tables, figure rows, inline
PNG images, and numbers formatted for people. Every text that reaches the page is escaped.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:20px 28px;
color:#1f2328;max-width:1150px;line-height:1.4}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:14px;margin:14px 0 4px}
p.summary{color:#57606a;margin:0 0 14px}
.banner{padding:9px 14px;border-radius:6px;font-weight:600;margin:10px 0}
.ok{background:#dafbe1;color:#116329;border:1px solid #4ac26b}
.warn{background:#fff8c5;color:#7d4e00;border:1px solid #d4a72c}
.bad{background:#ffebe9;color:#a40e26;border:1px solid #ff8182}
.info{background:#ddf4ff;color:#0a3069;border:1px solid #54aeff}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.st-failed td,tr.st-drifted td{background:#ffebe9}
tr.st-warning td,tr.st-quarantined td{background:#fff8c5}
tr.st-passed td.status{color:#116329}
tr.st-failed td.status,tr.st-drifted td.status{color:#a40e26;font-weight:600}
tr.st-warning td.status,tr.st-quarantined td.status{color:#7d4e00;font-weight:600}
.figs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0}
figcaption{font-size:12px;color:#57606a;text-align:center;max-width:420px;overflow-wrap:anywhere}
img{max-width:100%;height:auto;border:1px solid #eaeef2}
.note{color:#57606a;font-size:12px}
code{font-size:12px;background:#f6f8fa;padding:0 3px;border-radius:3px}
"""


class Raw(str):
    """A table cell that is already HTML (every other cell is escaped), with a CSS class."""

    css: str

    def __new__(cls, text: str, css: str = "") -> Raw:
        cell = super().__new__(cls, text)
        cell.css = css
        return cell


def page(title: str, summary: str, body: Iterable[str]) -> str:
    """One self-contained HTML document: inline CSS, no scripts, ``body`` parts one a line."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f'<p class="summary">{html.escape(summary)}</p>\n' + "\n".join(body) + "\n</body></html>\n"
    )


def banner(kind: str, text: str) -> str:
    """A coloured verdict line; ``kind`` is ok, warn, bad or info."""
    return f'<div class="banner {kind}">{html.escape(text)}</div>'


def table(
    headers: Sequence[str] | None,
    rows: Sequence[Sequence[Any]],
    row_classes: Sequence[str] | None = None,
) -> str:
    """A table; without ``headers`` the first column is a header column (key/value tables)."""
    out = ["<table>"]
    if headers is not None:
        out.append("<thead><tr>")
        out.extend(f"<th>{html.escape(h)}</th>" for h in headers)
        out.append("</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes else ""
        out.append(f'<tr class="{html.escape(cls)}">' if cls else "<tr>")
        if headers is None and row:
            out.append(f"<th>{html.escape(fmt(row[0]))}</th>")
            row = row[1:]
        for value in row:
            if isinstance(value, Raw):
                attr = f' class="{value.css}"' if value.css else ""
                out.append(f"<td{attr}>{value}</td>")
            elif is_number(value):
                out.append(f'<td class="num">{html.escape(fmt(value))}</td>')
            else:
                out.append(f"<td>{html.escape(fmt(value))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def figures(items: Iterable[tuple[str, str]]) -> str:
    """A wrapping row of <figure>s from (img tag, caption) pairs."""
    parts = ['<div class="figs">']
    for img, caption in items:
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        parts.append(f"<figure>{img}{cap}</figure>")
    parts.append("</div>")
    return "".join(parts)


def png_image(png: bytes, alt: str, width: int, height: int) -> str:
    """An <img> tag with the PNG embedded as base64: the report needs no other file."""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
        f'width="{width}" height="{height}">'
    )


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(float(value))


def fmt(value: Any) -> str:
    """Numbers for people: thousands separators, 4 significant digits, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if not is_number(value):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if abs(v) >= 1e6 or abs(v) < 1e-3:
        return f"{v:.3e}"
    if abs(v) >= 1000:
        return f"{v:,.1f}"
    return f"{v:.4g}"


def pct(fraction: Any) -> str:
    """A fraction as a percentage with one decimal; '<0.1%' rather than a misleading 0.0%."""
    if not is_finite_number(fraction):
        return "—"
    f = float(fraction)
    if 0 < f < 0.001:
        return "<0.1%"
    return f"{f * 100:.1f}%"


def plural(n: int, noun: str) -> str:
    """'1 check', '2 checks'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
