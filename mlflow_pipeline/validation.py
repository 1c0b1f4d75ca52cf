"""The pandera gate: validate lazily, report briefly, keep the full failure table."""

from __future__ import annotations

import pandas as pd
import pandera.errors as pa_errors
import pandera.pandas as pa

from mlflow_pipeline.errors import DataValidationError

FAILURE_COLUMNS = ["schema_context", "column", "check", "check_number", "failure_case", "index"]


def validate(
    df: pd.DataFrame,
    schema: pa.DataFrameSchema,
    *,
    stage: str,
    dataset: str,
    max_lines: int = 5,
) -> pd.DataFrame:
    """Validate (and coerce) ``df`` against ``schema``, collecting every failure.

    Returns the validated frame. Raises DataValidationError whose message names the stage,
    dataset, column, check and the number of failing rows, capped at ``max_lines`` lines; the
    error carries the full failure table.
    """
    try:
        return schema.validate(df, lazy=True)
    except pa_errors.SchemaErrors as exc:
        failures = normalise_failures(exc.failure_cases)
    except pa_errors.SchemaError as exc:  # raised even with lazy=True for some frame-level checks
        failures = normalise_failures(
            pd.DataFrame(
                [
                    {
                        "schema_context": type(exc.schema).__name__,
                        "column": getattr(exc.schema, "name", None),
                        "check": str(exc.check) if exc.check is not None else str(exc),
                        "failure_case": str(exc),
                    }
                ]
            )
        )
    message = summarize(failures, stage=stage, dataset=dataset, max_lines=max_lines)
    raise DataValidationError(message, stage=stage, dataset=dataset, failure_cases=failures)


def normalise_failures(failures: pd.DataFrame) -> pd.DataFrame:
    """A failure table with the standard columns, as strings (safe to write anywhere)."""
    table = failures.reindex(columns=FAILURE_COLUMNS).copy()
    # pandera puts the schema's name in `column` for dataset-level checks; it is not a column.
    table.loc[table["schema_context"] == "DataFrameSchema", "column"] = None
    for name in FAILURE_COLUMNS:
        table[name] = table[name].map(lambda v: None if _is_missing(v) else str(v)).astype(object)
    return table.reset_index(drop=True)


def summarize(failures: pd.DataFrame, *, stage: str, dataset: str, max_lines: int = 5) -> str:
    """One header line plus one line per (column, check), most failures first, capped."""
    grouped = (
        failures.assign(column=failures["column"].fillna("<dataframe>"))
        .groupby(["column", "check"], sort=False, dropna=False)["failure_case"]
        .agg(count="size", examples=lambda s: list(dict.fromkeys(s.dropna()))[:3])
        .reset_index()
        .sort_values("count", ascending=False, kind="stable")
    )
    header = (
        f"[{stage}] dataset '{dataset}' failed validation: {len(grouped)} check(s), "
        f"{len(failures)} failing value(s)"
    )
    lines = [header]
    for row in grouped.head(max_lines).itertuples(index=False):
        examples = ", ".join(repr(e) for e in row.examples if e != row.check)
        suffix = f" (e.g. {examples})" if examples else ""
        lines.append(f"  - column '{row.column}', check {row.check}: {row.count} row(s){suffix}")
    if len(grouped) > max_lines:
        lines.append(f"  ... and {len(grouped) - max_lines} more check(s)")
    lines.append(f"  The full failure table is logged as failures/{dataset}.csv on the stage run.")
    return "\n".join(lines)


def _is_missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
