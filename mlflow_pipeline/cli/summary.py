"""The table a pipeline run ends with: each stage's outcome (hit or ran), its time and the
run's scores, printed with rich (plain text when the output is not a terminal)."""

from __future__ import annotations

import textwrap

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlflow_pipeline.engine.result import PipelineResult, describe


def print_summary(result: PipelineResult, prefix: str = "") -> None:
    """The stage table, then the run's lines (cache, drift, promotion); a sweep job's lines
    start with ``prefix`` (its ``[job N]``)."""
    console = Console(soft_wrap=True)
    if result.decisions:
        console.print(stage_table(result, title=f"{prefix}pipeline run {result.pipeline_run_id}"))
    lines = textwrap.indent(describe(result), prefix, lambda line: True)
    console.print(lines, markup=False, highlight=False)


def stage_table(result: PipelineResult, title: str | None = None) -> Table:
    """Per stage: hit or ran, seconds, and the metrics stage's scores."""
    metrics_stage = result.pipeline.metrics_stage if result.pipeline else None
    title = title or f"pipeline run {result.pipeline_run_id}"
    table = Table(title=Text(title), title_justify="left")  # Text: "[job 3]" is not markup
    table.add_column("stage")
    table.add_column("outcome")
    table.add_column("seconds", justify="right")
    table.add_column("scores")
    for name, decision in result.decisions.items():
        outcome = "hit" if decision.hit else "ran"
        seconds = result.durations.get(name)
        scores = ""
        if name == metrics_stage and result.metrics:
            scores = "  ".join(f"{k}={v:.4g}" for k, v in sorted(result.metrics.items()))
        table.add_row(name, outcome, f"{seconds:.1f}" if seconds is not None else "", scores)
    return table
