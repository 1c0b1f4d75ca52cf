"""The pandera gate: lazy, a capped message naming stage/dataset/column/check/count, full table."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest

from mlflow_pipeline.errors import DataValidationError, PipelineError
from mlflow_pipeline.validation import FAILURE_COLUMNS, normalise_failures, summarize, validate

SCHEMA = pa.DataFrameSchema(
    {f"c{i}": pa.Column(float, pa.Check.ge(0), coerce=True) for i in range(8)},
    strict=True,
    name="wide",
)


def bad_frame(rows: int = 10) -> pd.DataFrame:
    """Column c<i> has i+1 negative values, so checks sort by failure count."""
    return pd.DataFrame({f"c{i}": [-1.0 if r <= i else 1.0 for r in range(rows)] for i in range(8)})


def test_valid_frame_is_returned_coerced():
    df = pd.DataFrame({f"c{i}": [1, 2] for i in range(8)})
    out = validate(df, SCHEMA, stage="validate", dataset="raw")
    assert all(out[c].dtype == "float64" for c in out.columns)


def test_error_names_stage_dataset_column_check_and_count():
    with pytest.raises(DataValidationError, match=r"^\[train\] dataset 'train' failed") as info:
        validate(bad_frame(), SCHEMA, stage="train", dataset="train")
    err = info.value
    assert isinstance(err, PipelineError)
    assert err.stage == "train"
    assert err.dataset == "train"
    lines = str(err).splitlines()
    assert lines[0] == "[train] dataset 'train' failed validation: 8 check(s), 36 failing value(s)"
    assert lines[1] == "  - column 'c7', check greater_than_or_equal_to(0): 8 row(s) (e.g. '-1.0')"


def test_message_is_capped_but_table_is_complete():
    with pytest.raises(DataValidationError, match=r"\.\.\. and 6 more check\(s\)") as info:
        validate(bad_frame(), SCHEMA, stage="split", dataset="test", max_lines=2)
    err = info.value
    assert len(str(err).splitlines()) == 1 + 2 + 2
    assert str(err).splitlines()[-1].endswith("logged as failures/test.csv on the stage run.")
    table = err.failure_cases
    assert list(table.columns) == FAILURE_COLUMNS
    assert len(table) == 36
    assert table.groupby("column").size().to_dict() == {f"c{i}": i + 1 for i in range(8)}


def test_every_failure_is_collected_lazily():
    df = bad_frame().assign(extra=1)
    df["c0"] = df["c0"].astype(object)
    df.loc[5, "c0"] = "oops"
    with pytest.raises(DataValidationError, match=r"column '<dataframe>', check column_in_schema"):
        validate(df, SCHEMA, stage="validate", dataset="raw", max_lines=20)


def test_dataset_level_failures_do_not_name_a_column():
    schema = pa.DataFrameSchema(
        {"a": pa.Column(int)}, checks=[pa.Check(lambda d: len(d) > 5, name="big")], name="s"
    )
    with pytest.raises(DataValidationError, match=r"column '<dataframe>', check big") as info:
        validate(pd.DataFrame({"a": [1]}), schema, stage="validate", dataset="raw")
    assert info.value.failure_cases["column"].isna().all()
    assert "column 's'" not in str(info.value)


def test_normalise_failures_makes_strings_and_fills_missing_columns():
    table = normalise_failures(
        pd.DataFrame({"column": ["a", None], "check": ["x", "y"], "failure_case": [1.5, None]})
    )
    assert list(table.columns) == FAILURE_COLUMNS
    assert table["failure_case"][0] == "1.5"
    assert pd.isna(table["failure_case"][1])
    assert table["schema_context"].isna().all()


def test_summarize_groups_by_column_and_check():
    failures = normalise_failures(
        pd.DataFrame(
            {
                "column": ["a", "a", "b"],
                "check": ["isin", "isin", "ge"],
                "failure_case": ["x", "y", "-1"],
            }
        )
    )
    text = summarize(failures, stage="validate", dataset="raw")
    assert "column 'a', check isin: 2 row(s) (e.g. 'x', 'y')" in text
    assert "column 'b', check ge: 1 row(s) (e.g. '-1')" in text
