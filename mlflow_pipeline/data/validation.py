"""The pandera gates: validate lazily, quarantine what may be dropped, report briefly, keep the
full failure table and the warnings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors as pa_errors
import pandera.pandas as pa

from mlflow_pipeline.errors import DataValidationError
from mlflow_pipeline.schemas import (
    AGGREGATE_CHECKS,
    ColumnRole,
    Gate,
    duplicate_rows,
    not_dates,
)

FAILURE_COLUMNS = ["schema_context", "column", "check", "check_number", "failure_case", "index"]
# Check statuses in a validation report.
PASSED, FAILED, WARNING, QUARANTINED = "passed", "failed", "warning", "quarantined"


@dataclass
class GateResult:
    """What a gate did to a dataset: the validated frame, the warnings it reported, the rows it
    quarantined, and every check with its status (for the validation report)."""

    frame: pd.DataFrame
    stage: str
    dataset: str
    rows: int
    checks: list[dict[str, Any]]
    warnings: pd.DataFrame
    quarantined: pd.DataFrame | None = None
    quarantine_max: float | None = None
    # The failures of quarantined rows (their checks show as "quarantined").
    quarantine_failures: pd.DataFrame | None = None

    def report(self) -> dict[str, Any]:
        """The validation report's input (see reports.validation.validation_report)."""
        return report_data(
            self.stage,
            self.dataset,
            self.rows,
            self.checks,
            quarantined=self.quarantine_failures,
            warnings=self.warnings,
            quarantined_rows=None if self.quarantined is None else len(self.quarantined),
            quarantine_max=self.quarantine_max,
            rows_out=len(self.frame),
        )


def check(
    df: pd.DataFrame,
    gate: pa.DataFrameSchema | Gate,
    *,
    stage: str,
    dataset: str,
    max_lines: int = 5,
) -> GateResult:
    """Run ``gate`` on ``df``: its error checks (quarantining the failing rows when the gate
    allows it and they are few enough), then its warning checks on what passed.

    Raises DataValidationError (message, failure table, report data) when an error check
    fails and its rows cannot be quarantined.
    """
    if not isinstance(gate, Gate):
        gate = Gate(schema=gate)
    checks = describe(gate)

    def fail(failures: pd.DataFrame, note: str = "") -> DataValidationError:
        table = normalise_failures(failures)
        message = summarize(
            table, stage=stage, dataset=dataset, max_lines=max_lines, target=gate.target
        )
        return DataValidationError(
            message + (f"\n  {note}" if note else ""),
            stage=stage,
            dataset=dataset,
            failure_cases=table,
            report=report_data(
                stage, dataset, len(df), checks, failures=table, quarantine_max=gate.quarantine
            ),
        )

    validated, failures = _run(gate.schema, df)
    quarantined = quarantine_failures = None
    if failures is not None:
        if gate.quarantine is None:
            raise fail(failures)
        rows = _quarantinable(failures)
        if rows is None:
            raise fail(
                failures,
                "Not quarantined: a failing check is about a whole column "
                "or the whole dataset, not about rows.",
            )
        if len(rows) > gate.quarantine * len(df):
            raise fail(
                failures,
                f"Not quarantined: {len(rows)} of {len(df)} row(s) ({len(rows) / len(df):.1%}) "
                f"fail, above validation.quarantine.max_fraction={gate.quarantine:g}.",
            )
        quarantine_failures = normalise_failures(failures)
        quarantined = _quarantine_table(df, quarantine_failures, rows)
        validated, again = _run(gate.schema, df.drop(index=rows))
        if again is not None:  # e.g. a frame-level check fails without the quarantined rows
            raise fail(again, f"(after quarantining {len(rows)} row(s))")
    warnings = normalise_failures(pd.DataFrame())
    if gate.warnings is not None:
        _, found = _run(gate.warnings, validated)
        if found is not None:
            warnings = normalise_failures(found)
    return GateResult(
        frame=validated,
        stage=stage,
        dataset=dataset,
        rows=len(df),
        checks=checks,
        warnings=warnings,
        quarantined=quarantined,
        quarantine_max=gate.quarantine,
        quarantine_failures=quarantine_failures,
    )


def _run(
    schema: pa.DataFrameSchema, df: pd.DataFrame
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(validated frame, None) or (None, raw failure table)."""
    lossy = _fractions_in_integer_columns(schema, df)
    validated, failures = _validate(schema, df)
    if lossy is None:
        return validated, failures
    if failures is not None:  # the same values, as pandera's coercion of a float column saw them
        checks = failures["check"].astype(str)
        same = failures["column"].isin(set(lossy["column"])) & checks.str.startswith(
            "coerce_dtype("
        )
        failures = failures[~same]
    return None, pd.concat([lossy, failures]) if failures is not None and len(failures) else lossy


# The checks a float fails when its column is coerced to an integer dtype: a fraction (pandas'
# astype to int64 makes 2.9 a 2 without a word), a number beyond the dtype's range (300 in int8
# becomes 44). A nullable Int64 refuses both itself, but without naming the value or the row.
WHOLE_NUMBER = "whole_number"
INTEGER_RANGE = "integer_range"


def _fractions_in_integer_columns(
    schema: pa.DataFrameSchema, df: pd.DataFrame
) -> pd.DataFrame | None:
    """Failure rows for the values that coercing a float column to an integer dtype would
    change or refuse: a scoring batch whose integer column came as floats was scored on other
    values than it holds. And fractions in a float column declared of role integer. None when
    there are none."""
    found = []
    for name, column in schema.columns.items():
        if name not in df.columns or not (column.coerce or schema.coerce):
            continue
        try:
            dtype = pd.api.types.pandas_dtype(str(column.dtype))
        except TypeError:
            continue
        dtype = getattr(dtype, "numpy_dtype", dtype)  # Int64 -> int64
        if not pd.api.types.is_float_dtype(df[name]):
            continue
        if dtype.kind in "iu":
            limits = np.iinfo(dtype)
        elif dtype.kind == "f" and _declared_integer(column):
            # Declared whole numbers with missing values are kept as floats: the role holds them
            # whole. An inferred role does not: the float column takes fractions as it says.
            limits = np.finfo(dtype)
        else:
            continue
        numbers = df[name].to_numpy(dtype="float64", na_value=np.nan)
        finite = np.isfinite(numbers)
        with np.errstate(invalid="ignore"):
            beyond = finite & ((numbers < limits.min) | (numbers > limits.max))
            fraction = finite & ~beyond & (numbers != np.round(numbers))
        for check_name, rows in ((WHOLE_NUMBER, fraction), (INTEGER_RANGE, beyond)):
            positions = np.flatnonzero(rows)
            if positions.size:
                found.append(
                    pd.DataFrame(
                        {
                            "schema_context": "Column",
                            "column": name,
                            "check": check_name
                            if check_name == WHOLE_NUMBER
                            else (f"{INTEGER_RANGE}({dtype})"),
                            "check_number": None,
                            "failure_case": numbers[positions],
                            "index": df.index[positions],
                        }
                    )
                )
    return pd.concat(found, ignore_index=True) if found else None


def _declared_integer(column: pa.Column) -> bool:
    """Whether the contract records ``column`` as whole numbers by a declared (not inferred)
    role ``integer`` (``data.columns.<name>.role``)."""
    role = ColumnRole.from_description(column.description)
    return role is not None and role.role == "integer" and not role.inferred


def _validate(
    schema: pa.DataFrameSchema, df: pd.DataFrame
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    try:
        if schema.strict == "filter":  # pandera deprecates filtering in place
            return schema.validate(df, lazy=True), None
        # pandera would deep-copy the frame first; a shallow copy is enough: copy-on-write
        # keeps ``df`` as it is when pandera replaces a column with its coerced version.
        return schema.validate(df.copy(deep=False), lazy=True, inplace=True), None
    except pa_errors.SchemaErrors as exc:
        return None, _enrich(exc.failure_cases, df)
    except pa_errors.SchemaError as exc:  # raised even with lazy=True for some frame checks
        return None, pd.DataFrame(
            [
                {
                    "schema_context": type(exc.schema).__name__,
                    "column": getattr(exc.schema, "name", None),
                    "check": str(exc.check) if exc.check is not None else str(exc),
                    "failure_case": str(exc),
                }
            ]
        )


def _enrich(failures: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Aggregate checks report ``False``: replace it with the measured fraction. Values that
    failed coercion are not reported a second time as of the wrong dtype."""
    coerced = failures["check"].astype(str).str.startswith("coerce_dtype(")
    if coerced.any():
        # A value that could not be coerced is also reported as of the wrong dtype: once is enough.
        same = failures["column"].isin(failures.loc[coerced, "column"])
        failures = failures[~(same & failures["check"].astype(str).str.startswith("dtype("))]
    failures = failures.copy()
    failures["failure_case"] = failures["failure_case"].astype(object)
    checks = failures["check"].astype(str)
    # Only the few aggregate and column-presence failures are rewritten; a row-level failure
    # table can have a row per failing value (millions), so it is not walked row by row.
    special = checks.isin(list(_FRAME_CHECKS)) | checks.str.startswith(
        ("null_fraction", "duplicate_rows", "target ", "not_dates")
    )
    for position, row in failures[special].iterrows():
        check_text = str(row.get("check"))
        column = row.get("column")
        if check_text in _FRAME_CHECKS:  # the failure case names the column
            failures.at[position, "column"] = row.get("failure_case")
        elif check_text.startswith("target "):
            target = check_text.split("'")[1] if check_text.count("'") >= 2 else None
            if target in df.columns:
                values = df[target].dropna().unique()
                shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in values[:5])
                failures.at[position, "failure_case"] = (
                    f"{len(values)} distinct value(s) in {len(df)} row(s): {shown}"
                    if len(values)
                    else f"no values in {len(df)} row(s)"
                )
        if check_text.startswith("null_fraction") and column in df.columns:
            nulls = int(df[column].isna().sum())
            failures.at[position, "failure_case"] = (
                f"{nulls} of {len(df)} missing ({nulls / max(len(df), 1):.1%})"
            )
        elif check_text.startswith("not_dates") and column in df.columns:
            limit = float(check_text.rpartition("<=")[2])
            found = not_dates(df[column], limit)
            sampled = (
                f" (a random sample of the {found.present} present)"
                if found.looked_at < found.present
                else " present"
            )
            shown = ", ".join(map(repr, found.examples))
            failures.at[position, "failure_case"] = (
                f"{found.count} of {found.looked_at} value(s){sampled} are not dates "
                f"({found.count / max(found.looked_at, 1):.1%}; e.g. {shown})"
            )
        elif check_text.startswith("duplicate_rows"):
            duplicated = duplicate_rows(df)
            failures.at[position, "failure_case"] = (
                f"{duplicated} of {len(df)} rows repeat an earlier row "
                f"({duplicated / max(len(df), 1):.1%})"
            )
    return failures


def _quarantinable(failures: pd.DataFrame) -> list | None:
    """The index labels of the failing rows, or None when a failure is not about rows."""
    rows = []
    for check_text, index in zip(failures["check"], failures["index"], strict=True):
        if _is_missing(index) or str(check_text).startswith(AGGREGATE_CHECKS):
            return None
        rows.append(index)
    return list(dict.fromkeys(rows))


def _quarantine_table(df: pd.DataFrame, failures: pd.DataFrame, rows: list) -> pd.DataFrame:
    """The quarantined rows as they arrived, with the checks each one failed."""
    reasons = (
        failures.assign(reason=failures["column"].fillna("<dataframe>") + ": " + failures["check"])
        .groupby("index", sort=False)["reason"]
        .agg("; ".join)
    )
    table = df.loc[rows].copy()
    table.insert(0, "quarantine_reason", [reasons.get(str(r), "") for r in rows])
    table.insert(0, "row", rows)
    return table.reset_index(drop=True)


def describe(gate: Gate) -> list[dict[str, Any]]:
    """Every check of ``gate`` as {column, check, severity}, in schema order."""
    found: list[dict[str, Any]] = []
    for severity, schema in (("error", gate.schema), ("warning", gate.warnings)):
        if schema is None:
            continue
        for name, column in schema.columns.items():
            if severity == "error":
                dtype = str(column.dtype)
                if column.dtype is not None:
                    kind = "coerce_dtype" if (column.coerce or schema.coerce) else "dtype"
                    found.append(_entry(name, f"{kind}('{dtype}')", severity))
                if not column.nullable:
                    found.append(_entry(name, "not_nullable", severity))
            for item in column.checks:
                found.append(_entry(name, _check_name(item), severity))
        for item in schema.checks or []:
            found.append(_entry(None, _check_name(item), severity))
    return found


def _entry(column: str | None, check_text: str, severity: str) -> dict[str, Any]:
    return {"column": column, "check": check_text, "severity": severity}


def _check_name(item: pa.Check) -> str:
    return str(item.error or item.name)


def report_data(
    stage: str,
    dataset: str,
    rows: int,
    checks: list[dict[str, Any]],
    *,
    failures: pd.DataFrame | None = None,
    warnings: pd.DataFrame | None = None,
    quarantined: pd.DataFrame | None = None,
    quarantined_rows: int | None = None,
    quarantine_max: float | None = None,
    rows_out: int | None = None,
) -> dict[str, Any]:
    """The validation report's input: every check with its status and failing rows."""
    entries = [dict(c) for c in checks]
    index = {(c["column"], c["check"]): c for c in entries}
    for c in entries:
        c.update(status=PASSED, failing_rows=0, examples=[])
    for table, status in ((failures, FAILED), (quarantined, QUARANTINED), (warnings, WARNING)):
        if table is None or table.empty:
            continue
        grouped = table.groupby(["column", "check"], sort=False, dropna=False)["failure_case"]
        for (column, check_text), cases in grouped:
            column = None if _is_missing(column) else column
            entry = index.get((column, check_text))
            if entry is None:  # a built-in check (column_in_schema, ...) not in the gate
                entry = _entry(column, check_text, "error" if status != WARNING else "warning")
                entry.update(status=PASSED, failing_rows=0, examples=[])
                entries.append(entry)
                index[(column, check_text)] = entry
            entry["status"] = status
            entry["failing_rows"] = len(cases)
            entry["examples"] = list(dict.fromkeys(cases.dropna()))[:3]
    passed = failures is None or failures.empty
    quarantine = None
    if quarantine_max is not None:
        n = quarantined_rows or 0
        quarantine = {
            "enabled": True,
            "max_fraction": quarantine_max,
            "rows": n,
            "fraction": n / rows if rows else 0.0,
            "artifact": f"quarantine/{dataset}.csv" if n else None,
        }
    return {
        "stage": stage,
        "dataset": dataset,
        "rows": rows,
        "rows_out": rows_out if passed else None,
        "passed": passed,
        "checks": entries,
        "quarantine": quarantine,
    }


def normalise_failures(failures: pd.DataFrame) -> pd.DataFrame:
    """A failure table with the standard columns, as strings (safe to write anywhere)."""
    table = failures.reindex(columns=FAILURE_COLUMNS).copy()
    # pandera puts the schema's name in `column` for dataset-level checks; it is not a column.
    # (A missing or unexpected column is the exception: the column is what failed.)
    frame_level = table["schema_context"] == "DataFrameSchema"
    table.loc[frame_level & ~table["check"].isin(list(_FRAME_CHECKS)), "column"] = None
    for name in FAILURE_COLUMNS:
        table[name] = table[name].map(lambda v: None if _is_missing(v) else str(v)).astype(object)
    return table.reset_index(drop=True)


# What a failed check about a whole column or the dataset means, when its failure case is the
# column's name.
_FRAME_CHECKS = {
    "column_in_dataframe": "missing from the data",
    "column_in_schema": "not in the schema (an unexpected column)",
}


def summarize(
    failures: pd.DataFrame,
    *,
    stage: str,
    dataset: str,
    max_lines: int = 5,
    what: str = "failed validation",
    artifact: str | None = "failures",
    target: str | None = None,
) -> str:
    """One header line plus one line per (column, check), most failures first, capped.

    A row-level check shows its failing rows and example values; a check about a whole column
    or the dataset shows what was measured (``column 'age', check null_fraction <= 0.99: 300
    of 300 missing (100.0%)``). ``artifact``: where the full table is logged (None: nowhere).
    ``target``: the model's target column, whose values that are not numbers say the task.
    """
    grouped = (
        failures.assign(column=failures["column"].fillna("<dataframe>"))
        .groupby(["column", "check"], sort=False, dropna=False)
        .agg(
            count=("failure_case", "size"),
            examples=("failure_case", lambda s: list(dict.fromkeys(s.dropna()))[:3]),
            rows=("index", lambda s: bool(s.notna().any())),
            distinct=("failure_case", "nunique"),
        )
        .reset_index()
        .sort_values("count", ascending=False, kind="stable")
    )
    header = (
        f"[{stage}] dataset '{dataset}' {what}: {len(grouped)} check(s), "
        f"{len(failures)} failing value(s)"
    )
    lines = [header]
    for row in grouped.head(max_lines).itertuples(index=False):
        examples = [e for e in row.examples if e != row.check]
        prefix = f"  - column '{row.column}', check {row.check}"
        if row.check in _FRAME_CHECKS:
            lines.append(f"{prefix}: {_FRAME_CHECKS[row.check]}")
        elif not row.rows and str(row.check).startswith(AGGREGATE_CHECKS) and examples:
            lines.append(f"{prefix}: {examples[0]}")
        else:
            quoted = ", ".join(repr(e) for e in examples)
            suffix = f" (e.g. {quoted})" if quoted else ""
            lines.append(
                f"{prefix}: {row.count} row(s){suffix}{_missing_hint(row, dataset, target)}"
            )
    if len(grouped) > max_lines:
        lines.append(f"  ... and {len(grouped) - max_lines} more check(s)")
    if artifact == "warnings":
        lines.append(f"  The full table is logged as {artifact}/{dataset}.csv on the stage run.")
    elif artifact is not None:
        lines.append(
            f"  The full failure table is logged as {artifact}/{dataset}.csv on the stage run."
        )
    return "\n".join(lines)


# Up to this many distinct values that are not numbers, in a column of numbers: markers of
# missing values ("?", "-"), which the read option na_values reads as missing.
MISSING_MARKERS = 3
NUMBER_COERCIONS = ("coerce_dtype('float64')", "coerce_dtype('int64')")


def _missing_hint(row: Any, dataset: str, target: str | None = None) -> str:
    """For the raw data's numbers with a few distinct values that are not numbers: how to read
    them as missing values; for a target that is not numbers, the task that reads it as
    classes ("" otherwise)."""
    if dataset != "raw" or not str(row.check).startswith(NUMBER_COERCIONS):
        return ""
    if row.column == target:
        return (
            f"; a regression target must be numbers: if '{target}' holds classes, "
            "set data.task=classification"
        )
    if row.distinct > MISSING_MARKERS or len(row.examples) != row.distinct:
        return ""
    marks = ", ".join(repr(str(e)) for e in row.examples)
    setting = f'"+data.read_options.na_values=[{marks}]"'
    return f"; if they mean 'missing', read them as missing: {setting}"


def _is_missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
