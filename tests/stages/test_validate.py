"""validate: raw data against the data contract, inferred or from a user's pandera YAML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlflow_pipeline import schemas
from mlflow_pipeline.config import load_config
from mlflow_pipeline.errors import ConfigError, DataValidationError
from mlflow_pipeline.stages.ingest import ingest
from mlflow_pipeline.stages.validate import validate_data
from tests.helpers import csv_overrides, mixed_frame


@pytest.fixture(scope="module")
def cfg():
    return load_config(csv_overrides(Path("customers.csv")))


def test_inferred_contract_and_coerced_frame(cfg):
    raw = mixed_frame()
    out = validate_data(cfg, raw)
    contract = schemas.contract_from_yaml(out["contract"])
    assert list(contract.columns) == list(raw.columns)
    validated = out["validated"]
    assert validated["customer_id"].dtype == "int64"  # integers stay integers
    assert pd.api.types.is_string_dtype(validated["city"])
    assert validated["city"].isna().sum() == raw["city"].isna().sum()


def test_bundled_data_passes(cfg):
    diabetes = load_config(["data=diabetes"])
    out = validate_data(diabetes, ingest(diabetes)["raw"])
    assert len(out["validated"]) == 442


def test_null_target_fails_naming_stage_dataset_column_check_count(cfg):
    raw = mixed_frame().astype({"churned": "float64"})
    raw.loc[[1, 2, 3], "churned"] = np.nan
    with pytest.raises(
        DataValidationError,
        match=r"(?s)^\[validate\] dataset 'raw' failed.*'churned', check not_nullable: 3 row",
    ) as info:
        validate_data(cfg, raw)
    assert info.value.stage == "validate"
    assert info.value.dataset == "raw"
    nulls = info.value.failure_cases.query("check == 'not_nullable'")
    assert sorted(nulls["index"].astype(int)) == [1, 2, 3]


def test_single_class_target_fails(cfg):
    with pytest.raises(DataValidationError, match=r"target 'churned' has at least 2 classes"):
        validate_data(cfg, mixed_frame().assign(churned=0))


@pytest.fixture
def user_schema(tmp_path: Path) -> Path:
    path = tmp_path / "contract.yaml"
    contract = schemas.infer_contract(mixed_frame(), "churned", "classification")
    path.write_text(schemas.contract_to_yaml(contract))
    return path


def test_user_schema_rejects_a_string_in_a_numeric_column(user_schema: Path):
    cfg = load_config([*csv_overrides(Path("x.csv")), f"data.schema={user_schema}"])
    raw = mixed_frame().astype({"age": object})
    raw.loc[[4, 8], "age"] = "forty"
    with pytest.raises(
        DataValidationError,
        match=r"column 'age', check coerce_dtype\('float64'\): 2 row\(s\) \(e\.g\. 'forty'\)",
    ) as info:
        validate_data(cfg, raw)
    table = info.value.failure_cases
    assert set(table.loc[table["column"] == "age", "index"]) == {"4", "8"}


def test_user_schema_rejects_an_unexpected_column(user_schema: Path):
    cfg = load_config([*csv_overrides(Path("x.csv")), f"data.schema={user_schema}"])
    with pytest.raises(
        DataValidationError,
        match=r"column 'surprise', check column_in_schema: not in the schema \(an unexpected",
    ):
        validate_data(cfg, mixed_frame().assign(surprise=1))


def test_user_schema_is_returned_as_the_contract(user_schema: Path):
    cfg = load_config([*csv_overrides(Path("x.csv")), f"data.schema={user_schema}"])
    out = validate_data(cfg, mixed_frame())
    assert list(schemas.contract_from_yaml(out["contract"]).columns) == list(mixed_frame().columns)
    contract = schemas.contract_from_yaml(out["contract"])
    user = schemas.load_contract(user_schema, "churned")
    assert {n: str(c.dtype) for n, c in contract.columns.items()} == {
        n: str(c.dtype) for n, c in user.columns.items()
    }
    # The roles are recorded in it: data.ignore_columns (config) over the file's inferred one.
    assert schemas.contract_roles(contract)["customer_id"].role == "ignore"


def test_missing_user_schema(tmp_path: Path):
    cfg = load_config([*csv_overrides(Path("x.csv")), f"data.schema={tmp_path / 'nope.yaml'}"])
    with pytest.raises(ConfigError, match=r"data\.schema: no schema file"):
        validate_data(cfg, mixed_frame())
