"""A corpus of bad inputs through the real CLI, each with the error it must give.

Every case writes one broken ``customers.csv`` (from the file the champion was trained on) and
runs the pipeline on it: a non-zero exit, one readable message naming the stage and what is
wrong (column, check), nothing registered, the champion unchanged, and nothing of the failing
stage left for the cache to reuse. To add a case, add a row to CASES.
"""

from __future__ import annotations

import csv
import io
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Run

from .helpers import (
    CHAMPION_DATA,
    CHAMPION_MODEL,
    CHAMPION_OVERRIDES,
    VENV_BIN,
    Store,
    assert_clean_failure,
    assert_ok,
    write_classification_csv,
    write_regression_csv,
)

pytestmark = pytest.mark.slow

# Writes a case's files: (the good customers.csv, where the bad one goes).
Writer = Callable[[Path, Path], None]


def _as_bytes(edit: Callable[[bytes], bytes]) -> Writer:
    """The good file's bytes, edited."""

    def write(good: Path, bad: Path) -> None:
        bad.write_bytes(edit(good.read_bytes()))

    return write


def _as_frame(edit: Callable[[pd.DataFrame], pd.DataFrame], **to_csv: object) -> Writer:
    """The good file as a frame, edited, written back with ``to_csv`` options."""

    def write(good: Path, bad: Path) -> None:
        edit(pd.read_csv(good)).to_csv(bad, index=False, **to_csv)

    return write


def _copy(good: Path, bad: Path) -> None:
    bad.write_bytes(good.read_bytes())


def _nothing(good: Path, bad: Path) -> None:
    """No file at all: ``data.path`` points at a path that does not exist."""


def _directory(good: Path, bad: Path) -> None:
    bad.mkdir()


def _with(column: str, rows: slice, values: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df[column] = df[column].astype(object)
        df.loc[rows, column] = values
        return df

    return edit


def _header_only(data: bytes) -> bytes:
    return data.split(b"\n", 1)[0] + b"\n"


def _cut_last_row(data: bytes) -> bytes:
    """The last row cut in half, as when a copy stops early: no line break at the end."""
    head, last = data.rstrip(b"\n").rsplit(b"\n", 1)
    return head + b"\n" + last[: len(last) // 2]


def _extra_field(data: bytes) -> bytes:
    """One more field on line 10 than in the header."""
    lines = data.split(b"\n")
    lines[9] += b",oops"
    return b"\n".join(lines)


def _latin1_row(good: Path, bad: Path) -> None:
    """Data row 5 (line 6) holds a Latin-1 encoded 'è'."""
    df = pd.read_csv(good)
    df["plan"] = df["plan"].astype(object)
    df.loc[4, "plan"] = "première"
    df.to_csv(bad, index=False, encoding="latin-1")


def _duplicate_header(good: Path, bad: Path) -> None:
    df = pd.read_csv(good)
    df["age_again"] = df["age"]
    df.to_csv(bad, index=False, header=["income", "age", "plan", "label", "age"])


def _quoted_then_cut(good: Path, bad: Path) -> None:
    """Every field quoted, the file cut inside the last row's last quoted field."""
    buffer = io.StringIO()
    pd.read_csv(good).to_csv(buffer, index=False, quoting=csv.QUOTE_ALL)
    bad.write_bytes(buffer.getvalue().encode("utf-8")[:-3])


def _duplicate_rows_flood(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.iloc[[0] * 200]], ignore_index=True)


def _constant_price(good: Path, bad: Path) -> None:
    """A regression dataset whose target never changes."""
    write_regression_csv(bad)
    _as_frame(_with("price", slice(None), 250.0))(bad, bad)


def _invalid_schema(good: Path, bad: Path) -> None:
    _copy(good, bad)
    (bad.parent / "schema.yaml").write_text("schema_type: dataframe\ncolumns: [income, label]\n")


@dataclass(frozen=True)
class Case:
    # Writes the bad customers.csv (and any file the overrides name) in the case's folder.
    write: Writer
    # The stage that fails, and what stderr must say besides "[<stage>]".
    stage: str
    message: tuple[str, ...]
    # More overrides; "{dir}" is the case's folder.
    overrides: tuple[str, ...] = ()
    # A gate failure: the report the failing run logs (failures/<dataset>.csv, the failure
    # table, or another report), and the column (or dataset-level check) it must name.
    report: tuple[str, str] | None = None
    # The data file's name (and so the model's): the champion's, unless the case needs a
    # dataset of another kind, with no champion.
    file: str = CHAMPION_DATA


CASES = {
    # ---- the file cannot be read: ingest
    "missing_file": Case(_nothing, "ingest", ("data.path: no file at", "missing_file")),
    "directory": Case(_directory, "ingest", ("data.path:", "is not a file")),
    "empty_file": Case(_as_bytes(lambda _: b""), "ingest", ("is empty (no header, no rows)",)),
    "header_only": Case(_as_bytes(_header_only), "ingest", ("has a header but no data rows",)),
    "wrong_delimiter": Case(
        _as_frame(lambda df: df, sep=";"),
        "ingest",
        (
            "has one column 'income;age;plan;label'",
            "it looks ';'-separated",
            "+data.read_options.sep=';'",
        ),
    ),
    "non_utf8": Case(
        _latin1_row,
        "ingest",
        ("is not UTF-8 text", "byte 0xe8 on line 6", "+data.read_options.encoding=latin-1"),
    ),
    "duplicate_header": Case(
        _duplicate_header,
        "ingest",
        ("has duplicate column names: 'age' (columns 2 and 5)",),
    ),
    "truncated_in_quotes": Case(
        _quoted_then_cut,
        "ingest",
        ("truncated or malformed", "the quoted field opened on line 301 is never closed"),
    ),
    "truncated_last_row": Case(
        _as_bytes(_cut_last_row),
        "ingest",
        ("looks truncated", "last line (data row 300)", "no line break at the end"),
    ),
    "extra_field_in_a_row": Case(
        _as_bytes(_extra_field),
        "ingest",
        ("truncated or malformed", "Expected 4 fields in line 10, saw 5"),
    ),
    # ---- what ingest hands over has no target: ingest's output gate
    "missing_target": Case(
        _as_frame(lambda df: df.drop(columns="label")),
        "ingest",
        ("dataset 'raw' failed validation", "column_in_dataframe", "'label'"),
        report=("failures/raw.csv", "label"),
    ),
    # ---- the columns differ from the champion's training data: profile
    "missing_feature": Case(
        _as_frame(lambda df: df.drop(columns="age")),
        "profile",
        ("changed against the champion's training data", "column 'age': missing"),
        report=("reports/profile.html", "age"),
    ),
    "extra_column": Case(
        lambda good, bad: write_classification_csv(bad, extra_column=True),
        "profile",
        ("column 'notes': not in the champion's training data",),
        report=("reports/profile.html", "notes"),
    ),
    # ---- values the data contract rejects: validate's gate
    "numbers_as_text": Case(
        lambda good, bad: write_classification_csv(bad, text_in_numeric_rows=5),
        "validate",
        ("column 'income', check coerce_dtype('float64'): 5 row(s)", "'n/a (refused)'"),
        report=("failures/raw.csv", "income"),
    ),
    "all_null_column": Case(
        _as_frame(_with("age", slice(None), np.nan)),
        "validate",
        ("column 'age', check null_fraction", "300 of 300 missing"),
        report=("failures/raw.csv", "age"),
    ),
    "infinities": Case(
        _as_frame(_with("income", slice(0, 2), [np.inf, -np.inf, np.inf])),
        "validate",
        ("column 'income', check finite: 3 row(s)", "'inf', '-inf'"),
        report=("failures/raw.csv", "income"),
    ),
    "huge_values": Case(
        _as_frame(_with("income", slice(0, 2), 1e300)),
        "validate",
        ("column 'income', check max_abs_value", "'1e+300'"),
        report=("failures/raw.csv", "income"),
    ),
    "duplicate_rows_flood": Case(
        _as_frame(_duplicate_rows_flood),
        "validate",
        ("check duplicate_rows", "201 of 500 rows repeat an earlier row"),
        report=("failures/raw.csv", "duplicate_rows"),
    ),
    "single_class": Case(
        _as_frame(_with("label", slice(None), 0)),
        "validate",
        ("check target 'label' has at least 2 classes",),
        report=("failures/raw.csv", "label"),
    ),
    "constant_target": Case(
        _constant_price,
        "validate",
        ("check target 'price' is not constant",),
        overrides=("data.target=price", "data.task=regression"),
        report=("failures/raw.csv", "price"),
        file="houses.csv",
    ),
    # ---- a schema file that is not a schema: validate
    "invalid_schema": Case(
        _invalid_schema,
        "validate",
        ("data.schema:", "schema.yaml", "is not a valid pandera YAML schema"),
        overrides=("data.schema={dir}/schema.yaml",),
    ),
}


def _data_path(store: Store, name: str, case: Case) -> Path:
    return store.root / "bad" / name / case.file


def _run_case(
    store: Store, name: str, case: Case, *, write: bool = True
) -> subprocess.CompletedProcess[str]:
    """Write the case's files (unless ``write`` is false) and run the pipeline on them, in an
    experiment of the case's own."""
    path = _data_path(store, name, case)
    path.parent.mkdir(parents=True, exist_ok=True)
    if write:
        case.write(store.root / CHAMPION_DATA, path)
    return store.pipeline(
        *CHAMPION_OVERRIDES,
        f"tracking.experiment_name=bad_{name}",
        f"data.path={path}",
        *(o.format(dir=path.parent) for o in case.overrides),
    )


def _pipeline_run(store: Store, name: str) -> Run:
    experiment = store.client.get_experiment_by_name(f"bad_{name}")
    assert experiment is not None, f"no pipeline run for {name}"
    [run] = store.client.search_runs(
        [experiment.experiment_id], "tags.`pipeline.kind` = 'pipeline'"
    )
    return run


def _assert_registry_unchanged(store: Store) -> None:
    assert store.model_names() == {CHAMPION_MODEL}
    assert store.version_numbers(CHAMPION_MODEL) == ["1"]
    assert store.alias(CHAMPION_MODEL, "champion") == "1"
    assert store.alias(CHAMPION_MODEL, "challenger") == "1"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(champion_store: Store, name: str) -> None:
    case = CASES[name]
    result = _run_case(champion_store, name, case)

    assert_clean_failure(result, f"[{case.stage}]", *case.message)
    assert result.stderr.count("mlflow-pipeline: error:") == 1, result.stderr
    _assert_registry_unchanged(champion_store)

    pipeline = _pipeline_run(champion_store, name)
    assert pipeline.info.status == "FAILED"
    assert f"[{case.stage}]" in pipeline.data.tags["pipeline.error"]
    stages = champion_store.stage_runs(pipeline.info.run_id)
    assert "register" not in stages
    failed = stages[case.stage]
    assert failed.info.status == "FAILED"
    assert f"[{case.stage}]" in failed.data.tags["pipeline.error"]
    assert "pipeline.cache.stored" not in failed.data.tags, "a failed run is reusable"
    assert all(r.info.status == "FINISHED" for s, r in stages.items() if s != case.stage)

    if case.report is not None:
        _assert_report_names(champion_store, failed, *case.report)


def _assert_report_names(store: Store, run: Run, path: str, name: str) -> None:
    assert path in store.artifacts(run.info.run_id)
    text = store.text(run.info.run_id, path)
    if not path.startswith("failures/"):
        assert name in text, f"{name!r} not in {path}"
        return
    table = pd.read_csv(io.StringIO(text), dtype=str)
    # A column check names the column in `column`; a dataset-level check has no column, and
    # names it (or itself) in its check name, or as the failure case (a missing column).
    named = (
        table["column"].eq(name)
        | table["check"].str.contains(name, regex=False)
        | table["failure_case"].eq(name)
    )
    assert named.any(), table.head().to_string()


def test_fixed_file_is_recomputed(champion_store: Store) -> None:
    """After a gate failure, the file fixed in place: the failing stage runs again (nothing of
    the failed run is reused) and the pipeline succeeds."""
    name = "single_class"
    case = CASES[name]
    assert_clean_failure(_run_case(champion_store, name, case), f"[{case.stage}]")

    _copy(champion_store.root / CHAMPION_DATA, _data_path(champion_store, name, case))
    assert_ok(_run_case(champion_store, name, case, write=False))
    experiment = champion_store.client.get_experiment_by_name(f"bad_{name}")
    failed, fixed = champion_store.client.search_runs(
        [experiment.experiment_id],
        "tags.`pipeline.kind` = 'pipeline'",
        order_by=["attributes.start_time ASC"],
    )
    assert (failed.info.status, fixed.info.status) == ("FAILED", "FINISHED")
    rerun = champion_store.stage_runs(fixed.info.run_id)[case.stage]
    assert rerun.info.status == "FINISHED"
    assert rerun.data.tags["pipeline.cache.status"] != "hit"
    assert rerun.data.tags["pipeline.cache.stored"] == "true"


def test_category_never_seen_in_training_at_scoring_time(champion_store: Store) -> None:
    """The 21st kind of bad input only exists at scoring time: a category the champion never
    saw. Scoring validates the file with the champion's training contract and refuses it."""
    bad = champion_store.root / "bad" / "unseen" / "to_score.csv"
    bad.parent.mkdir(parents=True)
    frame = pd.read_csv(champion_store.root / CHAMPION_DATA).drop(columns=["label"]).head(40)
    frame.loc[[3, 8, 21], "plan"] = "enterprise"
    frame.to_csv(bad, index=False)
    out = bad.parent / "predictions.csv"
    result = champion_store.run(
        VENV_BIN / "mlflow-pipeline",
        "score",
        f"models:/{CHAMPION_MODEL}@champion",
        "--input",
        bad,
        "--output",
        out,
    )
    assert_clean_failure(
        result,
        "[score] dataset 'input' failed validation",
        "column 'plan', check seen_in_training: 3 row(s) (e.g. 'enterprise')",
    )
    assert result.stderr.count("mlflow-pipeline: error:") == 1, result.stderr
    assert not out.exists(), "no partial output"
    assert list(out.parent.iterdir()) == [bad]
    _assert_registry_unchanged(champion_store)
