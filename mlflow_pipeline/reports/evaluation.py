"""The evaluation report: test-set metrics against thresholds, and diagnostic plots per task."""

from __future__ import annotations

import html
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from mlflow_pipeline.reports.html import (
    Raw,
    banner,
    figures,
    fmt,
    is_finite_number,
    page,
    plural,
    table,
)
from mlflow_pipeline.reports.plots import BLUE, FIG, GREY, RED, plot, shorten, text_inches

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_IMPORTANCES = 20
MAX_CURVE_CLASSES = 10
MAX_SCATTER_POINTS = 5000


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
        verdict = banner("info", "No thresholds configured")
    elif failed:
        verdict = banner("bad", "Thresholds not met: " + ", ".join(failed))
    else:
        verdict = banner("ok", f"All {plural(len(thresholds), 'threshold')} met")

    headline = ", ".join(f"{k} {fmt(v)}" for k, v in list(metrics.items())[:3])
    summary = f"{task} · {model} · {fmt(len(y_true))} test rows" + (
        f" · {headline}" if headline else ""
    )
    total = evaluation.get("test_rows")
    sampled = []
    if isinstance(total, int) and total > len(y_true):
        sampled = [
            f"<p class='note'>Metrics: all {fmt(total)} test rows. Plots and the confusion "
            f"matrix: a random sample of {fmt(len(y_true))} of them.</p>"
        ]
        summary = summary.replace(f"{fmt(len(y_true))} test rows", f"{fmt(total)} test rows")
    body = [
        verdict,
        *sampled,
        "<h2>Metrics</h2>",
        table(
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
    return page(f"Evaluation: {model}", summary, body)


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
        elif not is_finite_number(value):
            verdict, cls = "missing", "st-failed"
            failed.append(f"{name} (missing)")
        elif is_finite_number(low) and value < low:
            verdict, cls = "fail", "st-failed"
            failed.append(f"{name} {fmt(value)} < min {fmt(low)}")
        elif is_finite_number(high) and value > high:
            verdict, cls = "fail", "st-failed"
            failed.append(f"{name} {fmt(value)} > max {fmt(high)}")
        else:
            verdict, cls = "pass", "st-passed"
        rows.append([name, value, low, high, Raw(verdict, css="status"), cls])
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


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def _classification_sections(evaluation: dict, y_true: list, y_pred: list) -> list[str]:
    classes = _as_list(evaluation.get("classes"))
    labels = list(classes) if classes else _sorted_labels([*y_true, *y_pred])
    extra = [v for v in _sorted_labels([*y_true, *y_pred]) if v not in labels]
    labels += extra  # predictions outside ``classes`` still belong in the matrix
    if not y_true:
        return ['<p class="note">No test rows: no confusion matrix or curves.</p>']
    return [
        *_confusion_section(y_true, y_pred, labels),
        "<h2>ROC and precision-recall curves</h2>",
        *_curve_section(evaluation.get("proba"), classes, y_true),
    ]


def _confusion_section(y_true: list, y_pred: list, labels: list[Any]) -> list[str]:
    from sklearn import metrics as skm

    matrix = skm.confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return [
        "<h2>Confusion matrix</h2>",
        figures([(_confusion_plot(matrix, labels), "rows: true class, columns: predicted")]),
        "<h3>Per-class metrics</h3>",
        table(
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
        ),
    ]


def _curve_section(proba: Any, classes: list, y_true: list) -> list[str]:
    """ROC and precision-recall curves, or a note saying why they are skipped."""
    if proba is None:
        return ['<p class="note">No predicted probabilities: ROC and PR curves skipped.</p>']
    import numpy as np
    from sklearn import metrics as skm

    proba = np.asarray(proba, dtype=float)
    curve_classes = list(classes) if classes else _sorted_labels(y_true)
    width = proba.shape[1] if proba.ndim == 2 else 0
    if width != len(curve_classes) or len(proba) != len(y_true):
        return [
            f'<p class="note">Probabilities have {width} columns for {len(curve_classes)} classes '
            f"and {len(proba)} rows for {len(y_true)} labels: curves skipped.</p>"
        ]

    if len(curve_classes) == 2:
        positive = curve_classes[-1]
        curves = [(positive, proba[:, -1])]
        note = f"Positive class: {positive}."
    else:
        curves = [(c, proba[:, i]) for i, c in enumerate(curve_classes)]
        note = "One-vs-rest curve per class."
    curves = [(c, s) for c, s in curves if 0 < sum(1 for y in y_true if y == c) < len(y_true)]
    if not curves:
        return ['<p class="note">The test set has a single class: curves skipped.</p>']
    if len(curves) > MAX_CURVE_CLASSES:
        note += f" The first {MAX_CURVE_CLASSES} of {len(curves)} classes."
        curves = curves[:MAX_CURVE_CLASSES]

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
    return [
        f'<p class="note">{html.escape(note)}</p>',
        figures([(_roc_plot(roc), "ROC curve"), (_pr_plot(pr), "precision-recall curve")]),
        table(["Class", "ROC AUC", "Average precision", "Positives"], rows),
    ]


def _confusion_plot(matrix: Any, labels: list[Any]) -> str:
    n = len(labels)
    side = min(6.0, max(2.2, 1.2 + 0.4 * n))  # of the matrix itself, in inches
    ticks = [shorten(c, 12) for c in labels]
    left = text_inches(ticks) + 0.2
    bottom = (0.35 + 0.7 * text_inches(ticks)) if n > 4 else 0.55
    return plot(
        partial(_plot_confusion_matrix, matrix=matrix, labels=labels),
        (side + left + 0.9, side + bottom),
        "confusion matrix",
        left=left,
        bottom=bottom,
        right=0.1,
    )


def _plot_confusion_matrix(fig: Figure, matrix: Any, labels: list[Any]) -> None:
    n = len(labels)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = [shorten(c, 12) for c in labels]
    ax.set_xticks(range(n), ticks, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
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


def _roc_plot(curves: list[tuple[Any, Any, Any, float]]) -> str:
    return plot(partial(_plot_roc_curves, curves=curves), (4.2, 3.4), "ROC curve")


def _plot_roc_curves(fig: Figure, curves: list[tuple[Any, Any, Any, float]]) -> None:
    ax = fig.add_subplot()
    for cls, fpr, tpr, auc in curves:
        ax.plot(fpr, tpr, lw=1.4, label=f"{shorten(cls, 16)} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color=GREY, ls="--", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("ROC curve")
    ax.legend(loc="lower right")


def _pr_plot(curves: list[tuple[Any, Any, Any, float, float]]) -> str:
    return plot(
        partial(_plot_precision_recall_curves, curves=curves), (4.2, 3.4), "precision-recall curve"
    )


def _plot_precision_recall_curves(
    fig: Figure, curves: list[tuple[Any, Any, Any, float, float]]
) -> None:
    ax = fig.add_subplot()
    for cls, rec, prec, ap, _ in curves:
        ax.plot(
            rec, prec, lw=1.4, drawstyle="steps-post", label=f"{shorten(cls, 16)} (AP {ap:.3f})"
        )
    if len(curves) == 1:
        ax.axhline(curves[0][4], color=GREY, ls="--", lw=1, label="chance")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall curve")
    ax.legend(loc="lower left")


# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------


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
        table(
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
    drawings = [
        (
            partial(_plot_residuals_vs_predicted, predicted=p, residual=r, alpha=alpha),
            "residuals vs predicted",
        ),
        (
            partial(_plot_predicted_vs_actual, actual=t, predicted=p, alpha=alpha),
            "predicted vs actual",
        ),
        (partial(_plot_residual_histogram, residual=residual), "residual histogram"),
    ]
    out.append(figures([(plot(draw, FIG, alt), "") for draw, alt in drawings]))
    return out


def _plot_residuals_vs_predicted(fig: Figure, predicted: Any, residual: Any, alpha: float) -> None:
    ax = fig.add_subplot()
    ax.scatter(predicted, residual, s=8, alpha=alpha, color=BLUE, linewidths=0)
    ax.axhline(0, color="black", lw=1, ls="--")
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual (actual − predicted)")
    ax.set_title("Residuals vs predicted")


def _plot_predicted_vs_actual(fig: Figure, actual: Any, predicted: Any, alpha: float) -> None:
    ax = fig.add_subplot()
    ax.scatter(actual, predicted, s=8, alpha=alpha, color=BLUE, linewidths=0)
    low = float(min(actual.min(), predicted.min()))
    high = float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", lw=1, ls="--", label="y = x")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("Predicted vs actual")
    ax.legend(loc="upper left")


def _plot_residual_histogram(fig: Figure, residual: Any) -> None:
    """Every residual, not the scatter plots' sample."""
    import numpy as np

    ax = fig.add_subplot()
    ax.hist(residual, bins=min(40, max(10, int(np.sqrt(residual.size)))), color=BLUE)
    ax.axvline(0, color="black", lw=1, ls="--")
    ax.set_xlabel("residual (actual − predicted)")
    ax.set_ylabel("rows")
    ax.set_title("Residual distribution")


# --------------------------------------------------------------------------------------------
# Feature importance
# --------------------------------------------------------------------------------------------


def _importance_section(importance: dict[str, Any] | None) -> list[str]:
    out = ["<h2>Feature importance</h2>"]
    if not importance:
        out.append('<p class="note">Feature importance is not available for this model.</p>')
        return out
    items = sorted(
        ((str(k), float(v)) for k, v in importance.items() if is_finite_number(v)),
        key=lambda kv: -abs(kv[1]),
    )
    top = items[:MAX_IMPORTANCES]
    if not top:
        out.append('<p class="note">No finite importance values.</p>')
        return out
    if len(items) > len(top):
        out.append(f'<p class="note">The {len(top)} most important of {len(items)} features.</p>')
    image = plot(
        partial(_plot_feature_importance, top=top),
        (5.6, max(1.8, 0.75 + 0.2 * len(top))),
        "feature importance",
        left=text_inches(shorten(k) for k, _ in top),
        top=0.1,
    )
    out.append(figures([(image, "")]))
    out.append(table(["Feature", "Importance"], [[k, v] for k, v in top]))
    return out


def _plot_feature_importance(fig: Figure, top: list[tuple[str, float]]) -> None:
    ax = fig.add_subplot()
    values = [v for _, v in top]
    ax.barh(range(len(top)), values, color=[BLUE if v >= 0 else RED for v in values])
    ax.set_yticks(range(len(top)), [shorten(k) for k, _ in top])
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("importance")
