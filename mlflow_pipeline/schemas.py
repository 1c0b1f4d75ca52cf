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

import pandas as pd
import pandera.pandas as pa
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


def infer_contract(df: pd.DataFrame, target: str, task: Task) -> pa.DataFrameSchema:
    """Infer the data contract from raw data.

    Numeric features become nullable floats, everything else nullable strings; the target
    must be present and non-null (and numeric for regression). No unexpected columns.
    """
    columns: dict[str, pa.Column] = {}
    for name in df.columns:
        if name == target:
            continue
        if pd.api.types.is_bool_dtype(df[name]):
            columns[name] = pa.Column(STRING_DTYPE, nullable=True, coerce=True)
        elif pd.api.types.is_numeric_dtype(df[name]):
            columns[name] = pa.Column(NUMERIC_DTYPE, nullable=True, coerce=True)
        else:
            columns[name] = pa.Column(STRING_DTYPE, nullable=True, coerce=True)
    columns[target] = target_column(df[target], task)
    return pa.DataFrameSchema(columns, strict=True, coerce=True, name="contract")


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
