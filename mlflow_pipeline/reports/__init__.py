"""Self-contained HTML stage reports (profile, validation, evaluation, promotion).

Each function turns a stage's JSON-like result into one HTML string with inline CSS and
matplotlib figures embedded as base64 PNGs, to be logged as a run artifact and read in the
MLflow UI's artifact browser: no scripts, no external URLs.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["evaluation_report", "profile_report", "promotion_report", "validation_report"]

# Figure sizes in inches at _DPI: small enough that a report with ~20 plots stays a few 100 KB.
_DPI = 80
_FIG = (5.0, 3.2)
_THUMB = (3.4, 2.2)
_RC = {
    "font.size": 8,
    "axes.titlesize": 9,
    # A fixed title position: the automatic one measures every tick label (slow, not needed).
    "axes.titley": 1.0,
    "axes.titlepad": 4.0,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    # Column names and categories are user strings: "$" must not switch on mathtext.
    "text.parse_math": False,
}
_BLUE, _ORANGE, _RED, _GREEN, _GREY, _AMBER = (
    "#1f77b4",
    "#ff7f0e",
    "#cf222e",
    "#2da44e",
    "#8c959f",
    "#bf8700",
)

MAX_COLUMN_PLOTS = 12
MAX_DRIFT_OVERLAYS = 8
MAX_DRIFT_BARS = 30
MAX_IMPORTANCES = 20
MAX_CURVE_CLASSES = 10
MAX_SCATTER_POINTS = 5000
MAX_FAILURE_BARS = 25

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


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def profile_report(profile: dict, drift: dict | None = None, reference: dict | None = None) -> str:
    """Render a dataset profile, and optionally its drift against the champion, as HTML.

    ``profile`` is the profile stage's output; ``drift`` the drift comparison (``None`` when
    there is no champion to compare with); ``reference`` the champion's training profile, used
    for reference-vs-current overlays of the most drifted features. Returns one HTML document.
    """
    dataset = str(profile.get("dataset") or "dataset")
    columns: dict[str, dict] = profile.get("columns") or {}
    target = profile.get("target") or {}
    balance = target.get("balance")

    summary = [
        f"{_fmt(profile.get('rows'))} rows",
        f"{_fmt(profile.get('n_columns', len(columns)))} columns",
    ]
    if target.get("name") is not None:
        summary.append(f"target {target['name']} ({target.get('task') or 'unknown task'})")
    if balance:
        summary.append(
            "balance " + ", ".join(f"{k}: {_pct(v)}" for k, v in list(balance.items())[:10])
        )
    if drift is not None:
        summary.append(
            f"drift {'detected' if drift.get('detected') else 'not detected'}"
            f" ({_fmt(drift.get('n_drifted'))} of {_fmt(drift.get('n_features'))} features)"
        )

    body: list[str] = []
    if balance:
        body.append("<h2>Target balance</h2>")
        body.append(_figures([(_balance_plot(balance, str(target.get("name") or "target")), "")]))

    body.append("<h2>Columns</h2>")
    body.append(_column_table(columns))

    plottable = [name for name, col in columns.items() if _has_distribution(col)]
    shown = plottable[:MAX_COLUMN_PLOTS]
    if shown:
        body.append("<h2>Distributions</h2>")
        note = f"The first {len(shown)} of {len(columns)} columns"
        if len(plottable) < len(columns):
            note += f" ({len(columns) - len(plottable)} without values, not plotted)"
        body.append(f'<p class="note">{html.escape(note)}.</p>')
        body.append(_figures([(_distribution_plot(name, columns[name]), name) for name in shown]))

    if drift is not None:
        body.append(_drift_section(drift, profile, reference))

    return _page(f"Profile: {dataset}", " · ".join(summary), body)


def validation_report(result: dict) -> str:
    """Render a validation stage result (checks, status counts, quarantine) as HTML.

    ``result`` has ``passed``, ``rows``, ``rows_out``, ``checks`` (column, check, severity,
    status, failing_rows, examples) and an optional ``quarantine``. Returns one HTML document.
    """
    dataset = str(result.get("dataset") or "dataset")
    checks: list[dict] = list(result.get("checks") or [])
    statuses = [str(c.get("status") or "unknown") for c in checks]
    passed = bool(result.get("passed"))
    troubled = [s for s in statuses if s != "passed"]

    if not passed:
        reasons = []
        if statuses.count("failed"):
            reasons.append(_count(statuses.count("failed"), "check") + " failed")
        quarantine = result.get("quarantine") or {}
        fraction, limit = quarantine.get("fraction"), quarantine.get("max_fraction")
        if _finite(fraction) and _finite(limit) and fraction > limit:
            reasons.append(f"quarantined {_pct(fraction)} of rows, over the {_pct(limit)} limit")
        banner = _banner("bad", "Failed" + (": " + "; ".join(reasons) if reasons else ""))
    elif troubled:
        banner = _banner(
            "warn",
            f"Passed with warnings: {_count(len(troubled), 'check')} "
            f"({', '.join(f'{statuses.count(s)} {s}' for s in dict.fromkeys(troubled))})",
        )
    else:
        banner = _banner("ok", f"Passed: all {_count(len(checks), 'check')} passed")

    summary = (
        f"stage {result.get('stage') or 'validate'} · dataset {dataset} · "
        f"{_fmt(result.get('rows'))} rows in, {_fmt(result.get('rows_out'))} rows out · "
        f"{len(checks)} checks"
    )
    body = [banner, "<h2>Checks by status</h2>"]
    known = ["failed", "quarantined", "warning", "passed"]
    order = known + sorted({s for s in statuses if s not in known})
    body.append(
        _table(
            ["Status", "Checks"],
            [[s, statuses.count(s)] for s in order],
            row_classes=[f"st-{s}" if statuses.count(s) and s != "passed" else "" for s in order],
        )
    )

    rank = {s: i for i, s in enumerate(order)}
    ordered = sorted(
        checks,
        key=lambda c: (rank[str(c.get("status") or "unknown")], -(c.get("failing_rows") or 0)),
    )
    body.append("<h2>Checks</h2>")
    if ordered:
        body.append(
            _table(
                ["Column", "Check", "Severity", "Status", "Failing rows", "Examples"],
                [
                    [
                        c.get("column"),
                        _Raw(f"<code>{html.escape(str(c.get('check')))}</code>"),
                        c.get("severity"),
                        _Raw(str(c.get("status") or "unknown"), css="status"),
                        c.get("failing_rows"),
                        _examples(c.get("examples")),
                    ]
                    for c in ordered
                ],
                row_classes=[f"st-{c.get('status') or 'unknown'}" for c in ordered],
            )
        )
    else:
        body.append('<p class="note">No checks were run.</p>')

    body.append(_quarantine_section(result.get("quarantine")))

    failing = [
        c
        for c in ordered
        if c.get("status") in ("failed", "warning", "quarantined") and (c.get("failing_rows") or 0)
    ]
    if failing:
        body.append("<h2>Failing rows per check</h2>")
        if len(failing) > MAX_FAILURE_BARS:
            body.append(
                f'<p class="note">The {MAX_FAILURE_BARS} checks with most failing rows of '
                f"{len(failing)}.</p>"
            )
        body.append(_figures([(_failures_plot(failing[:MAX_FAILURE_BARS]), "")]))

    return _page(f"Validation: {dataset}", summary, body)


def evaluation_report(evaluation: dict) -> str:
    """Render a test-set evaluation (metrics against thresholds, diagnostic plots) as HTML.

    Classification gets a confusion matrix, ROC and precision-recall curves (when ``proba`` is
    given) and per-class metrics; regression gets residual and predicted-vs-actual plots. Both
    get feature importance when available. Returns one HTML document.
    """
    task = str(evaluation.get("task") or "classification")
    model = str(evaluation.get("model") or "model")
    metrics: dict[str, Any] = evaluation.get("metrics") or {}
    thresholds: dict[str, dict] = evaluation.get("thresholds") or {}
    y_true = _as_list(evaluation.get("y_true"))
    y_pred = _as_list(evaluation.get("y_pred"))

    rows, failed = _metric_rows(metrics, thresholds)
    if not thresholds:
        banner = _banner("info", "No thresholds configured")
    elif failed:
        banner = _banner("bad", "Thresholds not met: " + ", ".join(failed))
    else:
        banner = _banner("ok", f"All {_count(len(thresholds), 'threshold')} met")

    headline = ", ".join(f"{k} {_fmt(v)}" for k, v in list(metrics.items())[:3])
    summary = f"{task} · {model} · {_fmt(len(y_true))} test rows" + (
        f" · {headline}" if headline else ""
    )
    total = evaluation.get("test_rows")
    sampled = []
    if isinstance(total, int) and total > len(y_true):
        sampled = [
            f"<p class='note'>Metrics: all {_fmt(total)} test rows. Plots and the confusion "
            f"matrix: a random sample of {_fmt(len(y_true))} of them.</p>"
        ]
        summary = summary.replace(f"{_fmt(len(y_true))} test rows", f"{_fmt(total)} test rows")
    body = [
        banner,
        *sampled,
        "<h2>Metrics</h2>",
        _table(
            ["Metric", "Value", "Min", "Max", "Threshold"],
            [r[:-1] for r in rows],
            row_classes=[r[-1] for r in rows],
        ),
    ]
    if task == "regression":
        body.extend(_regression_sections(y_true, y_pred))
    else:
        body.extend(_classification_sections(evaluation, y_true, y_pred))
    body.extend(_importance_section(evaluation.get("feature_importance")))
    return _page(f"Evaluation: {model}", summary, body)


def promotion_report(promotion: dict) -> str:
    """Render the register stage's promotion decision (challenger vs champion) as HTML.

    ``promotion`` is promotion.json: promote, reason, metric, greater_is_better, both scores,
    versions before and after. Returns one HTML document.
    """
    name = str(promotion.get("model_name") or "model")
    version = promotion.get("version")
    champion_version = promotion.get("champion_version")
    after = promotion.get("champion_version_after")
    metric = str(promotion.get("metric") or "metric")
    higher = promotion.get("greater_is_better", True)
    challenger_score = promotion.get("challenger_score")
    champion_score = promotion.get("champion_score")

    if promotion.get("promote"):
        banner = _banner("ok", f"Promoted: version {version} is the champion now")
    else:
        stays = after or champion_version
        banner = _banner(
            "warn",
            f"Not promoted: the champion stays version {stays}"
            if stays is not None
            else "Not promoted: there is no champion",
        )

    against = f"champion v{champion_version}" if champion_version is not None else "no champion yet"
    summary = (
        f"{name} · challenger v{version} vs {against} · {metric} "
        f"({'higher' if higher else 'lower'} is better)"
    )
    delta = (
        challenger_score - champion_score
        if _finite(challenger_score) and _finite(champion_score)
        else None
    )
    body = [
        banner,
        f"<p><strong>Reason:</strong> {html.escape(str(promotion.get('reason') or '—'))}</p>",
        "<h2>Decision</h2>",
        _table(
            None,
            [
                ["Model", name],
                ["Challenger version", version],
                ["Champion version before", champion_version],
                ["Champion version after", after],
                ["Metric", metric],
                ["Direction", "higher is better" if higher else "lower is better"],
                ["Challenger score", challenger_score],
                ["Champion score", champion_score],
                ["Difference (challenger − champion)", delta],
                [
                    "Moved outside mlflow-pipeline",
                    "; ".join(promotion.get("moved_outside") or []) or "—",
                ],
                ["Audit trail (experiment)", promotion.get("audit_experiment") or "—"],
            ],
        ),
    ]
    bars = [(f"challenger v{version}", challenger_score, _BLUE)]
    if champion_version is not None or champion_score is not None:
        bars.append((f"champion v{champion_version}", champion_score, _GREY))
    bars = [b for b in bars if _finite(b[1])]
    if bars:
        body.append("<h2>Scores</h2>")
        body.append(_figures([(_score_plot(bars, metric), "")]))
    return _page(f"Promotion: {name} v{version}", summary, body)


# --------------------------------------------------------------------------------------------
# HTML helpers
# --------------------------------------------------------------------------------------------


class _Raw(str):
    """A table cell that is already HTML (every other cell is escaped), with a CSS class."""

    css: str

    def __new__(cls, text: str, css: str = "") -> _Raw:
        cell = super().__new__(cls, text)
        cell.css = css
        return cell


def _page(title: str, summary: str, body: Iterable[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f'<p class="summary">{html.escape(summary)}</p>\n' + "\n".join(body) + "\n</body></html>\n"
    )


def _banner(kind: str, text: str) -> str:
    return f'<div class="banner {kind}">{html.escape(text)}</div>'


def _table(
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
            out.append(f"<th>{html.escape(_fmt(row[0]))}</th>")
            row = row[1:]
        for value in row:
            if isinstance(value, _Raw):
                attr = f' class="{value.css}"' if value.css else ""
                out.append(f"<td{attr}>{value}</td>")
            elif _is_number(value):
                out.append(f'<td class="num">{html.escape(_fmt(value))}</td>')
            else:
                out.append(f"<td>{html.escape(_fmt(value))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _figures(items: Iterable[tuple[str, str]]) -> str:
    """A wrapping row of <figure>s from (img tag, caption) pairs."""
    parts = ['<div class="figs">']
    for img, caption in items:
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        parts.append(f"<figure>{img}{cap}</figure>")
    parts.append("</div>")
    return "".join(parts)


def _examples(examples: Any) -> _Raw:
    if not examples:
        return _Raw("")
    shown = [_truncate(str(e), 40) for e in list(examples)[:5]]
    more = f" … (+{len(examples) - 5})" if len(examples) > 5 else ""
    return _Raw(", ".join(f"<code>{html.escape(e)}</code>" for e in shown) + html.escape(more))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(float(value))


def _fmt(value: Any) -> str:
    """Numbers for people: thousands separators, 4 significant digits, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if not _is_number(value):
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


def _pct(fraction: Any) -> str:
    if not _finite(fraction):
        return "—"
    f = float(fraction)
    if 0 < f < 0.001:
        return "<0.1%"
    return f"{f * 100:.1f}%"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Figure helpers (matplotlib is imported here only, so importing this module stays cheap)
# --------------------------------------------------------------------------------------------


def _plot(
    draw: Callable[[Figure], None],
    size: tuple[float, float],
    alt: str,
    *,
    left: float = 0.6,
    bottom: float = 0.45,
    top: float = 0.3,
    right: float = 0.15,
    hspace: float = 0.0,
) -> str:
    """Draw on a fresh figure and return it as an embedded PNG <img> tag.

    Margins are in inches. They are fixed rather than left to a layout engine because
    constrained/tight layout draws every figure twice (half the rendering time); plots with
    long tick labels pass a margin from ``_text_inches``. ``hspace`` is the gap in inches
    between stacked axes. Uses ``matplotlib.figure.Figure`` directly rather than pyplot: no
    backend switch in the host process and no global figure registry, so no figure is left
    open whatever ``draw`` does.
    """
    import matplotlib
    from matplotlib.figure import Figure

    width, height = size
    buffer = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=size, dpi=_DPI)
        try:
            fig.subplots_adjust(
                left=min(left / width, 0.7),
                right=1 - right / width,
                bottom=min(bottom / height, 0.6),
                top=1 - top / height,
                wspace=0.35,
                hspace=hspace,
            )
            draw(fig)
            fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
        finally:
            fig.clear()
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
        f'width="{round(width * _DPI)}" height="{round(height * _DPI)}">'
    )


def _text_inches(labels: Iterable[str], fontsize: float = 7) -> float:
    """A generous width estimate of the longest label, plus tick and padding."""
    longest = max((len(label) for label in labels), default=0)
    return 0.2 + longest * fontsize * 0.62 / 72


def _label(value: Any, limit: int = 28) -> str:
    return _truncate(str(value), limit)


# --------------------------------------------------------------------------------------------
# Profile and drift
# --------------------------------------------------------------------------------------------


def _has_distribution(col: dict) -> bool:
    if col.get("kind") == "numeric":
        hist = col.get("histogram") or {}
        edges, counts = hist.get("edges") or [], hist.get("counts") or []
        return len(edges) == len(counts) + 1 and sum(counts) > 0
    return bool(col.get("top"))


def _column_table(columns: dict[str, dict]) -> str:
    rows = []
    for name, col in columns.items():
        numeric = col.get("kind") == "numeric"
        top = ""
        if not numeric and col.get("top"):
            items = [f"{_label(v, 24)} ({_fmt(n)})" for v, n in col["top"][:5]]
            rest = len(col["top"]) - 5
            top = ", ".join(items) + (f", … {rest} more" if rest > 0 else "")
            if col.get("other"):
                top += f"; other categories {_fmt(col['other'])} rows"
        rows.append(
            [
                name,
                col.get("kind"),
                col.get("dtype"),
                _Raw(html.escape(_pct(col.get("missing_fraction"))), css="num"),
                col.get("distinct"),
                col.get("min") if numeric else None,
                col.get("mean") if numeric else None,
                col.get("max") if numeric else None,
                col.get("std") if numeric else None,
                top,
            ]
        )
    headers = ["Column", "Kind", "Dtype", "Missing", "Distinct", "Min", "Mean", "Max", "Std"]
    return _table([*headers, "Top categories"], rows)


def _balance_plot(balance: dict, target: str) -> str:
    items = list(balance.items())[:20]
    rotate = len(items) > 6

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        labels = [_label(k, 14) for k, _ in items]
        values = [float(v) if _finite(v) else 0.0 for _, v in items]
        bars = ax.bar(range(len(values)), values, color=_BLUE)
        ax.set_xticks(range(len(values)), labels, rotation=30 if rotate else 0)
        ax.bar_label(bars, labels=[_pct(v) for v in values], fontsize=7)
        ax.set_ylim(0, max([*values, 0.01]) * 1.18)
        ax.set_ylabel("fraction of rows")
        ax.set_title(f"{_label(target, 40)}: class balance")

    bottom = 0.2 + 0.5 * _text_inches(_label(k, 14) for k, _ in items) if rotate else 0.35
    return _plot(draw, (4.0, 2.6), f"class balance of {target}", bottom=bottom)


def _distribution_plot(name: str, col: dict) -> str:
    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        if col.get("kind") == "numeric":
            hist = col["histogram"]
            ax.stairs(hist["counts"], hist["edges"], fill=True, color=_BLUE, alpha=0.8)
            ax.set_ylabel("rows")
        else:
            _category_bars(ax, [(col.get("top") or [], col.get("other") or 0, None, _BLUE)])
        ax.set_title(_label(name, 40))
        ax.locator_params(nbins=4)  # fewer ticks: legible at thumbnail size, and faster

    return _plot(draw, _THUMB, f"distribution of {name}", **_distribution_margins(col))


def _distribution_margins(*cols: dict) -> dict[str, float]:
    """Room for category labels on the y axis, else for a count axis and no x label."""
    if all(col.get("kind") == "numeric" for col in cols):
        return {"left": 0.5, "bottom": 0.3}
    labels = [_label(v, 18) for col in cols for v, _ in (col.get("top") or [])]
    return {"left": _text_inches([*labels, "(other)"]), "bottom": 0.45}


def _category_fractions(top: list, other: Any) -> dict[str, float]:
    total = sum(float(n) for _, n in top) + float(other or 0)
    if total <= 0:
        return {}
    return {str(v): float(n) / total for v, n in top}


def _category_bars(ax: Axes, series: list[tuple[list, Any, str | None, str]]) -> None:
    """Horizontal bars of top categories (as fractions) for one or more profiles side by side."""
    fractions = [_category_fractions(top, other) for top, other, _, _ in series]
    categories: list[str] = []
    for frac in fractions:
        categories.extend(c for c in frac if c not in categories)
    categories = categories[:10]
    labels = [_label(c, 18) for c in categories]
    if any(1 - sum(f.get(c, 0.0) for c in categories) > 1e-9 for f in fractions):
        categories.append("\0other")
        labels.append("(other)")
    height = 0.8 / len(series)
    for i, (frac, (_, _, label, color)) in enumerate(zip(fractions, series, strict=True)):
        shown = sum(frac.get(c, 0.0) for c in categories if c != "\0other")
        values = [max(0.0, 1 - shown) if c == "\0other" else frac.get(c, 0.0) for c in categories]
        offset = (i - (len(series) - 1) / 2) * height
        ax.barh(
            [y + offset for y in range(len(categories))],
            values,
            height=height,
            color=color,
            label=label,
            alpha=0.85,
        )
    ax.set_yticks(range(len(categories)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("fraction of non-missing rows")
    if any(label for _, _, label, _ in series):
        ax.legend(loc="best")


def _drift_sort_key(item: tuple[str, dict]) -> tuple[bool, float]:
    stat = item[1].get("statistic")
    return (not item[1].get("drifted"), -float(stat) if _finite(stat) else math.inf)


def _drift_section(drift: dict, profile: dict, reference: dict | None) -> str:
    ref = drift.get("reference") or {}
    heading = f"Drift against {ref.get('model') or 'reference'} v{ref.get('version') or '?'}"
    if ref.get("alias"):
        heading += f" (@{ref['alias']})"
    policy = str(drift.get("policy") or "warn")
    counts = f"{_fmt(drift.get('n_drifted'))} of {_fmt(drift.get('n_features'))} features drifted"
    if drift.get("detected"):
        banner = _banner(
            "bad" if policy == "fail" else "warn", f"Drift detected: {counts} (policy: {policy})"
        )
    else:
        banner = _banner("ok", f"No drift detected: {counts} (policy: {policy})")

    out = [f"<h2>{html.escape(heading)}</h2>", banner]
    if ref.get("profile_run"):
        out.append(
            f'<p class="note">Reference profile from run <code>'
            f"{html.escape(str(ref['profile_run']))}</code>.</p>"
        )
    features = sorted((drift.get("features") or {}).items(), key=_drift_sort_key)
    if not features:
        out.append('<p class="note">No features were compared.</p>')
        return "\n".join(out)

    out.append(
        _table(
            ["Feature", "Kind", "Method", "Statistic", "p-value", "Threshold", "Drifted", "Detail"],
            [
                [
                    name,
                    f.get("kind"),
                    f.get("method"),
                    f.get("statistic"),
                    f.get("p_value"),
                    f.get("threshold"),
                    _Raw("yes" if f.get("drifted") else "no", css="status"),
                    f.get("detail"),
                ]
                for name, f in features
            ],
            row_classes=["st-drifted" if f.get("drifted") else "st-passed" for _, f in features],
        )
    )

    charted = [(n, f) for n, f in features if _finite(f.get("statistic"))][:MAX_DRIFT_BARS]
    if charted:
        out.append("<h3>Drift statistic per feature</h3>")
        if len(charted) < len(features):
            out.append(
                f'<p class="note">The {len(charted)} most drifted of {len(features)} features '
                "with a statistic.</p>"
            )
        out.append(_figures([(_drift_bars(charted), "")]))

    drifted = [(name, f) for name, f in features if f.get("drifted")]
    if reference is None:
        out.append('<p class="note">No reference profile given: no distribution overlays.</p>')
    elif not drifted:
        out.append('<p class="note">No feature drifted: no distribution overlays.</p>')
    else:
        current_cols = profile.get("columns") or {}
        ref_cols = reference.get("columns") or {}
        comparable = [
            (name, f)
            for name, f in drifted
            if _has_distribution(current_cols.get(name) or {})
            and _has_distribution(ref_cols.get(name) or {})
        ]
        shown = comparable[:MAX_DRIFT_OVERLAYS]
        out.append("<h3>Reference vs current, most drifted features</h3>")
        note = f"{len(shown)} of {len(drifted)} drifted features"
        if len(comparable) < len(drifted):
            note += f" ({len(drifted) - len(comparable)} without values in one of the profiles)"
        out.append(
            f'<p class="note">{html.escape(note)}, as fractions of non-missing rows: reference '
            "filled grey, current outlined orange.</p>"
        )
        if shown:
            out.append(
                _figures(
                    [
                        (_overlay_plot(name, ref_cols[name], current_cols[name], f), name)
                        for name, f in shown
                    ]
                )
            )
    return "\n".join(out)


def _threshold_on_statistic(features: list[tuple[str, dict]]) -> bool:
    """Whether ``drifted`` agrees with statistic >= threshold (else it is a p-value threshold)."""
    for _, f in features:
        stat, thr = f.get("statistic"), f.get("threshold")
        if _finite(stat) and _finite(thr) and f.get("drifted") is not None:
            if math.isclose(stat, thr):
                continue
            if (stat >= thr) != bool(f["drifted"]):
                return False
    return True


def _drift_bars(charted: list[tuple[str, dict]]) -> str:
    groups: dict[str, list[tuple[str, dict]]] = {}
    for name, f in charted:
        groups.setdefault(str(f.get("method") or "statistic"), []).append((name, f))
    bar_inches = 0.2
    gap = 0.55  # between stacked methods: room for the next title
    height = max(1.8, 0.75 + bar_inches * len(charted) + gap * (len(groups) - 1))
    axes_inches = (height - 0.75 - gap * (len(groups) - 1)) / len(groups)

    def draw(fig: Figure) -> None:
        axes = fig.subplots(
            len(groups), 1, squeeze=False, height_ratios=[len(g) for g in groups.values()]
        )[:, 0]
        for ax, (method, group) in zip(axes, groups.items(), strict=True):
            stats = [float(f["statistic"]) for _, f in group]
            colors = [_RED if f.get("drifted") else _GREY for _, f in group]
            ax.barh(range(len(group)), stats, color=colors)
            ax.set_yticks(range(len(group)), [_label(n) for n, _ in group])
            ax.invert_yaxis()
            title = f"{method} (red: drifted)"
            thresholds = [f.get("threshold") for _, f in group if _finite(f.get("threshold"))]
            if thresholds and _threshold_on_statistic(group):
                unique = sorted(set(map(float, thresholds)))
                if len(unique) == 1:
                    ax.axvline(unique[0], color="black", ls="--", lw=1)
                    title += f", threshold {_fmt(unique[0])}"
                else:
                    for y, (_, f) in enumerate(group):
                        if _finite(f.get("threshold")):
                            t = float(f["threshold"])
                            ax.plot([t, t], [y - 0.45, y + 0.45], color="black", ls="--", lw=1)
                    title += ", thresholds dashed"
            elif thresholds:
                title += ", threshold applies to the p-value"
            ax.set_title(title)
            ax.set_xlim(left=min(0.0, *stats))

    return _plot(
        draw,
        (5.6, height),
        "drift statistic per feature",
        left=_text_inches(_label(n) for n, _ in charted),
        bottom=0.3,
        hspace=gap / axes_inches,
    )


def _overlay_plot(name: str, ref_col: dict, cur_col: dict, result: dict) -> str:
    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        if ref_col.get("kind") == "numeric" and cur_col.get("kind") == "numeric":
            for col, label, filled in ((ref_col, "reference", True), (cur_col, "current", False)):
                hist = col["histogram"]
                counts = [float(c) for c in hist["counts"]]
                total = sum(counts)
                ax.stairs(
                    [c / total for c in counts],
                    hist["edges"],
                    fill=filled,
                    color=_GREY if filled else _ORANGE,
                    alpha=0.7 if filled else 1.0,
                    linewidth=0 if filled else 1.6,
                    label=label,
                )
            ax.set_ylabel("fraction of rows")
            ax.legend(loc="best")
        else:
            _category_bars(
                ax,
                [
                    (ref_col.get("top") or [], ref_col.get("other"), "reference", _GREY),
                    (cur_col.get("top") or [], cur_col.get("other"), "current", _ORANGE),
                ],
            )
        stat = result.get("statistic")
        verdict = "drifted" if result.get("drifted") else "not drifted"
        ax.set_title(f"{_label(name, 30)}: {result.get('method') or ''} {_fmt(stat)}, {verdict}")
        ax.locator_params(nbins=4)

    return _plot(
        draw,
        (4.2, 2.6),
        f"reference vs current distribution of {name}",
        **_distribution_margins(ref_col, cur_col),
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _quarantine_section(quarantine: dict | None) -> str:
    out = ["<h2>Quarantine</h2>"]
    if quarantine is None:
        out.append('<p class="note">Quarantine is not configured for this dataset.</p>')
        return "\n".join(out)
    if not quarantine.get("enabled"):
        out.append('<p class="note">Quarantine is disabled: failing rows stop the stage.</p>')
    fraction, limit = quarantine.get("fraction"), quarantine.get("max_fraction")
    over = _finite(fraction) and _finite(limit) and fraction > limit
    if over:
        out.append(
            _banner("bad", f"Quarantined {_pct(fraction)} of rows, over the limit of {_pct(limit)}")
        )
    out.append(
        _table(
            None,
            [
                ["Enabled", bool(quarantine.get("enabled"))],
                ["Rows quarantined", quarantine.get("rows")],
                ["Fraction quarantined", _Raw(html.escape(_pct(fraction)), css="num")],
                ["Maximum fraction", _Raw(html.escape(_pct(limit)), css="num")],
                ["Artifact", quarantine.get("artifact")],
            ],
            row_classes=["", "", "st-failed" if over else "", "", ""],
        )
    )
    return "\n".join(out)


def _failures_plot(failing: list[dict]) -> str:
    colors = {"failed": _RED, "warning": _AMBER, "quarantined": _ORANGE}

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        labels = [_label(f"{c.get('column')}: {c.get('check')}", 40) for c in failing]
        values = [int(c.get("failing_rows") or 0) for c in failing]
        bars = ax.barh(
            range(len(failing)),
            values,
            color=[colors.get(str(c.get("status")), _GREY) for c in failing],
        )
        ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=2, fontsize=7)
        ax.set_yticks(range(len(failing)), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, max(values) * 1.15)
        ax.set_xlabel("failing rows (red: failed, amber: warning, orange: quarantined)")

    labels = [_label(f"{c.get('column')}: {c.get('check')}", 40) for c in failing]
    return _plot(
        draw,
        (6.4, max(1.8, 0.9 + 0.22 * len(failing))),
        "failing rows per check",
        left=_text_inches(labels),
        top=0.1,
    )


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _metric_rows(
    metrics: dict[str, Any], thresholds: dict[str, dict]
) -> tuple[list[list[Any]], list[str]]:
    """Table rows (value, min, max, verdict, row class) and the list of unmet thresholds."""
    rows: list[list[Any]] = []
    failed: list[str] = []
    for name in [*metrics, *(t for t in thresholds if t not in metrics)]:
        value = metrics.get(name)
        bounds = thresholds.get(name) or {}
        low, high = bounds.get("min"), bounds.get("max")
        if name not in thresholds:
            verdict, cls = "—", ""
        elif not _finite(value):
            verdict, cls = "missing", "st-failed"
            failed.append(f"{name} (missing)")
        elif _finite(low) and value < low:
            verdict, cls = "fail", "st-failed"
            failed.append(f"{name} {_fmt(value)} < min {_fmt(low)}")
        elif _finite(high) and value > high:
            verdict, cls = "fail", "st-failed"
            failed.append(f"{name} {_fmt(value)} > max {_fmt(high)}")
        else:
            verdict, cls = "pass", "st-passed"
        rows.append([name, value, low, high, _Raw(verdict, css="status"), cls])
    return rows, failed


def _as_list(values: Any) -> list:
    """JSON lists stay lists; numpy arrays and pandas series become lists; None is empty."""
    return [] if values is None else list(values)


def _sorted_labels(values: Iterable[Any]) -> list[Any]:
    unique = list(dict.fromkeys(values))
    try:
        return sorted(unique)
    except TypeError:
        return sorted(unique, key=str)


def _classification_sections(evaluation: dict, y_true: list, y_pred: list) -> list[str]:
    from sklearn import metrics as skm

    classes = _as_list(evaluation.get("classes"))
    labels = list(classes) if classes else _sorted_labels([*y_true, *y_pred])
    extra = [v for v in _sorted_labels([*y_true, *y_pred]) if v not in labels]
    labels += extra  # predictions outside ``classes`` still belong in the matrix
    out: list[str] = []
    if not y_true:
        return ['<p class="note">No test rows: no confusion matrix or curves.</p>']

    matrix = skm.confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    out.append("<h2>Confusion matrix</h2>")
    out.append(
        _figures([(_confusion_plot(matrix, labels), "rows: true class, columns: predicted")])
    )
    out.append("<h3>Per-class metrics</h3>")
    out.append(
        _table(
            ["Class", "Precision", "Recall", "F1", "Support", "Predicted"],
            [
                [
                    labels[i],
                    precision[i],
                    recall[i],
                    f1[i],
                    int(support[i]),
                    int(matrix[:, i].sum()),
                ]
                for i in range(len(labels))
            ],
        )
    )

    out.append("<h2>ROC and precision-recall curves</h2>")
    if evaluation.get("proba") is None:
        out.append('<p class="note">No predicted probabilities: ROC and PR curves skipped.</p>')
        return out
    import numpy as np

    proba = np.asarray(evaluation["proba"], dtype=float)
    curve_classes = list(classes) if classes else _sorted_labels(y_true)
    width = proba.shape[1] if proba.ndim == 2 else 0
    if width != len(curve_classes) or len(proba) != len(y_true):
        out.append(
            f'<p class="note">Probabilities have {width} columns for {len(curve_classes)} classes '
            f"and {len(proba)} rows for {len(y_true)} labels: curves skipped.</p>"
        )
        return out

    if len(curve_classes) == 2:
        positive = curve_classes[-1]
        curves = [(positive, proba[:, -1])]
        note = f"Positive class: {positive}."
    else:
        curves = [(c, proba[:, i]) for i, c in enumerate(curve_classes)]
        note = "One-vs-rest curve per class."
    curves = [(c, s) for c, s in curves if 0 < sum(1 for y in y_true if y == c) < len(y_true)]
    if not curves:
        out.append('<p class="note">The test set has a single class: curves skipped.</p>')
        return out
    if len(curves) > MAX_CURVE_CLASSES:
        note += f" The first {MAX_CURVE_CLASSES} of {len(curves)} classes."
        curves = curves[:MAX_CURVE_CLASSES]
    out.append(f'<p class="note">{html.escape(note)}</p>')

    rows = []
    roc, pr = [], []
    for cls, scores in curves:
        truth = [y == cls for y in y_true]
        fpr, tpr, _ = skm.roc_curve(truth, scores)
        prec, rec, _ = skm.precision_recall_curve(truth, scores)
        auc = float(skm.auc(fpr, tpr))
        ap = float(skm.average_precision_score(truth, scores))
        roc.append((cls, fpr, tpr, auc))
        pr.append((cls, rec, prec, ap, sum(truth) / len(truth)))
        rows.append([cls, auc, ap, sum(truth)])
    out.append(_figures([(_roc_plot(roc), "ROC curve"), (_pr_plot(pr), "precision-recall curve")]))
    out.append(_table(["Class", "ROC AUC", "Average precision", "Positives"], rows))
    return out


def _confusion_plot(matrix: Any, labels: list[Any]) -> str:
    n = len(labels)
    side = min(6.0, max(2.2, 1.2 + 0.4 * n))  # of the matrix itself, in inches

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        image = ax.imshow(matrix, cmap="Blues")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ticks = [_label(c, 12) for c in labels]
        ax.set_xticks(
            range(n), ticks, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center"
        )
        ax.set_yticks(range(n), ticks)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 20:
            high = matrix.max() if matrix.size else 0
            for i in range(n):
                for j in range(n):
                    value = int(matrix[i, j])
                    ax.text(
                        j,
                        i,
                        f"{value:,}",
                        ha="center",
                        va="center",
                        fontsize=8 if n <= 8 else 6,
                        color="white" if high and value > high / 2 else "black",
                    )
        ax.spines[["top", "right"]].set_visible(True)

    ticks = [_label(c, 12) for c in labels]
    left = _text_inches(ticks) + 0.2
    bottom = (0.35 + 0.7 * _text_inches(ticks)) if n > 4 else 0.55
    return _plot(
        draw,
        (side + left + 0.9, side + bottom),
        "confusion matrix",
        left=left,
        bottom=bottom,
        right=0.1,
    )


def _roc_plot(curves: list[tuple[Any, Any, Any, float]]) -> str:
    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for cls, fpr, tpr, auc in curves:
            ax.plot(fpr, tpr, lw=1.4, label=f"{_label(cls, 16)} (AUC {auc:.3f})")
        ax.plot([0, 1], [0, 1], color=_GREY, ls="--", lw=1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title("ROC curve")
        ax.legend(loc="lower right")

    return _plot(draw, (4.2, 3.4), "ROC curve")


def _pr_plot(curves: list[tuple[Any, Any, Any, float, float]]) -> str:
    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for cls, rec, prec, ap, _ in curves:
            ax.plot(
                rec, prec, lw=1.4, drawstyle="steps-post", label=f"{_label(cls, 16)} (AP {ap:.3f})"
            )
        if len(curves) == 1:
            ax.axhline(curves[0][4], color=_GREY, ls="--", lw=1, label="chance")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title("Precision-recall curve")
        ax.legend(loc="lower left")

    return _plot(draw, (4.2, 3.4), "precision-recall curve")


def _regression_sections(y_true: list, y_pred: list) -> list[str]:
    import numpy as np

    truth = np.asarray(y_true, dtype=float)
    pred = np.asarray(y_pred, dtype=float)
    keep = np.isfinite(truth) & np.isfinite(pred)
    truth, pred = truth[keep], pred[keep]
    if truth.size == 0:
        return ['<p class="note">No test rows: no residual plots.</p>']
    residual = truth - pred
    out = [
        "<h2>Residuals</h2>",
        _table(
            None,
            [
                ["Rows", int(truth.size)],
                ["Mean residual (actual − predicted)", float(residual.mean())],
                ["Residual std", float(residual.std())],
                ["Median |residual|", float(np.median(np.abs(residual)))],
                ["95th percentile |residual|", float(np.quantile(np.abs(residual), 0.95))],
                ["Max |residual|", float(np.abs(residual).max())],
            ],
        ),
    ]
    points = np.arange(truth.size)
    if truth.size > MAX_SCATTER_POINTS:
        points = np.sort(np.random.default_rng(0).choice(truth.size, MAX_SCATTER_POINTS, False))
        out.append(
            f'<p class="note">Scatter plots show {MAX_SCATTER_POINTS:,} random rows of '
            f"{truth.size:,}.</p>"
        )
    t, p, r = truth[points], pred[points], residual[points]
    alpha = 0.6 if t.size < 1000 else 0.3

    def residuals_vs_predicted(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.scatter(p, r, s=8, alpha=alpha, color=_BLUE, linewidths=0)
        ax.axhline(0, color="black", lw=1, ls="--")
        ax.set_xlabel("predicted")
        ax.set_ylabel("residual (actual − predicted)")
        ax.set_title("Residuals vs predicted")

    def predicted_vs_actual(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.scatter(t, p, s=8, alpha=alpha, color=_BLUE, linewidths=0)
        low = float(min(t.min(), p.min()))
        high = float(max(t.max(), p.max()))
        ax.plot([low, high], [low, high], color="black", lw=1, ls="--", label="y = x")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.set_title("Predicted vs actual")
        ax.legend(loc="upper left")

    def residual_histogram(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.hist(residual, bins=min(40, max(10, int(np.sqrt(residual.size)))), color=_BLUE)
        ax.axvline(0, color="black", lw=1, ls="--")
        ax.set_xlabel("residual (actual − predicted)")
        ax.set_ylabel("rows")
        ax.set_title("Residual distribution")

    out.append(
        _figures(
            [
                (_plot(residuals_vs_predicted, _FIG, "residuals vs predicted"), ""),
                (_plot(predicted_vs_actual, _FIG, "predicted vs actual"), ""),
                (_plot(residual_histogram, _FIG, "residual histogram"), ""),
            ]
        )
    )
    return out


def _importance_section(importance: dict[str, Any] | None) -> list[str]:
    out = ["<h2>Feature importance</h2>"]
    if not importance:
        out.append('<p class="note">Feature importance is not available for this model.</p>')
        return out
    items = sorted(
        ((str(k), float(v)) for k, v in importance.items() if _finite(v)),
        key=lambda kv: -abs(kv[1]),
    )
    top = items[:MAX_IMPORTANCES]
    if not top:
        out.append('<p class="note">No finite importance values.</p>')
        return out
    if len(items) > len(top):
        out.append(f'<p class="note">The {len(top)} most important of {len(items)} features.</p>')

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        values = [v for _, v in top]
        ax.barh(range(len(top)), values, color=[_BLUE if v >= 0 else _RED for v in values])
        ax.set_yticks(range(len(top)), [_label(k) for k, _ in top])
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel("importance")

    size = (5.6, max(1.8, 0.75 + 0.2 * len(top)))
    image = _plot(
        draw, size, "feature importance", left=_text_inches(_label(k) for k, _ in top), top=0.1
    )
    out.append(_figures([(image, "")]))
    out.append(_table(["Feature", "Importance"], [[k, v] for k, v in top]))
    return out


# --------------------------------------------------------------------------------------------
# Promotion
# --------------------------------------------------------------------------------------------


def _score_plot(bars: list[tuple[str, Any, str]], metric: str) -> str:
    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        values = [float(v) for _, v, _ in bars]
        drawn = ax.bar(range(len(bars)), values, color=[c for _, _, c in bars], width=0.55)
        ax.bar_label(drawn, labels=[_fmt(v) for v in values], padding=2)
        ax.set_xticks(range(len(bars)), [_label(n, 24) for n, _, _ in bars])
        ax.axhline(0, color="black", lw=0.8)
        top = max([*values, 0.0])
        bottom = min([*values, 0.0])
        span = (top - bottom) or 1.0
        ax.set_ylim(bottom - (0.1 * span if bottom < 0 else 0), top + 0.15 * span)
        ax.set_ylabel(_label(metric, 30))
        ax.set_title(f"{_label(metric, 30)} on the current test set")

    return _plot(draw, (4.0, 2.8), f"{metric}: challenger vs champion", left=0.7, bottom=0.35)
