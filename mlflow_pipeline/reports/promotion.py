"""The promotion report: the register stage's decision, challenger against champion, with the
gain's confidence interval from the paired bootstrap."""

from __future__ import annotations

import html
from functools import partial
from typing import TYPE_CHECKING, Any

from mlflow_pipeline.reports.html import banner, figures, fmt, is_finite_number, page, table
from mlflow_pipeline.reports.plots import BLUE, GREEN, GREY, RED, plot, shorten

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def promotion_report(promotion: dict) -> str:
    """Render the register stage's promotion decision (challenger vs champion) as HTML.

    ``promotion`` is promotion.json: promote, reason, metric, greater_is_better, both scores,
    versions before and after, and (when there was a champion to compare with) the paired
    bootstrap ``comparison``: gain, low, high, confidence, resamples, rows; ``labels`` when the
    test set's labels differed from the classes the models know (registry.comparison
    ``CommonGround.as_dict``). Returns one HTML document.
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
        verdict = banner("ok", f"Promoted: version {version} is the champion now")
    else:
        stays = after or champion_version
        verdict = banner(
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
        if is_finite_number(challenger_score) and is_finite_number(champion_score)
        else None
    )
    comparison = promotion.get("comparison") or {}
    body = [
        verdict,
        f"<p><strong>Reason:</strong> {html.escape(str(promotion.get('reason') or '—'))}</p>",
        "<h2>Decision</h2>",
        table(None, _decision_rows(promotion, delta, comparison)),
        *_overlap_section(promotion.get("training_overlap") or {}),
        *_label_section(promotion.get("labels") or {}),
    ]
    bars = [(f"challenger v{version}", challenger_score, BLUE)]
    if champion_version is not None or champion_score is not None:
        bars.append((f"champion v{champion_version}", champion_score, GREY))
    bars = [b for b in bars if is_finite_number(b[1])]
    plots = [(_score_plot(bars, metric), "")] if bars else []
    if is_finite_number(comparison.get("low")) and is_finite_number(comparison.get("high")):
        plots.append((_gain_plot(comparison, metric), _gain_caption(comparison)))
    if plots:
        body.append("<h2>Scores</h2>")
        body.append(figures(plots))
    return page(f"Promotion: {name} v{version}", summary, body)


def _decision_rows(promotion: dict, delta: float | None, comparison: dict) -> list[list]:
    """The decision table: versions, scores, the bootstrap interval, what moved."""
    duplicate = promotion.get("duplicate_of") or {}
    higher = promotion.get("greater_is_better", True)
    return [
        ["Model", str(promotion.get("model_name") or "model")],
        ["Challenger version", promotion.get("version")],
        ["Champion version before", promotion.get("champion_version")],
        ["Champion version after", promotion.get("champion_version_after")],
        ["Metric", str(promotion.get("metric") or "metric")],
        ["Direction", "higher is better" if higher else "lower is better"],
        ["Challenger score", promotion.get("challenger_score")],
        ["Champion score", promotion.get("champion_score")],
        ["Difference (challenger − champion)", delta],
        *_comparison_rows(comparison),
        [
            "Registered",
            f"no: identical to version {duplicate.get('version')} (same content digest)"
            if duplicate
            else "yes",
        ],
        ["Content digest", promotion.get("content_digest") or "—"],
        ["Alias moves", "; ".join(promotion.get("moves") or []) or "none"],
        ["Finished an interrupted promotion", promotion.get("finished_interrupted") or "—"],
        ["Moved outside mlflow-pipeline", "; ".join(promotion.get("moved_outside") or []) or "—"],
        ["Audit trail (experiment)", promotion.get("audit_experiment") or "—"],
    ]


def _overlap_section(overlap: dict[str, Any]) -> list[str]:
    """The test rows the champion trained on, left out of the comparison (nothing when this
    run trained on the champion's data)."""
    if not overlap:
        return []
    rows = [
        ["Test rows", overlap.get("rows", "—")],
        ["... the champion trained on (left out)", overlap.get("rows_seen_by_champion", "—")],
        [
            "... only the challenger trained on (left out)",
            overlap.get("rows_seen_by_challenger_only", 0),
        ],
        ["... compared", overlap.get("rows_compared", "—")],
    ]
    return [
        "<h2>Test rows the champion trained on</h2>",
        f"<p>{html.escape(str(overlap.get('note') or ''))}</p>",
        *([table(None, rows)] if "rows" in overlap else []),
    ]


def _label_section(labels: dict[str, Any]) -> list[str]:
    """What differed between the test set's labels and the classes the models know, and on
    which rows and classes they were compared (nothing when the labels were the same)."""
    if not labels:
        return []

    def named(key: str) -> str:
        return ", ".join(repr(c) for c in labels.get(key) or []) or "none"

    where = labels.get("where") or "the test set"
    rows = [
        [f"Labels in {where} the champion never saw", named("unseen")],
        [f"Labels in {where} the challenger never saw", named("unseen_by_challenger")],
        [f"Champion's classes not in {where}", named("missing")],
        ["Classes compared", named("labels")],
        [f"Rows compared (of {where})", f"{labels.get('rows_compared')} of {labels.get('rows')}"],
    ]
    return [
        "<h2>Labels</h2>",
        f"<p>{html.escape(str(labels.get('note') or ''))}</p>",
        table(None, rows),
    ]


def _comparison_rows(comparison: dict[str, Any]) -> list[list[Any]]:
    """The gain and its interval, as table rows (none without a comparison)."""
    if not comparison:
        return []
    level = comparison.get("confidence") or 0.0
    low, high = comparison.get("low"), comparison.get("high")
    interval = (
        f"[{fmt(low)}, {fmt(high)}]"
        if is_finite_number(low) and is_finite_number(high)
        else "could not be estimated"
    )
    return [
        ["Gain (in the better direction)", comparison.get("gain")],
        [f"{level:.0%} confidence interval of the gain", interval],
        [
            "Paired bootstrap",
            f"{comparison.get('resamples')} resamples of {comparison.get('rows')} test rows "
            f"(seed {comparison.get('seed')}; metric defined in {comparison.get('defined')})",
        ],
    ]


def _gain_caption(comparison: dict[str, Any]) -> str:
    return (
        f"Gain and its {comparison.get('confidence', 0):.0%} interval: promoted only when the "
        "whole interval is above 0"
    )


def _gain_plot(comparison: dict[str, Any], metric: str) -> str:
    return plot(
        partial(_plot_gain, comparison=comparison, metric=metric),
        (4.0, 1.7),
        f"gain in {metric} with its confidence interval",
        left=0.2,
        bottom=0.5,
    )


def _plot_gain(fig: Figure, comparison: dict[str, Any], metric: str) -> None:
    """The gain as a point with its interval as a bar, against the zero line."""
    ax = fig.add_subplot()
    gain, low, high = (float(comparison[k]) for k in ("gain", "low", "high"))
    colour = GREEN if low > 0 else RED
    ax.errorbar(
        [gain],
        [0],
        xerr=[[max(gain - low, 0.0)], [max(high - gain, 0.0)]],
        fmt="o",
        color=colour,
        capsize=5,
        lw=2,
    )
    ax.axvline(0, color="black", lw=0.8)
    span = max(abs(low), abs(high), 1e-12)
    ax.set_xlim(min(low, 0) - 0.15 * span, max(high, 0) + 0.15 * span)
    ax.set_yticks([])
    ax.set_xlabel(f"gain in {shorten(metric, 30)} (challenger better → right)")


def _score_plot(bars: list[tuple[str, Any, str]], metric: str) -> str:
    return plot(
        partial(_plot_challenger_vs_champion, bars=bars, metric=metric),
        (4.0, 2.8),
        f"{metric}: challenger vs champion",
        left=0.7,
        bottom=0.35,
    )


def _plot_challenger_vs_champion(
    fig: Figure, bars: list[tuple[str, Any, str]], metric: str
) -> None:
    """One bar per model scored on the current test set, labelled with its score."""
    ax = fig.add_subplot()
    values = [float(v) for _, v, _ in bars]
    drawn = ax.bar(range(len(bars)), values, color=[c for _, _, c in bars], width=0.55)
    ax.bar_label(drawn, labels=[fmt(v) for v in values], padding=2)
    ax.set_xticks(range(len(bars)), [shorten(n, 24) for n, _, _ in bars])
    ax.axhline(0, color="black", lw=0.8)
    top = max([*values, 0.0])
    bottom = min([*values, 0.0])
    span = (top - bottom) or 1.0
    ax.set_ylim(bottom - (0.1 * span if bottom < 0 else 0), top + 0.15 * span)
    ax.set_ylabel(shorten(metric, 30))
    ax.set_title(f"{shorten(metric, 30)} on the current test set")
