"""The validation report: a stage's checks by status, their failing rows, and the quarantine."""

from __future__ import annotations

import html
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
    plural,
    table,
    truncate,
)
from mlflow_pipeline.reports.plots import AMBER, GREY, ORANGE, RED, plot, shorten, text_inches

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_FAILURE_BARS = 25

# Checks are listed in this order of status, then by failing rows; unknown statuses go last.
_STATUS_ORDER = ["failed", "quarantined", "warning", "passed"]
_STATUS_COLORS = {"failed": RED, "warning": AMBER, "quarantined": ORANGE}


def validation_report(result: dict) -> str:
    """Render a validation stage result (checks, status counts, quarantine) as HTML.

    ``result`` has ``passed``, ``rows``, ``rows_out``, ``checks`` (column, check, severity,
    status, failing_rows, examples) and an optional ``quarantine``. Returns one HTML document.
    """
    dataset = str(result.get("dataset") or "dataset")
    checks: list[dict] = list(result.get("checks") or [])
    statuses = [str(c.get("status") or "unknown") for c in checks]
    order = _STATUS_ORDER + sorted({s for s in statuses if s not in _STATUS_ORDER})
    rank = {s: i for i, s in enumerate(order)}
    ordered = sorted(
        checks,
        key=lambda c: (rank[str(c.get("status") or "unknown")], -(c.get("failing_rows") or 0)),
    )
    summary = (
        f"stage {result.get('stage') or 'validate'} · dataset {dataset} · "
        f"{fmt(result.get('rows'))} rows in, {fmt(result.get('rows_out'))} rows out · "
        f"{len(checks)} checks"
    )
    body = [
        _verdict(result, statuses),
        "<h2>Checks by status</h2>",
        table(
            ["Status", "Checks"],
            [[s, statuses.count(s)] for s in order],
            row_classes=[f"st-{s}" if statuses.count(s) and s != "passed" else "" for s in order],
        ),
        "<h2>Checks</h2>",
        _checks_table(ordered),
        _quarantine_section(result.get("quarantine")),
        *_failing_rows_section(ordered),
    ]
    return page(f"Validation: {dataset}", summary, body)


def _verdict(result: dict, statuses: list[str]) -> str:
    """The banner: failed (and why), passed with warnings, or passed."""
    troubled = [s for s in statuses if s != "passed"]
    if not result.get("passed"):
        reasons = []
        if statuses.count("failed"):
            reasons.append(plural(statuses.count("failed"), "check") + " failed")
        quarantine = result.get("quarantine") or {}
        fraction, limit = quarantine.get("fraction"), quarantine.get("max_fraction")
        if is_finite_number(fraction) and is_finite_number(limit) and fraction > limit:
            reasons.append(f"quarantined {pct(fraction)} of rows, over the {pct(limit)} limit")
        return banner("bad", "Failed" + (": " + "; ".join(reasons) if reasons else ""))
    if troubled:
        return banner(
            "warn",
            f"Passed with warnings: {plural(len(troubled), 'check')} "
            f"({', '.join(f'{statuses.count(s)} {s}' for s in dict.fromkeys(troubled))})",
        )
    return banner("ok", f"Passed: all {plural(len(statuses), 'check')} passed")


def _checks_table(ordered: list[dict]) -> str:
    if not ordered:
        return '<p class="note">No checks were run.</p>'
    return table(
        ["Column", "Check", "Severity", "Status", "Failing rows", "Examples"],
        [
            [
                c.get("column"),
                Raw(f"<code>{html.escape(str(c.get('check')))}</code>"),
                c.get("severity"),
                Raw(str(c.get("status") or "unknown"), css="status"),
                c.get("failing_rows"),
                _examples(c.get("examples")),
            ]
            for c in ordered
        ],
        row_classes=[f"st-{c.get('status') or 'unknown'}" for c in ordered],
    )


def _examples(examples: Any) -> Raw:
    if not examples:
        return Raw("")
    shown = [truncate(str(e), 40) for e in list(examples)[:5]]
    more = f" … (+{len(examples) - 5})" if len(examples) > 5 else ""
    return Raw(", ".join(f"<code>{html.escape(e)}</code>" for e in shown) + html.escape(more))


def _quarantine_section(quarantine: dict | None) -> str:
    out = ["<h2>Quarantine</h2>"]
    if quarantine is None:
        out.append('<p class="note">Quarantine is not configured for this dataset.</p>')
        return "\n".join(out)
    if not quarantine.get("enabled"):
        out.append('<p class="note">Quarantine is disabled: failing rows stop the stage.</p>')
    fraction, limit = quarantine.get("fraction"), quarantine.get("max_fraction")
    over = is_finite_number(fraction) and is_finite_number(limit) and fraction > limit
    if over:
        out.append(
            banner("bad", f"Quarantined {pct(fraction)} of rows, over the limit of {pct(limit)}")
        )
    out.append(
        table(
            None,
            [
                ["Enabled", bool(quarantine.get("enabled"))],
                ["Rows quarantined", quarantine.get("rows")],
                ["Fraction quarantined", Raw(html.escape(pct(fraction)), css="num")],
                ["Maximum fraction", Raw(html.escape(pct(limit)), css="num")],
                ["Artifact", quarantine.get("artifact")],
            ],
            row_classes=["", "", "st-failed" if over else "", "", ""],
        )
    )
    return "\n".join(out)


def _failing_rows_section(ordered: list[dict]) -> list[str]:
    """A bar chart of failing rows for the checks that did not pass (none when all passed)."""
    failing = [
        c
        for c in ordered
        if c.get("status") in ("failed", "warning", "quarantined") and (c.get("failing_rows") or 0)
    ]
    if not failing:
        return []
    out = ["<h2>Failing rows per check</h2>"]
    if len(failing) > MAX_FAILURE_BARS:
        out.append(
            f'<p class="note">The {MAX_FAILURE_BARS} checks with most failing rows of '
            f"{len(failing)}.</p>"
        )
    out.append(figures([(_failures_plot(failing[:MAX_FAILURE_BARS]), "")]))
    return out


def _failure_label(check: dict) -> str:
    return shorten(f"{check.get('column')}: {check.get('check')}", 40)


def _failures_plot(failing: list[dict]) -> str:
    return plot(
        partial(_plot_failing_rows, failing=failing),
        (6.4, max(1.8, 0.9 + 0.22 * len(failing))),
        "failing rows per check",
        left=text_inches([_failure_label(c) for c in failing]),
        top=0.1,
    )


def _plot_failing_rows(fig: Figure, failing: list[dict]) -> None:
    ax = fig.add_subplot()
    values = [int(c.get("failing_rows") or 0) for c in failing]
    bars = ax.barh(
        range(len(failing)),
        values,
        color=[_STATUS_COLORS.get(str(c.get("status")), GREY) for c in failing],
    )
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=2, fontsize=7)
    ax.set_yticks(range(len(failing)), [_failure_label(c) for c in failing])
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.15)
    ax.set_xlabel("failing rows (red: failed, amber: warning, orange: quarantined)")
