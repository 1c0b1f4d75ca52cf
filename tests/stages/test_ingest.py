"""ingest: bundled datasets and CSV files; every unreadable file is one DataError."""

from __future__ import annotations

import codecs
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


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_file_with_a_byte_order_mark_is_advised_its_encoding(tmp_path: Path, encoding: str):
    # A spreadsheet's "Unicode text" export: latin-1 would read its BOM and NULs as text.
    path = tmp_path / "export.csv"
    text = "name,y\nJos\xe9,1\n"
    if encoding == "utf-16-be":  # no BOM of its own: written with one, as Windows does
        path.write_bytes(codecs.BOM_UTF16_BE + text.encode(encoding))
    else:
        path.write_bytes(text.encode(encoding))
    advice = "utf-32" if encoding == "utf-32" else "utf-16"
    with pytest.raises(DataError) as caught:
        read_csv(path, {})
    assert (
        f"(+data.read_options.encoding={advice} on the command line, as its first bytes, a "
        f"{advice.upper()} byte order mark, say)"
    ) in str(caught.value)
    assert read_csv(path, {"encoding": advice})["name"][0] == "Jos\xe9"


def test_bad_byte_is_located_in_the_file_not_in_a_block(tmp_path: Path):
    # pandas decodes in blocks and reports the position inside the block.
    path = tmp_path / "late.csv"
    body = "name,y\n" + "\xe9t\xe9,1\n" * 200_000
    path.write_bytes(body.encode("utf-8") + "Jos\xe9,1\n".encode("latin-1"))
    offset = len(body.encode("utf-8")) + 3
    with pytest.raises(
        DataError,
        match=rf"byte 0xe9 on line 200002, offset {offset}: invalid continuation byte",
    ):
        read_csv(path, {})


def test_unknown_encoding_or_option_is_a_config_error(tmp_path: Path):
    path = tmp_path / "ok.csv"
    path.write_text("a,y\n1,0\n")
    with pytest.raises(ConfigError, match=r"data\.read_options\.encoding: unknown encoding"):
        read_csv(path, {"encoding": "klingon"})
    with pytest.raises(ConfigError, match=r"data\.read_options: .*'bogus'"):
        read_csv(path, {"bogus": 1})


def test_header_without_rows(tmp_path: Path):
    path = tmp_path / "header.csv"
    path.write_text("a,b,y\n")
    with pytest.raises(DataError, match=r"header\.csv has a header but no data rows"):
        read_csv(path, {})


@pytest.mark.parametrize(("sep", "typed"), [(";", ";"), ("\t", "\\t"), ("|", "|")])
def test_other_separator_is_named(tmp_path: Path, sep: str, typed: str):
    path = tmp_path / "other.csv"
    path.write_text(f"a{sep}b{sep}y\n1{sep}2{sep}0\n")
    with pytest.raises(DataError, match=r"has one column") as caught:
        read_csv(path, {})
    assert str(caught.value) == (
        f"[ingest] data.path: {path} has one column {f'a{sep}b{sep}y'!r}: it looks "
        f"'{typed}'-separated; set data.read_options.sep='{typed}' "
        f"(on the command line, quoted for the shell: \"+data.read_options.sep='{typed}'\")"
    )
    # As the override types it: a tab arrives as backslash + t.
    assert read_csv(path, {"sep": typed}).columns.tolist() == ["a", "b", "y"]


def test_separator_set_by_the_user_is_not_second_guessed(tmp_path: Path):
    path = tmp_path / "one.csv"
    path.write_text("a;b\n1;2\n")
    assert read_csv(path, {"sep": ","}).columns.tolist() == ["a;b"]


def test_duplicate_column_names(tmp_path: Path):
    # pandas alone would rename them to a.1, b.1, a.2.
    path = tmp_path / "dup.csv"
    path.write_text("a,b,y,a,b,a\n1,2,0,3,4,5\n")
    with pytest.raises(
        DataError,
        match=r"has duplicate column names: 'a' \(columns 1, 4 and 6\), 'b' \(columns 2 and 5\)$",
    ):
        read_csv(path, {})


def test_file_cut_inside_a_quoted_field(tmp_path: Path):
    path = tmp_path / "ragged.csv"
    path.write_text('a,b\n1,2\n3,"unterminated\n4,5\n')
    with pytest.raises(
        DataError,
        match=r"cannot parse .*ragged\.csv as CSV: the file is truncated or malformed: "
        r"the quoted field opened on line 3 is never closed",
    ):
        read_csv(path, {})


def test_row_with_more_fields_than_the_header(tmp_path: Path):
    path = tmp_path / "long.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(
        DataError, match=r"truncated or malformed: Expected 2 fields in line 3, saw 3"
    ):
        read_csv(path, {})


def test_file_cut_in_its_last_row(tmp_path: Path):
    path = tmp_path / "cut.csv"
    path.write_text("a,b,y\n1,2,0\n3,4,1\n5,6")
    with pytest.raises(
        DataError,
        match=r"cut\.csv looks truncated: its last line \(data row 3\) has 2 of 3 fields "
        r"and no line break at the end",
    ):
        read_csv(path, {})


def test_last_row_without_a_line_break_is_fine_when_complete(tmp_path: Path):
    path = tmp_path / "whole.csv"
    path.write_text("a,b,y\n1,2,0\n5,6,")
    assert read_csv(path, {}).shape == (2, 3)


def test_last_row_with_a_quoted_line_break_is_not_mistaken_for_a_cut(tmp_path: Path):
    path = tmp_path / "notes.csv"
    path.write_text('a,note,y\n1,"one\ntwo",0\n2,"three\nfour",1')
    assert read_csv(path, {})["note"].tolist() == ["one\ntwo", "three\nfour"]


def test_checks_work_with_the_pyarrow_engine(tmp_path: Path):
    path = tmp_path / "dup.csv"
    path.write_text("a,a,y\n1,2,0\n")
    with pytest.raises(DataError, match=r"duplicate column names: 'a' \(columns 1 and 2\)"):
        read_csv(path, {"engine": "pyarrow", "header": 0})
    path.write_text("a,b,y\n1,2,0\n")
    assert read_csv(path, {"engine": "pyarrow"}).shape == (1, 3)


def test_a_target_the_file_does_not_have_is_named_with_the_likeliest_column(tmp_path, caplog):
    """The output gate stops the run (column_in_dataframe); ingest first says which setting is
    wrong and what it probably meant."""
    path = tmp_path / "fair.csv"
    pd.DataFrame({"age": [32, 27], "had_affair": ["yes", "no"]}).to_csv(path, index=False)
    cfg = load_config(
        ["data=csv", f"data.path={path}", "data.target=had_afair", "data.task=classification"]
    )
    raw = ingest(cfg)["raw"]
    assert list(raw.columns) == ["age", "had_affair"]
    assert (
        f"data.target: no column 'had_afair' in {path} (columns: age, had_affair); "
        "did you mean data.target=had_affair?"
    ) in caplog.text


def test_a_misspelled_read_option_is_named_with_the_one_meant(tmp_path: Path):
    path = tmp_path / "semi.csv"
    path.write_text("a;y\n1;0\n")
    with pytest.raises(
        ConfigError, match=r"did you mean data\.read_options\.sep \(not seperator\)"
    ):
        read_csv(path, {"seperator": ";"})
