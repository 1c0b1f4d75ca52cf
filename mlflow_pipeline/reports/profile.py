"""The profile report: a dataset's columns and distributions, and its drift against the champion.

Each column is shown as its kind says: numbers and free text (its lengths) as histograms, dates
as a histogram over time, categories as bars; ids in the table only.
"""

from __future__ import annotations

import html
import math
from functools import partial
from typing import TYPE_CHECKING, Any

from mlflow_pipeline.reports.html import (
    Raw,
    banner,
    figures,
    fmt,
    is_finite_number,
    page,
    pct,
    table,
)
from mlflow_pipeline.reports.plots import BLUE, GREY, ORANGE, RED, THUMB, plot, shorten, text_inches

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_COLUMN_PLOTS = 12
MAX_DRIFT_OVERLAYS = 8
MAX_DRIFT_BARS = 30


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
        f"{fmt(profile.get('rows'))} rows",
        f"{fmt(profile.get('n_columns', len(columns)))} columns",
    ]
    if target.get("name") is not None:
        summary.append(f"target {target['name']} ({target.get('task') or 'unknown task'})")
    if balance:
        summary.append(
            "balance " + ", ".join(f"{k}: {pct(v)}" for k, v in list(balance.items())[:10])
        )
    if drift is not None:
        summary.append(
            f"drift {'detected' if drift.get('detected') else 'not detected'}"
            f" ({fmt(drift.get('n_drifted'))} of {fmt(drift.get('n_features'))} features)"
        )

    body: list[str] = []
    if balance:
        body.append("<h2>Target balance</h2>")
        body.append(figures([(_balance_plot(balance, str(target.get("name") or "target")), "")]))

    body.append("<h2>Columns</h2>")
    body.append(_column_table(columns))

    plottable = [name for name, col in columns.items() if _has_distribution(col)]
    shown = plottable[:MAX_COLUMN_PLOTS]
    if shown:
        body.append("<h2>Distributions</h2>")
        note = f"The first {len(shown)} of {len(columns)} columns"
        ids = sum(col.get("kind") == "id" for col in columns.values())
        empty = len(columns) - len(plottable) - ids
        left_out = []
        if empty:
            left_out.append(f"{empty} without values")
        if ids:
            left_out.append(f"{ids} id{'s' if ids > 1 else ''}")
        if left_out:
            note += f" ({', '.join(left_out)}, not plotted)"
        body.append(f'<p class="note">{html.escape(note)}.</p>')
        body.append(figures([(_distribution_plot(name, columns[name]), name) for name in shown]))

    if drift is not None:
        body.append(_drift_section(drift, profile, reference))

    return page(f"Profile: {dataset}", " · ".join(summary), body)


# --------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------


def _has_distribution(col: dict) -> bool:
    if col.get("kind") in HISTOGRAM_KINDS:
        hist = _histogram_of(col) or {}
        edges, counts = hist.get("edges") or [], hist.get("counts") or []
        return len(edges) == len(counts) + 1 and sum(counts) > 0
    return bool(col.get("top"))


# Kinds drawn as a histogram: numbers, dates over time, free text by its length.
HISTOGRAM_KINDS = ("numeric", "datetime", "text")


def _histogram_of(col: dict) -> dict | None:
    """The histogram a column is drawn with (free text: of its lengths)."""
    if col.get("kind") == "text":
        return (col.get("length") or {}).get("histogram")
    return col.get("histogram")


def _edges(col: dict) -> list[float]:
    """The histogram's edges on a plot's x axis (dates as matplotlib date numbers)."""
    edges = _histogram_of(col)["edges"]
    if col.get("kind") == "datetime":
        from matplotlib import dates

        return [float(dates.datestr2num(e)) for e in edges]
    return [float(e) for e in edges]


def _summary(col: dict) -> str:
    """The last cell of a column's row: top categories, a date range, text lengths, an id."""
    kind = col.get("kind")
    if kind == "id":
        return f"an id ({col.get('role_reason') or 'role id'}): not compared for drift"
    if kind == "datetime":
        if col.get("min") is None:
            return "no dates"
        span = col["min"] if col["min"] == col["max"] else f"{col['min']} .. {col['max']}"
        text = f"{span}, every {col.get('spacing') or 'time (one date)'}"
        if col.get("unparseable"):
            text += f"; {pct(col.get('unparseable_fraction'))} not dates"
        return text
    if kind == "text":
        length = col.get("length") or {}
        if length.get("min") is None:
            return "no text"
        return (
            f"{fmt(length['min'])} to {fmt(length['max'])} characters (mean "
            f"{fmt(length['mean'])}), {fmt(col.get('words_per_value'))} words each; "
            f"{fmt(col.get('vocabulary_size'))} of {fmt(col.get('distinct_words'))} words kept"
        )
    if not col.get("top"):
        return ""
    items = [f"{shorten(v, 24)} ({fmt(n)})" for v, n in col["top"][:5]]
    rest = len(col["top"]) - 5
    top = ", ".join(items) + (f", … {rest} more" if rest > 0 else "")
    if col.get("other"):
        top += f"; other categories {fmt(col['other'])} rows"
    return top


def _column_table(columns: dict[str, dict]) -> str:
    rows = []
    for name, col in columns.items():
        kind = col.get("kind")
        numeric = kind == "numeric"
        ranged = numeric or kind == "datetime"
        role = col.get("role")
        rows.append(
            [
                name,
                kind if role in (None, kind) else f"{kind} ({role})",
                col.get("dtype"),
                Raw(html.escape(pct(col.get("missing_fraction"))), css="num"),
                col.get("distinct"),
                col.get("min") if ranged else None,
                col.get("mean") if numeric else None,
                col.get("max") if ranged else None,
                col.get("std") if numeric else None,
                _summary(col),
            ]
        )
    headers = ["Column", "Kind", "Dtype", "Missing", "Distinct", "Min", "Mean", "Max", "Std"]
    return table([*headers, "Top categories, dates, text"], rows)


def _balance_plot(balance: dict, target: str) -> str:
    items = list(balance.items())[:20]
    rotate = len(items) > 6
    bottom = 0.2 + 0.5 * text_inches(shorten(k, 14) for k, _ in items) if rotate else 0.35
    return plot(
        partial(_plot_class_balance, items=items, target=target, rotate=rotate),
        (4.0, 2.6),
        f"class balance of {target}",
        bottom=bottom,
    )


def _plot_class_balance(
    fig: Figure, items: list[tuple[Any, Any]], target: str, rotate: bool
) -> None:
    ax = fig.add_subplot()
    labels = [shorten(k, 14) for k, _ in items]
    values = [float(v) if is_finite_number(v) else 0.0 for _, v in items]
    bars = ax.bar(range(len(values)), values, color=BLUE)
    ax.set_xticks(range(len(values)), labels, rotation=30 if rotate else 0)
    ax.bar_label(bars, labels=[pct(v) for v in values], fontsize=7)
    ax.set_ylim(0, max([*values, 0.01]) * 1.18)
    ax.set_ylabel("fraction of rows")
    ax.set_title(f"{shorten(target, 40)}: class balance")


def _distribution_plot(name: str, col: dict) -> str:
    return plot(
        partial(_plot_column_distribution, name=name, col=col),
        THUMB,
        f"distribution of {name}",
        **_distribution_margins(col),
    )


def _plot_column_distribution(fig: Figure, name: str, col: dict) -> None:
    ax = fig.add_subplot()
    if col.get("kind") in HISTOGRAM_KINDS:
        ax.stairs(_histogram_of(col)["counts"], _edges(col), fill=True, color=BLUE, alpha=0.8)
        ax.set_ylabel("rows")
        _label_x(ax, col)
    else:
        _category_bars(ax, [(col.get("top") or [], col.get("other") or 0, None, BLUE)])
    ax.set_title(shorten(name, 40))
    if col.get("kind") != "datetime":  # date axes place their own ticks
        ax.locator_params(nbins=4)  # fewer ticks: legible at thumbnail size, and faster


def _label_x(ax: Axes, col: dict) -> None:
    if col.get("kind") == "text":
        ax.set_xlabel("characters")
    elif col.get("kind") == "datetime":
        from matplotlib import dates

        locator = dates.AutoDateLocator(minticks=2, maxticks=5)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))


def _distribution_margins(*cols: dict) -> dict[str, float]:
    """Room for category labels on the y axis, else for a count axis and no x label."""
    if all(col.get("kind") in HISTOGRAM_KINDS for col in cols):
        bottom = 0.45 if any(col.get("kind") != "numeric" for col in cols) else 0.3
        return {"left": 0.5, "bottom": bottom}
    labels = [shorten(v, 18) for col in cols for v, _ in (col.get("top") or [])]
    return {"left": text_inches([*labels, "(other)"]), "bottom": 0.45}


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
    labels = [shorten(c, 18) for c in categories]
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


# --------------------------------------------------------------------------------------------
# Drift
# --------------------------------------------------------------------------------------------


def _drift_sort_key(item: tuple[str, dict]) -> tuple[bool, float]:
    stat = item[1].get("statistic")
    return (not item[1].get("drifted"), -float(stat) if is_finite_number(stat) else math.inf)


def _drift_section(drift: dict, profile: dict, reference: dict | None) -> str:
    ref = drift.get("reference") or {}
    heading = f"Drift against {ref.get('model') or 'reference'} v{ref.get('version') or '?'}"
    if ref.get("alias"):
        heading += f" (@{ref['alias']})"
    policy = str(drift.get("policy") or "warn")
    counts = f"{fmt(drift.get('n_drifted'))} of {fmt(drift.get('n_features'))} features drifted"
    if drift.get("detected"):
        verdict = banner(
            "bad" if policy == "fail" else "warn", f"Drift detected: {counts} (policy: {policy})"
        )
    else:
        verdict = banner("ok", f"No drift detected: {counts} (policy: {policy})")

    out = [f"<h2>{html.escape(heading)}</h2>", verdict]
    if ref.get("profile_run"):
        out.append(
            f'<p class="note">Reference profile from run <code>'
            f"{html.escape(str(ref['profile_run']))}</code>.</p>"
        )
    skipped = drift.get("skipped") or {}
    if skipped:
        shown = "; ".join(f"{name} ({why})" for name, why in skipped.items())
        out.append(f'<p class="note">Not compared: {html.escape(shown)}.</p>')
    features = sorted((drift.get("features") or {}).items(), key=_drift_sort_key)
    if not features:
        out.append('<p class="note">No features were compared.</p>')
        return "\n".join(out)

    out.append(_drift_table(features))
    charted = [(n, f) for n, f in features if is_finite_number(f.get("statistic"))][:MAX_DRIFT_BARS]
    if charted:
        out.append("<h3>Drift statistic per feature</h3>")
        if len(charted) < len(features):
            out.append(
                f'<p class="note">The {len(charted)} most drifted of {len(features)} features '
                "with a statistic.</p>"
            )
        out.append(figures([(_drift_bars(charted), "")]))
    out.extend(_overlay_section(features, profile, reference))
    return "\n".join(out)


def _drift_table(features: list[tuple[str, dict]]) -> str:
    return table(
        ["Feature", "Kind", "Method", "Statistic", "p-value", "Threshold", "Drifted", "Detail"],
        [
            [
                name,
                f.get("kind"),
                f.get("method"),
                f.get("statistic"),
                f.get("p_value"),
                f.get("threshold"),
                Raw("yes" if f.get("drifted") else "no", css="status"),
                f.get("detail"),
            ]
            for name, f in features
        ],
        row_classes=["st-drifted" if f.get("drifted") else "st-passed" for _, f in features],
    )


def _overlay_section(
    features: list[tuple[str, dict]], profile: dict, reference: dict | None
) -> list[str]:
    """Reference-vs-current distributions of the most drifted features, or why there are none."""
    drifted = [(name, f) for name, f in features if f.get("drifted")]
    if reference is None:
        return ['<p class="note">No reference profile given: no distribution overlays.</p>']
    if not drifted:
        return ['<p class="note">No feature drifted: no distribution overlays.</p>']
    current_cols = profile.get("columns") or {}
    ref_cols = reference.get("columns") or {}
    comparable = [
        (name, f)
        for name, f in drifted
        if _has_distribution(current_cols.get(name) or {})
        and _has_distribution(ref_cols.get(name) or {})
    ]
    shown = comparable[:MAX_DRIFT_OVERLAYS]
    out = ["<h3>Reference vs current, most drifted features</h3>"]
    note = f"{len(shown)} of {len(drifted)} drifted features"
    if len(comparable) < len(drifted):
        note += f" ({len(drifted) - len(comparable)} without values in one of the profiles)"
    out.append(
        f'<p class="note">{html.escape(note)}, as fractions of non-missing rows: reference '
        "filled grey, current outlined orange.</p>"
    )
    if shown:
        out.append(
            figures(
                [
                    (_overlay_plot(name, ref_cols[name], current_cols[name], f), name)
                    for name, f in shown
                ]
            )
        )
    return out


def _threshold_on_statistic(features: list[tuple[str, dict]]) -> bool:
    """Whether ``drifted`` agrees with statistic >= threshold (else it is a p-value threshold)."""
    for _, f in features:
        stat, thr = f.get("statistic"), f.get("threshold")
        if f.get("all_new"):  # drifted because every value is a new category, whatever stat
            continue
        if f.get("kind") in ("datetime", "text"):  # also drift by values not dates, new words
            continue
        if is_finite_number(stat) and is_finite_number(thr) and f.get("drifted") is not None:
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
    return plot(
        partial(_plot_drift_statistics, groups=groups),
        (5.6, height),
        "drift statistic per feature",
        left=text_inches(shorten(n) for n, _ in charted),
        bottom=0.3,
        hspace=gap / axes_inches,
    )


def _plot_drift_statistics(fig: Figure, groups: dict[str, list[tuple[str, dict]]]) -> None:
    """One bar chart per drift method, stacked, drifted features in red."""
    axes = fig.subplots(
        len(groups), 1, squeeze=False, height_ratios=[len(g) for g in groups.values()]
    )[:, 0]
    for ax, (method, group) in zip(axes, groups.items(), strict=True):
        stats = [float(f["statistic"]) for _, f in group]
        colors = [RED if f.get("drifted") else GREY for _, f in group]
        ax.barh(range(len(group)), stats, color=colors)
        ax.set_yticks(range(len(group)), [shorten(n) for n, _ in group])
        ax.invert_yaxis()
        ax.set_title(f"{method} (red: drifted)" + _mark_drift_thresholds(ax, group))
        ax.set_xlim(left=min(0.0, *stats))


def _mark_drift_thresholds(ax: Axes, group: list[tuple[str, dict]]) -> str:
    """Dash the thresholds on a statistic axis; return what the title says about them."""
    thresholds = [f.get("threshold") for _, f in group if is_finite_number(f.get("threshold"))]
    if not thresholds:
        return ""
    if not _threshold_on_statistic(group):
        return ", threshold applies to the p-value"
    unique = sorted(set(map(float, thresholds)))
    if len(unique) == 1:
        ax.axvline(unique[0], color="black", ls="--", lw=1)
        return f", threshold {fmt(unique[0])}"
    for y, (_, f) in enumerate(group):
        if is_finite_number(f.get("threshold")):
            t = float(f["threshold"])
            ax.plot([t, t], [y - 0.45, y + 0.45], color="black", ls="--", lw=1)
    return ", thresholds dashed"


def _overlay_plot(name: str, ref_col: dict, cur_col: dict, result: dict) -> str:
    return plot(
        partial(
            _plot_reference_vs_current, name=name, ref_col=ref_col, cur_col=cur_col, result=result
        ),
        (4.2, 2.6),
        f"reference vs current distribution of {name}",
        **_distribution_margins(ref_col, cur_col),
    )


def _plot_reference_vs_current(
    fig: Figure, name: str, ref_col: dict, cur_col: dict, result: dict
) -> None:
    ax = fig.add_subplot()
    kind = ref_col.get("kind")
    if kind in HISTOGRAM_KINDS and cur_col.get("kind") == kind:
        for col, label, filled in ((ref_col, "reference", True), (cur_col, "current", False)):
            counts = [float(c) for c in _histogram_of(col)["counts"]]
            total = sum(counts)
            ax.stairs(
                [c / total for c in counts],
                _edges(col),
                fill=filled,
                color=GREY if filled else ORANGE,
                alpha=0.7 if filled else 1.0,
                linewidth=0 if filled else 1.6,
                label=label,
            )
        ax.set_ylabel("fraction of rows")
        ax.legend(loc="best")
        _label_x(ax, ref_col)
    else:
        _category_bars(
            ax,
            [
                (ref_col.get("top") or [], ref_col.get("other"), "reference", GREY),
                (cur_col.get("top") or [], cur_col.get("other"), "current", ORANGE),
            ],
        )
    stat = result.get("statistic")
    verdict = "drifted" if result.get("drifted") else "not drifted"
    ax.set_title(f"{shorten(name, 30)}: {result.get('method') or ''} {fmt(stat)}, {verdict}")
    if kind != "datetime":
        ax.locator_params(nbins=4)
