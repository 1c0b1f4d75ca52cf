"""The pandera gate: lazy, a capped message naming stage/dataset/column/check/count, full table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest

from mlflow_pipeline.data.validation import FAILURE_COLUMNS, check, normalise_failures, summarize
from mlflow_pipeline.errors import DataValidationError, PipelineError
from mlflow_pipeline.schemas import Gate

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
    out = check(df, SCHEMA, stage="validate", dataset="raw").frame
    assert all(out[c].dtype == "float64" for c in out.columns)


def test_error_names_stage_dataset_column_check_and_count():
    with pytest.raises(DataValidationError, match=r"^\[train\] dataset 'train' failed") as info:
        check(bad_frame(), SCHEMA, stage="train", dataset="train")
    err = info.value
    assert isinstance(err, PipelineError)
    assert err.stage == "train"
    assert err.dataset == "train"
    lines = str(err).splitlines()
    assert lines[0] == "[train] dataset 'train' failed validation: 8 check(s), 36 failing value(s)"
    assert lines[1] == "  - column 'c7', check greater_than_or_equal_to(0): 8 row(s) (e.g. '-1.0')"


def test_message_is_capped_but_table_is_complete():
    with pytest.raises(DataValidationError, match=r"\.\.\. and 6 more check\(s\)") as info:
        check(bad_frame(), SCHEMA, stage="split", dataset="test", max_lines=2)
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
    with pytest.raises(
        DataValidationError, match=r"column 'extra', check column_in_schema: not in the schema"
    ):
        check(df, SCHEMA, stage="validate", dataset="raw", max_lines=20)


def test_dataset_level_failures_do_not_name_a_column():
    schema = pa.DataFrameSchema(
        {"a": pa.Column(int)}, checks=[pa.Check(lambda d: len(d) > 5, name="big")], name="s"
    )
    with pytest.raises(DataValidationError, match=r"column '<dataframe>', check big") as info:
        check(pd.DataFrame({"a": [1]}), schema, stage="validate", dataset="raw")
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


def test_numbers_with_a_few_other_values_are_told_how_to_read_those_as_missing():
    """The raw data's numbers with '?' in them (UCI's files write missing values so): the
    message gives the read option that reads them as missing; not for many distinct others
    (text given a numeric role), nor after ingest (the read options are ingest's)."""
    schema = pa.DataFrameSchema({"z": pa.Column(float, coerce=True, nullable=True)})
    marked = pd.DataFrame({"z": ["1.5", "?", "2", "?", "-"]})
    with pytest.raises(DataValidationError) as raised:
        check(marked, schema, stage="validate", dataset="raw")
    assert (
        "column 'z', check coerce_dtype('float64'): 3 row(s) (e.g. '?', '-'); if they mean "
        "'missing', read them as missing: \"+data.read_options.na_values=['?', '-']\""
    ) in str(raised.value)
    with pytest.raises(DataValidationError) as raised:
        check(marked, schema, stage="split", dataset="train")
    assert "na_values" not in str(raised.value)
    names = pd.DataFrame({"z": ["ann", "bob", "cy", "dan"]})
    with pytest.raises(DataValidationError) as raised:
        check(names, schema, stage="validate", dataset="raw")
    assert "na_values" not in str(raised.value)
    # A regression on a column of classes: the task is wrong, not the missing values.
    classes = pd.DataFrame({"z": ["Adelie", "Gentoo", "Adelie"]})
    with pytest.raises(DataValidationError) as raised:
        check(classes, Gate(schema=schema, target="z"), stage="validate", dataset="raw")
    assert "na_values" not in str(raised.value)
    assert (
        "a regression target must be numbers: if 'z' holds classes, set data.task=classification"
    ) in str(raised.value)


# ------------------------------------------------------------- gates from conf/validation


def _gate_config(*overrides: str):
    from mlflow_pipeline.config import load_config
    from tests.helpers import csv_overrides

    return load_config(csv_overrides(Path("customers.csv"), *overrides))


def _customers(rows: int = 200) -> pd.DataFrame:
    from tests.helpers import mixed_frame

    return mixed_frame(rows)


def _gate(df: pd.DataFrame, *overrides: str):
    from mlflow_pipeline import schemas

    cfg = _gate_config(*overrides)
    contract = schemas.infer_contract(df, "churned", "classification")
    return schemas.gate(contract, cfg)


@pytest.mark.parametrize(
    ("edit", "overrides", "expected"),
    [
        (
            lambda df: df.assign(age=df["age"].where(df.index >= 3, 250.0)),
            ("+validation.ranges.age={min: 0, max: 120}",),
            "column 'age', check in_range(0, 120): 3 row(s) (e.g. '250.0')",
        ),
        (
            lambda df: df.assign(city=df["city"].where(df.index >= 2, "Atlantis")),
            ("+validation.categories.city=[paris, lyon, nice]",),
            "column 'city', check allowed_categories(['paris', 'lyon', 'nice']): 2 row(s)",
        ),
        (
            lambda df: df.assign(customer_id=df["customer_id"].where(df.index >= 2, 7)),
            ("validation.unique=[customer_id]",),
            "column 'customer_id', check unique: 3 row(s)",
        ),
        (
            lambda df: df.assign(age=np.nan),
            (),
            "column 'age', check null_fraction <= 0.99: 200 of 200 missing (100.0%)",
        ),
        (
            lambda df: df.assign(income=df["income"].where(df.index >= 2, np.inf)),
            (),
            "column 'income', check finite: 2 row(s) (e.g. 'inf')",
        ),
        (
            lambda df: df.assign(income=df["income"].where(df.index >= 1, 1e300)),
            (),
            "column 'income', check max_abs_value(1e+15): 1 row(s) (e.g. '1e+300')",
        ),
        (
            lambda df: pd.concat([df, df.iloc[:100]], ignore_index=True),
            (),
            "check duplicate_rows <= 0.25: 100 of 300 rows repeat an earlier row (33.3%)",
        ),
    ],
    ids=["range", "categories", "unique", "all_null", "infinity", "huge", "duplicates"],
)
def test_rules_fail_naming_column_check_rows_and_examples(edit, overrides, expected):
    from mlflow_pipeline.data.validation import check

    df = edit(_customers())
    with pytest.raises(DataValidationError) as info:
        check(df, _gate(df, *overrides), stage="validate", dataset="raw")
    assert expected in str(info.value), str(info.value)
    report = info.value.report
    assert report["passed"] is False
    assert any(c["status"] == "failed" for c in report["checks"])


def test_a_datetime_column_mostly_not_dates_fails_with_the_share_and_examples():
    """A datetime role the values contradict (numbers, dates in a form no parser reads) would
    leave every date part missing: not_dates stops validate, naming column, share and
    examples. A few values that are not dates pass (the drift check counts them)."""
    from mlflow_pipeline import schemas
    from mlflow_pipeline.data.validation import check

    df = _customers()
    df["signed"] = pd.date_range("2024-01-01", periods=len(df)).astype(str)
    df.loc[df.index % 5 == 0, "signed"] = "soon"  # 20 %: kept
    roles = {"signed": {"role": "datetime"}, "income": {"role": "datetime"}}
    cfg = _gate_config()
    contract = schemas.infer_contract(df, "churned", "classification", roles)
    with pytest.raises(DataValidationError) as info:
        check(df, schemas.gate(contract, cfg), stage="validate", dataset="raw")
    message = str(info.value)
    assert (
        "column 'income', check not_dates <= 0.5: 171 of 171 value(s) present are not dates "
        "(100.0%; e.g. '" in message
    ), message
    assert "'signed'" not in message
    roles = {"signed": {"role": "datetime"}}
    contract = schemas.infer_contract(df, "churned", "classification", roles)
    strict = _gate_config("validation.max_not_dates_fraction=0.1")
    with pytest.raises(DataValidationError, match=r"'signed', check not_dates <= 0.1: 40 of 200 "):
        check(df, schemas.gate(contract, strict), stage="validate", dataset="raw")


def test_not_dates_settles_a_long_column_on_a_probe_only_when_its_share_is_clear():
    from mlflow_pipeline.schemas import NOT_DATES_PROBE, not_dates

    rows = 5 * NOT_DATES_PROBE
    dates = pd.Series(pd.date_range("2020-01-01", periods=rows, freq="h").astype(str))
    numbers = pd.Series(np.arange(rows) / 7).astype(str)
    clear, wrong = not_dates(dates, 0.5), not_dates(numbers, 0.5)
    assert (clear.count, clear.present, clear.within(0.5)) == (0, rows, True)
    assert clear.looked_at < rows  # settled on the probe
    assert wrong.count == wrong.looked_at < rows
    assert not wrong.within(0.5)
    # 40 % not dates: too near the limit for a probe to settle; every value is counted.
    mixed = dates.where(dates.index % 5 >= 2, "soon")
    exact = not_dates(mixed, 0.5)
    assert (exact.count, exact.looked_at, exact.examples) == (2 * rows // 5, rows, ("soon",))


def test_the_rules_pass_on_clean_data_and_every_check_is_reported():
    from mlflow_pipeline.data.validation import check

    df = _customers()
    gate = _gate(df, "+validation.ranges.age={min: 0, max: 120}", "validation.unique=[customer_id]")
    result = check(df, gate, stage="validate", dataset="raw")
    report = result.report()
    assert report["passed"] is True
    names = {(c["column"], c["check"]) for c in report["checks"]}
    assert ("age", "in_range(0, 120)") in names
    assert ("customer_id", "unique") in names
    assert (None, "duplicate_rows <= 0.25") in names
    assert {c["status"] for c in report["checks"]} == {"passed"}


def test_a_warning_check_is_reported_but_does_not_stop():
    from mlflow_pipeline.data.validation import check

    df = _customers()
    df.loc[:4, "age"] = 250.0
    gate = _gate(
        df, "+validation.ranges.age={min: 0, max: 120}", "+validation.severity.in_range=warning"
    )
    result = check(df, gate, stage="validate", dataset="raw")
    assert len(result.frame) == len(df)
    assert len(result.warnings) == 5
    assert set(result.warnings["check"]) == {"in_range(0, 120)"}
    statuses = {c["check"]: c["status"] for c in result.report()["checks"]}
    assert statuses["in_range(0, 120)"] == "warning"


def test_quarantine_drops_failing_rows_up_to_the_maximum():
    from mlflow_pipeline.data.validation import check

    df = _customers()
    df.loc[[3, 7], "age"] = -1.0
    gate = _gate(df, "+validation.ranges.age={min: 0, max: 120}")
    gate.quarantine = 0.01
    result = check(df, gate, stage="validate", dataset="raw")
    assert len(result.frame) == len(df) - 2
    assert list(result.quarantined["row"]) == [3, 7]
    assert set(result.quarantined["quarantine_reason"]) == {"age: in_range(0, 120)"}
    assert result.report()["quarantine"]["rows"] == 2

    df.loc[[10, 11], "age"] = -1.0  # 4 of 200 rows: 2 % > 1 %
    with pytest.raises(DataValidationError, match=r"Not quarantined: 4 of 200 row\(s\) \(2\.0%\)"):
        check(df, gate, stage="validate", dataset="raw")


def test_quarantine_never_drops_rows_for_a_column_or_dataset_check():
    from mlflow_pipeline.data.validation import check

    df = _customers().assign(age=np.nan)
    gate = _gate(df)
    gate.quarantine = 0.5
    with pytest.raises(DataValidationError, match="about a whole column or the whole dataset"):
        check(df, gate, stage="validate", dataset="raw")


def test_a_rule_for_an_unknown_column_is_a_config_error():
    from mlflow_pipeline.errors import ConfigError

    df = _customers()
    with pytest.raises(ConfigError, match=r"validation.ranges: no column 'agee'"):
        _gate(df, "+validation.ranges.agee={min: 0}")


def test_a_fraction_in_a_column_coerced_to_integers_is_refused_not_truncated():
    """A scoring batch whose integer column came as floats: 2.9 used to become 2 silently."""
    schema = pa.DataFrameSchema({"children": pa.Column("int64", nullable=True, coerce=True)})
    ok = check(pd.DataFrame({"children": [1.0, 2.0, 3.0]}), schema, stage="score", dataset="batch")
    assert ok.frame["children"].dtype == "int64"
    assert ok.frame["children"].tolist() == [1, 2, 3]
    batch = pd.DataFrame({"children": [2.0, 2.5, 2.9, 3.0]}, index=[10, 11, 12, 13])
    with pytest.raises(DataValidationError) as info:
        check(batch, schema, stage="score", dataset="batch")
    message = str(info.value)
    assert "[score]" in message
    assert "children" in message
    assert "whole_number" in message
    table = info.value.failure_cases
    assert table["failure_case"].tolist() == ["2.5", "2.9"]
    assert table["index"].tolist() == ["11", "12"]
    # Beyond the dtype's range: astype would wrap 300 to 44 in an int8.
    small = pa.DataFrameSchema({"n": pa.Column("int8", coerce=True)})
    with pytest.raises(DataValidationError, match=r"column 'n', check integer_range\(int8\)"):
        check(pd.DataFrame({"n": [1.0, 300.0]}), small, stage="score", dataset="batch")
    # A nullable integer dtype refuses it too: reported once, with the value and the row.
    nullable = pa.DataFrameSchema({"n": pa.Column("Int64", nullable=True, coerce=True)})
    with pytest.raises(DataValidationError) as info:
        check(pd.DataFrame({"n": [1.0, 2.5, None]}), nullable, stage="score", dataset="batch")
    assert info.value.failure_cases["check"].tolist() == ["whole_number"]
    assert info.value.failure_cases["index"].tolist() == ["1"]
    missing = check(pd.DataFrame({"n": [1.0, None]}), nullable, stage="score", dataset="batch")
    assert str(missing.frame["n"].dtype) == "Int64"


def test_whole_numbers_declared_with_missing_values_stay_whole_though_kept_as_floats():
    """Role integer set on a column with missing values is a float64 in the contract: a
    fraction there had passed every gate. An inferred role holds nothing: the column's float64
    takes fractions as it says (a schema file may declare float64, and the role still be
    inferred from whole values)."""
    from mlflow_pipeline.schemas import infer_contract

    train = pd.DataFrame(
        {
            "children": [0.0, 2.0, np.nan, 1.0],
            "rooms": [3.0, 2.0, np.nan, 1.0],
            "y": [0, 1, 0, 1],
        }
    )
    contract = infer_contract(
        train, "y", "classification", columns={"children": {"role": "integer"}}
    )
    assert str(contract.columns["children"].dtype) == "float64"
    assert "inferred" in contract.columns["rooms"].description  # role integer, inferred
    assert (
        check(train, contract, stage="validate", dataset="raw").frame["children"].isna().sum() == 1
    )
    batch = train.assign(children=[0.0, 2.5, np.nan, 1.0], rooms=[1.5, 2.0, np.nan, 3.25])
    with pytest.raises(DataValidationError) as info:
        check(batch, contract, stage="score", dataset="batch")
    table = info.value.failure_cases
    assert table[["column", "check", "failure_case", "index"]].values.tolist() == [
        ["children", "whole_number", "2.5", "1"]
    ]
