"""The data contract (inferred or read from YAML) and the fixed-shape schemas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlflow_pipeline import schemas
from mlflow_pipeline.config import Task
from mlflow_pipeline.data.validation import check as run_gate
from mlflow_pipeline.errors import ConfigError, DataValidationError
from tests.helpers import mixed_frame


@pytest.fixture
def frame() -> pd.DataFrame:
    return mixed_frame(30)


@pytest.fixture
def gate(frame: pd.DataFrame):
    contract = schemas.infer_contract(frame, "churned", Task.classification)
    return schemas.with_task_checks(contract, "churned", Task.classification)


def check(df: pd.DataFrame, schema, dataset: str = "train") -> pd.DataFrame:
    return run_gate(df, schema, stage="split", dataset=dataset).frame


def test_inferred_contract_types(frame: pd.DataFrame):
    frame["flag"] = frame["age"] > 40
    contract = schemas.infer_contract(frame, "churned", Task.classification)
    dtypes = {name: str(col.dtype) for name, col in contract.columns.items()}
    assert dtypes["income"] == "float64"
    assert dtypes["customer_id"] == "int64"  # integers stay integers
    assert dtypes["churned"] == "int64"
    assert "str" in dtypes["city"] or "string" in dtypes["city"]
    assert dtypes["flag"] == dtypes["city"]  # booleans are treated as categories
    assert contract.strict is True
    assert all(contract.columns[c].nullable for c in ("income", "city", "plan"))
    assert contract.columns["churned"].nullable is False


@pytest.mark.parametrize(
    ("target", "task", "dtype"),
    [
        (pd.Series([1, 0, 1]), Task.classification, "int64"),
        (pd.Series([True, False, True]), Task.classification, "int64"),
        (pd.Series([1.0, 0.0, np.nan]), Task.classification, "float64"),
        (pd.Series(["yes", "no", "yes"]), Task.classification, "str"),
        (pd.Series([1, 2, 3]), Task.regression, "float64"),
    ],
)
def test_target_column_dtype(target: pd.Series, task: Task, dtype: str):
    column = schemas.target_column(target, task)
    assert str(column.dtype) in (dtype, "string[pyarrow]" if dtype == "str" else dtype)
    assert column.nullable is False


def test_contract_validates_and_coerces_the_data_it_came_from(frame: pd.DataFrame, gate):
    out = check(frame, gate)
    assert out["income"].dtype == "float64"
    assert out["customer_id"].dtype == "int64"
    assert pd.api.types.is_string_dtype(out["city"])
    assert out["city"].isna().sum() == frame["city"].isna().sum()
    assert out["income"].isna().sum() == frame["income"].isna().sum()


def test_validation_leaves_the_input_frame_as_it_was(frame: pd.DataFrame, gate):
    before = frame.copy(deep=True)
    out = check(frame, gate)
    out.loc[0, "income"] = -1.0
    pd.testing.assert_frame_equal(frame, before)
    assert frame["customer_id"].dtype == "int64"


def test_duplicate_rows_counts_as_pandas_does():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "x": rng.integers(0, 3, 300).astype(float),
            "s": pd.Series(rng.choice(["a", "b"], 300), dtype=object),
            "y": rng.integers(0, 2, 300),
        }
    )
    df.loc[df.index % 5 == 0, "x"] = np.nan
    df.loc[df.index % 7 == 0, "s"] = None
    df.loc[df.index % 11 == 0, "s"] = np.nan  # None and NaN are equal, as in df.duplicated()
    assert df.duplicated().sum() > 0
    assert schemas.duplicate_rows(df) == df.duplicated().sum()
    assert schemas.duplicate_rows(df.assign(id=range(len(df)))) == 0
    assert schemas.duplicate_rows(df[["s"]]) == df[["s"]].duplicated().sum()
    assert schemas.duplicate_rows(df.iloc[:0]) == 0


def test_contract_round_trips_through_yaml(frame: pd.DataFrame, gate):
    contract = schemas.infer_contract(frame, "churned", Task.classification)
    again = schemas.contract_from_yaml(schemas.contract_to_yaml(contract))
    assert list(again.columns) == list(contract.columns)
    assert again.strict is True
    gated = schemas.with_task_checks(again, "churned", Task.classification)
    pd.testing.assert_frame_equal(check(frame, gated), check(frame, gate), check_dtype=False)


def test_string_in_numeric_column_is_rejected(frame: pd.DataFrame, gate):
    bad = frame.astype({"income": object})
    bad.loc[3, "income"] = "lots"
    with pytest.raises(DataValidationError, match=r"column 'income', check coerce_dtype") as info:
        check(bad, gate)
    message = str(info.value)
    assert message.startswith("[split] dataset 'train' failed validation")
    assert "'lots'" in message
    table = info.value.failure_cases
    assert set(table.loc[table["column"] == "income", "failure_case"]) == {"lots"}
    assert set(table.loc[table["column"] == "income", "index"]) == {"3"}


def test_null_target_is_rejected(frame: pd.DataFrame, gate):
    bad = frame.astype({"churned": "float64"})
    bad.loc[[2, 5], "churned"] = np.nan
    with pytest.raises(DataValidationError, match=r"column 'churned', check not_nullable: 2 row"):
        check(bad, gate)


def test_unexpected_extra_column_is_rejected(frame: pd.DataFrame, gate):
    with pytest.raises(
        DataValidationError, match=r"column 'x', check column_in_schema: not in the schema"
    ):
        check(frame.assign(x=1), gate)


def test_missing_column_is_rejected(frame: pd.DataFrame, gate):
    with pytest.raises(
        DataValidationError,
        match=r"column 'plan', check column_in_dataframe: missing from the data",
    ):
        check(frame.drop(columns="plan"), gate)


def test_single_class_target_is_rejected(frame: pd.DataFrame, gate):
    with pytest.raises(DataValidationError, match=r"target 'churned' has at least 2 classes"):
        check(frame.assign(churned=1), gate)


def test_constant_regression_target_is_rejected():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [5.0, 5.0, 5.0]})
    contract = schemas.infer_contract(df, "y", Task.regression)
    gate = schemas.with_task_checks(contract, "y", Task.regression)
    with pytest.raises(DataValidationError, match=r"target 'y' is not constant"):
        check(df, gate)


def test_empty_frame_is_rejected(frame: pd.DataFrame, gate):
    with pytest.raises(DataValidationError, match=r"check not_empty"):
        check(frame.iloc[:0], gate)


def test_with_task_checks_does_not_change_the_contract(frame: pd.DataFrame):
    contract = schemas.infer_contract(frame, "churned", Task.classification)
    schemas.with_task_checks(contract, "churned", Task.classification)
    assert not contract.checks


def test_raw_schema_needs_the_target_and_a_row():
    schema = schemas.raw_schema("y")
    assert len(check(pd.DataFrame({"y": [None], "anything": ["x"]}), schema, "raw")) == 1
    with pytest.raises(
        DataValidationError, match=r"column 'y', check column_in_dataframe: missing from the data"
    ):
        check(pd.DataFrame({"x": [1]}), schema, "raw")
    with pytest.raises(DataValidationError, match=r"check not_empty"):
        check(pd.DataFrame({"y": []}), schema, "raw")


def test_user_schema_file_is_loaded(tmp_path: Path, frame: pd.DataFrame):
    path = tmp_path / "schema.yaml"
    contract = schemas.infer_contract(frame, "churned", Task.classification)
    path.write_text(schemas.contract_to_yaml(contract))
    loaded = schemas.load_contract(path, "churned")
    assert list(loaded.columns) == list(contract.columns)


def test_user_schema_file_missing(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"data\.schema: no schema file at .*nope\.yaml"):
        schemas.load_contract(tmp_path / "nope.yaml", "y")


def test_user_schema_file_invalid(tmp_path: Path):
    path = tmp_path / "schema.yaml"
    path.write_text("columns: [this is: not a schema\n")
    with pytest.raises(ConfigError, match=r"is not a valid pandera YAML schema"):
        schemas.load_contract(path, "y")


def test_user_schema_without_target(tmp_path: Path):
    path = tmp_path / "schema.yaml"
    contract = schemas.infer_contract(pd.DataFrame({"a": [1.0], "y": [1]}), "y", "classification")
    path.write_text(schemas.contract_to_yaml(contract.remove_columns(["y"])))
    with pytest.raises(ConfigError, match=r"does not declare the target column 'y'"):
        schemas.load_contract(path, "y")


def test_metrics_schema():
    schema = schemas.Metrics.to_schema()
    good = pd.DataFrame({"metric": ["rmse", "r2"], "value": [1, 0.5]})
    assert check(good, schema, "metrics")["value"].dtype == "float64"
    with pytest.raises(DataValidationError, match=r"column 'metric', check field_uniqueness"):
        check(pd.DataFrame({"metric": ["a", "a"], "value": [1.0, 2.0]}), schema, "metrics")
    with pytest.raises(DataValidationError, match=r"column 'value', check not_nullable"):
        check(pd.DataFrame({"metric": ["a"], "value": [np.nan]}), schema, "metrics")


@pytest.mark.parametrize(
    ("values", "role"),
    [
        (pd.Series(pd.date_range("2024-01-01", periods=80).astype(str)), "datetime"),
        (
            pd.Series([f"2024/0{i % 9 + 1}/1{i % 9} 10:{i % 50 + 10}" for i in range(80)]),
            "datetime",
        ),
        (pd.Series(["Jan", "Feb", "Mar"] * 30), "categorical"),
        # Names of a few words, most distinct (vega_datasets' cars): words, not 60 categories
        # score would refuse every new one of; one-word codes as distinct stay categories.
        (
            pd.Series(
                [f"{m} model {i}" for i in range(30) for m in ("ford", "amc")] + ["a b"] * 20
            ),
            "text",
        ),
        (pd.Series([f"M{i:03d}" for i in range(60)] + ["X"] * 20), "categorical"),
        (pd.Series(["New York", "San Diego", "Los Angeles"] * 30), "categorical"),
        (pd.Series([f"A{i:04d}" for i in range(80)]), "id"),
        (pd.Series([f"A{i:04d}" for i in range(30)]), "categorical"),  # too few rows to tell
        (pd.Series(np.random.default_rng(0).normal(size=80) * 1000).round(), "numeric"),
        (pd.Series([1.0, None, 3.0] * 30), "integer"),
        # Whole numbers beyond what _whole looks at first, then one fraction: not integers.
        (pd.Series([1.0, None] * schemas.WHOLE_PROBE + [2.5]), "numeric"),
        (pd.Series([2.5, None] + [1.0] * schemas.WHOLE_PROBE), "numeric"),
        (pd.Series([None] * schemas.WHOLE_PROBE + [4.0, 5.0]), "integer"),
        (pd.Series(np.arange(80) * 7 + 12345), "numeric_id"),  # distinct but spread: kept
    ],
)
def test_inferred_roles(values: pd.Series, role: str):
    name = "value"
    if role == "numeric_id":
        assert schemas.infer_role(values, "amount").role == "integer"
        assert schemas.infer_role(values, "order_id").role == "id"
        return
    assert schemas.infer_role(values, name).role == role
