"""pandera schemas for every dataset that crosses a stage boundary.

The columns of a user's dataset are only known at run time, so its schema (the data contract) is
either read from a pandera YAML file or inferred from the raw data, then shared by every later
dataset: validated data, train and test splits. Fixed-shape datasets are DataFrameModels.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from omegaconf import DictConfig
from pandera.typing import Series

from mlflow_pipeline.config import Task
from mlflow_pipeline.errors import ConfigError

# The dtype every numeric feature is coerced to: float holds missing values, int does not.
NUMERIC_DTYPE = "float64"
# pandas' string dtype (pandas 3 default for text); missing values stay missing.
STRING_DTYPE = "str"


def raw_schema(target: str) -> pa.DataFrameSchema:
    """What ingest must hand over: a non-empty frame with the target column, any other columns."""
    return pa.DataFrameSchema(
        {target: pa.Column(required=True, nullable=True)},
        checks=[pa.Check(lambda df: len(df) > 0, element_wise=False, name="not_empty")],
        strict=False,
        name="raw",
    )


# A text column is inferred numeric when at least this fraction of its values are numbers:
# the rest are junk ("12kg", "?") that the gate then reports instead of a silent categorical.
NUMERIC_TEXT_FRACTION = 0.9


def infer_contract(df: pd.DataFrame, target: str, task: Task) -> pa.DataFrameSchema:
    """Infer the data contract from raw data.

    Numeric features (and text columns that are mostly numbers) become nullable floats,
    everything else nullable strings; the target must be present and non-null (and numeric for
    regression). No unexpected columns.
    """
    columns: dict[str, pa.Column] = {}
    for name in df.columns:
        if name == target:
            continue
        if pd.api.types.is_bool_dtype(df[name]):
            columns[name] = pa.Column(STRING_DTYPE, nullable=True, coerce=True)
        elif pd.api.types.is_numeric_dtype(df[name]) or _mostly_numbers(df[name]):
            columns[name] = pa.Column(NUMERIC_DTYPE, nullable=True, coerce=True)
        else:
            columns[name] = pa.Column(STRING_DTYPE, nullable=True, coerce=True)
    columns[target] = target_column(df[target], task)
    return pa.DataFrameSchema(columns, strict=True, coerce=True, name="contract")


def _mostly_numbers(values: pd.Series) -> bool:
    present = values.dropna()
    if present.empty:
        return False
    parsed = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    return bool(parsed.notna().mean() >= NUMERIC_TEXT_FRACTION)


def target_column(target: pd.Series, task: Task) -> pa.Column:
    """The target column of the contract: never null, numeric for regression."""
    if Task(task) is Task.regression:
        return pa.Column(NUMERIC_DTYPE, nullable=False, coerce=True)
    if pd.api.types.is_integer_dtype(target) or pd.api.types.is_bool_dtype(target):
        return pa.Column("int64", nullable=False, coerce=True)
    if pd.api.types.is_numeric_dtype(target):
        # Float-coded classes (1.0, 0.0) stay floats; rows with no label fail the gate.
        return pa.Column(NUMERIC_DTYPE, nullable=False, coerce=True)
    return pa.Column(STRING_DTYPE, nullable=False, coerce=True)


def load_contract(path: str | Path, target: str) -> pa.DataFrameSchema:
    """Read a user's pandera YAML schema; it must declare the target column.

    Raises ConfigError when the file is missing or not a valid pandera schema.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.schema: no schema file at {path}")
    try:
        schema = pa.DataFrameSchema.from_yaml(path)
    except Exception as exc:  # pandera raises many kinds for a bad file
        raise ConfigError(f"data.schema: {path} is not a valid pandera YAML schema: {exc}") from exc
    if target not in schema.columns:
        raise ConfigError(f"data.schema: {path} does not declare the target column '{target}'")
    return schema


def contract_to_yaml(schema: pa.DataFrameSchema) -> str:
    return schema.to_yaml()


def contract_from_yaml(text: str) -> pa.DataFrameSchema:
    return pa.DataFrameSchema.from_yaml(text)


def with_task_checks(contract: pa.DataFrameSchema, target: str, task: Task) -> pa.DataFrameSchema:
    """Add the dataset-level checks a model needs on top of the contract's column types."""
    what = "has at least 2 classes" if Task(task) is Task.classification else "is not constant"
    checks = [
        pa.Check(lambda df: len(df) > 0, element_wise=False, name="not_empty"),
        pa.Check(
            lambda df: df[target].nunique(dropna=True) >= 2,
            element_wise=False,
            name=f"target '{target}' {what}",
        ),
    ]
    combined = copy.deepcopy(contract)
    combined.checks = list(contract.checks or []) + checks
    return combined


# Checks about a whole column or frame (a fraction), not about rows: never quarantined.
AGGREGATE_CHECKS = ("null_fraction", "duplicate_rows", "not_empty", "target ")


def gate(contract: pa.DataFrameSchema, cfg: DictConfig) -> Gate:
    """The gate at every boundary after ingest: the contract's types, the task's checks and
    the rules of ``conf/validation``, split by severity (``validation.severity``).

    Raises ConfigError when a rule names a column the contract does not have.
    """
    rules = cfg.validation
    target = cfg.data.target
    task_gate = with_task_checks(contract, target, cfg.data.task)
    errors = copy.deepcopy(task_gate)
    warning_columns: dict[str, list[pa.Check]] = {}
    warning_frame: list[pa.Check] = []

    def severity(name: str) -> str:
        return rules.severity.get(name, "error")

    def add(column: str | None, name: str, check: pa.Check) -> None:
        if column is None:
            target_list = errors.checks if severity(name) == "error" else warning_frame
            target_list.append(check)
        elif severity(name) == "error":
            errors.columns[column].checks.append(check)
        else:
            warning_columns.setdefault(column, []).append(check)

    for key, names in (
        ("ranges", rules.ranges),
        ("categories", rules.categories),
        ("unique", rules.unique),
        ("null_fractions", rules.null_fractions),
    ):
        unknown = [n for n in names if n not in contract.columns]
        if unknown:
            raise ConfigError(
                f"validation.{key}: no column {', '.join(map(repr, unknown))} in the data "
                f"(columns: {', '.join(map(str, contract.columns))})"
            )
    for name, column in errors.columns.items():
        numeric = str(column.dtype) in (NUMERIC_DTYPE, "int64")
        if numeric and rules.finite:
            add(name, "finite", pa.Check(_finite, name="finite", error="finite"))
        if numeric and rules.max_abs_value is not None:
            limit = float(rules.max_abs_value)
            add(
                name,
                "max_abs_value",
                pa.Check(
                    lambda s, m=limit: _within(s, m),
                    name="max_abs_value",
                    error=f"max_abs_value({limit:g})",
                ),
            )
        limit = rules.null_fractions.get(name, rules.max_null_fraction)
        if name != target and limit is not None and limit < 1.0:
            add(
                name,
                "null_fraction",
                pa.Check(
                    lambda s, m=limit: bool(s.isna().mean() <= m),
                    element_wise=False,
                    ignore_na=False,
                    name="null_fraction",
                    error=f"null_fraction <= {limit:g}",
                ),
            )
        if name in rules.ranges and not numeric:
            raise ConfigError(
                f"validation.ranges.{name}: column '{name}' is not numeric ({column.dtype})"
            )
        if name in rules.ranges:
            low, high = rules.ranges[name].get("min"), rules.ranges[name].get("max")
            add(
                name,
                "in_range",
                pa.Check(
                    lambda s, lo=low, hi=high: _in_range(s, lo, hi),
                    name="in_range",
                    error=f"in_range({low}, {high})",
                ),
            )
        if name in rules.categories:
            allowed = list(rules.categories[name])
            if not numeric:
                allowed = [str(v) for v in allowed]
            add(
                name,
                "allowed_categories",
                pa.Check(
                    lambda s, a=tuple(allowed): s.isin(a),
                    name="allowed_categories",
                    error=f"allowed_categories({allowed})",
                ),
            )
        if name in rules.unique:
            add(
                name,
                "unique",
                pa.Check(lambda s: ~s.duplicated(keep=False), name="unique", error="unique"),
            )
    if rules.max_duplicate_fraction is not None:
        limit = float(rules.max_duplicate_fraction)
        add(
            None,
            "duplicate_rows",
            pa.Check(
                lambda df, m=limit: bool(df.duplicated().mean() <= m),
                element_wise=False,
                name="duplicate_rows",
                error=f"duplicate_rows <= {limit:g}",
            ),
        )
    warnings = None
    if warning_columns or warning_frame:
        warnings = pa.DataFrameSchema(
            {
                n: pa.Column(checks=c, nullable=True, required=False)
                for n, c in warning_columns.items()
            },
            checks=warning_frame,
            name=f"{contract.name or 'contract'} (warnings)",
        )
    return Gate(schema=errors, warnings=warnings)


def _numbers(values: pd.Series) -> pd.Series:
    """A numeric column as numbers: values that failed coercion are reported by
    ``coerce_dtype`` already and count as missing here."""
    if pd.api.types.is_numeric_dtype(values):
        return values
    return pd.to_numeric(values, errors="coerce")


def _finite(values: pd.Series) -> pd.Series:
    return ~np.isinf(_numbers(values))


def _within(values: pd.Series, limit: float) -> pd.Series:
    numbers = _numbers(values)
    return ~(numbers.abs() > limit) | np.isinf(numbers)


def _in_range(values: pd.Series, low: float | None, high: float | None) -> pd.Series:
    numbers = _numbers(values)
    ok = pd.Series(True, index=values.index)
    if low is not None:
        ok &= ~(numbers < low)
    if high is not None:
        ok &= ~(numbers > high)
    return ok


@dataclass
class Gate:
    """A dataset's gate: ``schema`` holds the error checks (types, nulls, rules of severity
    error); ``warnings`` the checks of severity warning (reported, never stopping); at the
    validate stage, ``quarantine`` is the largest fraction of rows that may be dropped for
    failing row-level error checks (None: no quarantine)."""

    schema: pa.DataFrameSchema
    warnings: pa.DataFrameSchema | None = None
    quarantine: float | None = None


class Metrics(pa.DataFrameModel):
    """Evaluation output: one row per metric computed on the test set."""

    metric: Series[str] = pa.Field(unique=True)
    value: Series[float] = pa.Field(nullable=False)

    class Config:
        strict = True
        coerce = True
        name = "metrics"


@dataclass
class TrainedModel:
    """The train stage's output: the fitted Pipeline, a few input rows as an example for the
    model signature, and (once logged) the model's URI in MLflow."""

    estimator: Any
    input_example: pd.DataFrame
    uri: str | None = None
