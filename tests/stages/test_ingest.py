"""ingest: bundled datasets and CSV files; every unreadable file is one DataError."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlflow_pipeline.config import load_config
from mlflow_pipeline.errors import ConfigError, DataError
from mlflow_pipeline.stages.ingest import ingest, load_bundled, read_csv
from tests.helpers import csv_overrides, mixed_frame


@pytest.mark.parametrize(
    ("data", "rows", "columns"), [("breast_cancer", 569, 31), ("diabetes", 442, 11)]
)
def test_bundled_datasets(data: str, rows: int, columns: int):
    raw = ingest(load_config([f"data={data}"]))["raw"]
    assert raw.shape == (rows, columns)
    assert "target" in raw.columns


def test_bundled_target_is_renamed_to_the_configured_name():
    raw = load_bundled("sklearn.datasets.load_diabetes", "progression")
    assert "progression" in raw.columns
    assert "target" not in raw.columns


def test_bundled_loader_that_cannot_be_imported():
    with pytest.raises(
        ConfigError, match=r"\[ingest\] data\.loader: cannot import 'sklearn\.nope'"
    ):
        load_bundled("sklearn.nope", "target")


def test_csv_with_categoricals_and_missing_values(tmp_path: Path):
    path = tmp_path / "customers.csv"
    mixed_frame().to_csv(path, index=False)
    raw = ingest(load_config(csv_overrides(path)))["raw"]
    assert raw.shape == (60, 6)
    assert pd.api.types.is_string_dtype(raw["city"])
    assert raw["city"].isna().sum() == 7
    assert raw["income"].isna().sum() == 9


def test_csv_read_options_are_passed_to_pandas(tmp_path: Path):
    path = tmp_path / "semi.csv"
    path.write_text("a;churned\n1,5;0\n2,5;1\n")
    cfg = load_config(
        [*csv_overrides(path), "+data.read_options.sep=';'", "+data.read_options.decimal=','"]
    )
    raw = ingest(cfg)["raw"]
    assert raw.to_dict("list") == {"a": [1.5, 2.5], "churned": [0, 1]}


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match=r"\[ingest\] data\.path: no file at .*nope\.csv"):
        read_csv(tmp_path / "nope.csv", {})


def test_directory_is_not_a_file(tmp_path: Path):
    with pytest.raises(DataError, match=r"is not a file"):
        read_csv(tmp_path, {})


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"is empty \(no header, no rows\)"):
        read_csv(path, {})


def test_file_that_is_not_utf8(tmp_path: Path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,y\nJos\xe9,1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text .*set data\.read_options\.encoding"):
        read_csv(path, {})
    assert read_csv(path, {"encoding": "latin-1"})["name"][0] == "Jos\xe9"


def test_file_that_cannot_be_parsed(tmp_path: Path):
    path = tmp_path / "ragged.csv"
    path.write_text('a,b\n1,"unterminated\n')
    with pytest.raises(DataError, match=r"cannot parse .*ragged\.csv as CSV"):
        read_csv(path, {})
