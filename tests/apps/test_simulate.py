"""The daily-retraining simulation's pure parts on real data: daily batches, windows, the shift
(checked with the real drift code), the table; and the options refused before anything runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlflow_pipeline.apps.simulate import (
    DEFAULT_SHIFT_STD,
    DayResult,
    _day_overrides,
    daily_batches,
    day_data,
    describe_simulation,
    make_shift,
    render_table,
    shift_column_of,
    simulate,
    window_rows,
    write_table,
)
from mlflow_pipeline.cli.commands import simulate_main
from mlflow_pipeline.config import load_config
from mlflow_pipeline.data import drift
from mlflow_pipeline.errors import ConfigError, PipelineError
from tests.e2e.helpers import write_classification_csv
from tests.helpers import read_table

ROWS = 1500
DAYS = 5


@pytest.fixture(scope="module")
def customers(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The e2e customers file (income and age with gaps, plan, label), with a row id."""
    path = write_classification_csv(tmp_path_factory.mktemp("data") / "c.csv", rows=ROWS)
    frame = pd.read_csv(path)
    frame.insert(0, "row_id", np.arange(len(frame)))
    return frame


def ids(frame: pd.DataFrame) -> list[int]:
    return frame["row_id"].tolist()


# ---- daily batches ---------------------------------------------------------------------------


def test_equal_days_use_every_row_once_in_a_shuffled_order(customers):
    batches = daily_batches(customers, 7, seed=42)
    assert [len(b) for b in batches] == [215, 215, 214, 214, 214, 214, 214]
    seen = [i for b in batches for i in ids(b)]
    assert sorted(seen) == list(range(ROWS))
    assert seen != list(range(ROWS))  # shuffled, not the file's order
    # Whole rows move together.
    first = batches[0].iloc[0]
    original = customers.loc[customers["row_id"] == first["row_id"]].iloc[0]
    pd.testing.assert_series_equal(first, original, check_names=False)


def test_the_shuffle_is_deterministic_with_the_seed(customers):
    one = daily_batches(customers, DAYS, seed=42)
    again = daily_batches(customers, DAYS, seed=42)
    other = daily_batches(customers, DAYS, seed=7)
    assert [ids(b) for b in one] == [ids(b) for b in again]
    assert [ids(b) for b in one] != [ids(b) for b in other]


def test_rows_per_day_takes_consecutive_chunks_and_leaves_the_rest(customers):
    all_days = daily_batches(customers, 1, seed=42)[0]
    batches = daily_batches(customers, 4, rows_per_day=100, seed=42)
    assert [len(b) for b in batches] == [100] * 4
    assert [i for b in batches for i in ids(b)] == ids(all_days)[:400]


@pytest.mark.parametrize(
    ("days", "rows_per_day", "message"),
    [
        (4, 400, "4 day\\(s\\) of 400 row\\(s\\) a day need 1600 rows; the data has 1500"),
        (1501, None, "1501 day\\(s\\) of one row a day need 1501 rows"),
        (0, None, "--days must be at least 1, got 0"),
        (3, 0, "--rows-per-day must be at least 1, got 0"),
    ],
)
def test_not_enough_rows_or_days_is_a_config_error(customers, days, rows_per_day, message):
    with pytest.raises(ConfigError, match=message):
        daily_batches(customers, days, rows_per_day=rows_per_day, seed=42)


# ---- windows -------------------------------------------------------------------------------


def test_a_day_trains_on_its_batch_and_the_window_before_it_oldest_first(customers):
    batches = daily_batches(customers, DAYS, seed=42)
    assert ids(window_rows(batches, 1, 2)) == ids(batches[0])
    assert ids(window_rows(batches, 2, 2)) == ids(batches[0]) + ids(batches[1])
    assert ids(window_rows(batches, 4, 2)) == ids(batches[1]) + ids(batches[2]) + ids(batches[3])
    assert ids(window_rows(batches, 5, 0)) == ids(batches[4])
    assert len(window_rows(batches, 5, 10)) == ROWS


def test_a_negative_window_is_a_config_error(customers):
    batches = daily_batches(customers, DAYS, seed=42)
    with pytest.raises(ConfigError, match="--window must be 0 or more, got -1"):
        window_rows(batches, 2, -1)


# ---- the shift -----------------------------------------------------------------------------


def test_the_default_shift_column_is_the_first_numeric_feature(customers):
    assert shift_column_of(customers, "label") == "row_id"
    assert shift_column_of(customers, "label", ["row_id"]) == "income"
    with pytest.raises(ConfigError, match="no numeric feature to shift"):
        shift_column_of(customers[["plan", "label"]], "label")


def test_the_shift_is_in_standard_deviations_of_the_whole_column(customers):
    shift = make_shift(customers, 4, "income", 1.5, target="label")
    assert shift.amount == pytest.approx(1.5 * customers["income"].std())
    assert 20 < shift.amount < 25  # income ~ N(50, 15)


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ("label", "'label' is the target; shift a feature"),
        ("plan", "'plan' is not numeric"),
        ("nope", "no column 'nope' in the data"),
        ("constant", "'constant' has no spread"),
    ],
)
def test_a_column_that_cannot_be_shifted_is_a_config_error(customers, column, message):
    frame = customers.assign(constant=1.0)
    with pytest.raises(ConfigError, match=message):
        make_shift(frame, 2, column, 1.5, target="label")


def test_every_row_of_a_shifted_day_moves_and_nothing_else_does(customers):
    batches = daily_batches(customers, DAYS, seed=42)
    shift = make_shift(customers, 4, "income", 1.5, target="label")
    for day in (1, 2, 3):
        pd.testing.assert_frame_equal(
            day_data(batches, day, 2, shift), window_rows(batches, day, 2)
        )
    for day in (4, 5):
        plain = window_rows(batches, day, 2)
        moved = day_data(batches, day, 2, shift)
        assert ids(moved) == ids(plain)
        # the window's rows too: the source changed, not only today's batch
        np.testing.assert_allclose(moved["income"], plain["income"] + shift.amount)
        assert moved["income"].isna().sum() == plain["income"].isna().sum() > 0
        pd.testing.assert_frame_equal(moved.drop(columns="income"), plain.drop(columns="income"))


def test_the_default_shift_is_drift_on_that_column_only_and_plain_days_are_not(customers):
    """What the simulation relies on, through the real drift code and default thresholds:
    the first shifted day is flagged against any earlier day, on the shifted column only;
    unshifted days are not flagged against each other, nor shifted ones."""
    frame = customers.drop(columns="row_id")
    cfg = load_config(
        ["data=csv", "data.path=c.csv", "data.target=label", "data.task=classification"]
    )
    batches = daily_batches(frame, DAYS, seed=42)
    shift = make_shift(frame, 4, shift_column_of(frame, "label"), DEFAULT_SHIFT_STD, target="label")
    days = {day: day_data(batches, day, 2, shift) for day in range(1, DAYS + 1)}
    profiles = {day: drift.profile(df, cfg) for day, df in days.items()}
    about = {"model": "c", "version": "1", "alias": "champion", "profile_run": "r"}

    def drifted(reference: int, day: int) -> list[str]:
        result = drift.compare(profiles[reference], days[day], profiles[day], cfg, about=about)
        return result["drifted"]

    for reference in (1, 2, 3):
        assert drifted(reference, 4) == ["income"]
        for day in range(reference + 1, 4):
            assert drifted(reference, day) == []
    assert drifted(4, 5) == []


# ---- the table -----------------------------------------------------------------------------


def day_result(day: int, **changes) -> DayResult:
    values = dict(
        day=day,
        rows=300 * min(day, 3),
        shifted=False,
        drift="no",
        drifted=(),
        metric="roc_auc",
        challenger_score=0.9,
        champion_score=0.89,
        version=str(day),
        decision="promoted",
        champion_after=str(day),
        reason="challenger roc_auc=0.9 beats champion",
        pipeline_run_id=f"run{day}",
        data=f"/sim/day-{day}/data.csv",
    )
    return DayResult(**{**values, **changes})


RESULTS = [
    day_result(
        1,
        drift="not checked",
        champion_score=None,
        decision="promoted (no champion yet)",
        reason="no champion yet",
    ),
    day_result(
        2, challenger_score=0.91234567, champion_score=0.9, decision="kept v1", champion_after="1"
    ),
    day_result(
        3,
        shifted=True,
        drift="yes",
        drifted=("income", "age"),
        challenger_score=None,
        champion_score=None,
        version=None,
        decision="failed: [profile] drift detected against c v1 (@champion)\n  - feature 'income'",
        champion_after="1",
        reason="[profile] drift detected against c v1 (@champion)\n  - feature 'income'",
    ),
]


def test_the_table_has_a_row_per_day_aligned_with_the_metric_in_the_header():
    lines = render_table(RESULTS).splitlines()
    assert lines == [
        "day  rows  drift             version  challenger roc_auc  champion roc_auc  champion after"
        "  decision",
        "  1   300  not checked       v1                   0.9000                 -  v1"
        "              promoted (no champion yet)",
        "  2   600  no                v2                   0.9123            0.9000  v1"
        "              kept v1",
        "  3   900  yes: income, age  -                         -                 -  v1"
        "              failed: [profile] drift detected against c v1 (@champion)",
    ]


def test_the_summary_names_the_file_and_the_final_champion():
    text = describe_simulation(RESULTS)
    assert text.startswith(render_table(RESULTS))
    assert text.splitlines()[-1] == (
        "3 day(s), 1 failed; champion after day 3: v1; table written to /sim/simulation.csv"
    )


def test_the_table_file_reads_back_the_same(tmp_path):
    path = write_table(RESULTS, tmp_path / "out" / "simulation.csv")
    assert read_table(path) == RESULTS
    frame = pd.read_csv(path)
    assert frame["drifted"].tolist()[2] == "income;age"
    assert frame["decision"].tolist()[:2] == ["promoted (no champion yet)", "kept v1"]


# ---- refused before anything runs ----------------------------------------------------------


def data_overrides(csv, *changes: str) -> list[str]:
    """The simulation's data, named as for the pipeline."""
    return [f"data.path={csv}", "data.target=label", "data.task=classification", *changes]


@pytest.mark.parametrize(
    ("options", "overrides", "message"),
    [
        ({}, ["data.target=churned"], "data.target: no column 'churned' in .*customers.csv"),
        ({}, ["data.path=nosuch.csv"], "data.path: no file at .*nosuch.csv"),
        ({}, ["data=diabetes"], "data=diabetes is a dataset bundled with scikit-learn.*data=csv"),
        ({"shift_day": 6}, [], "--shift-day must be one of the days 1..5, got 6"),
        ({"shift_column": "income"}, [], "--shift-column needs --shift-day"),
        ({"window": -1}, [], "--window must be 0 or more"),
        ({"shift_day": 2, "shift_column": "plan"}, [], "'plan' is not numeric"),
        ({"rows_per_day": 400}, [], "need 2000 rows; the data has 1500"),
        ({}, ["model.n_estimatorz=3"], "n_estimatorz"),
    ],
)
def test_bad_options_fail_before_any_day_runs(tmp_path, options, overrides, message):
    csv = write_classification_csv(tmp_path / "customers.csv", rows=ROWS)
    with pytest.raises(PipelineError, match=message):
        simulate(DAYS, data_overrides(csv, *overrides), workdir=tmp_path / "sim", **options)
    assert not list((tmp_path / "sim").glob("day-*"))


def test_a_bundled_dataset_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="data=diabetes: simulate replays a CSV file"):
        simulate(DAYS, ["data=diabetes"], workdir=tmp_path / "sim")
    assert not (tmp_path / "sim").exists()


def test_data_overrides_are_required(tmp_path):
    with pytest.raises(
        ConfigError, match="missing required config value.*data.path, data.target, data.task"
    ):
        simulate(DAYS, ["model=logistic_regression"], workdir=tmp_path / "sim")


def test_every_day_runs_on_its_own_file_named_after_the_source(tmp_path):
    """The days' overrides: the user's (less the source's data option, path and read
    options), then the source's name, target and task; each day adds its own path."""
    csv = tmp_path / "daily" / "2026-12-01.csv"
    csv.parent.mkdir()
    csv.write_text("income;label\n1.0;0\n2.0;1\n")
    source = load_config(
        ["data=csv", f"data.path={csv}", "data.target=label", "data.task=classification",
         "+data.read_options.sep=';'"]
    )  # fmt: skip
    given = ["data=csv", *data_overrides(csv, "+data.read_options.sep=';'", "model=random_forest")]
    days = _day_overrides(source, tmp_path / "sim", given)
    assert days == [
        "data=csv",
        f"tracking.root='{tmp_path / 'sim'}'",
        "model=random_forest",
        "data.name='daily'",  # not the date: the same model every day
        "data.target='label'",
        "data.task=classification",
    ]
    day = load_config([*days, f"data.path={tmp_path / 'sim' / 'day-1' / 'data.csv'}"])
    assert (day.data.name, day.registry.model_name, day.tracking.experiment_name) == ("daily",) * 3
    assert day.data.read_options == {}  # the day files are plain CSV


def test_the_old_flags_are_overrides(tmp_path, capsys, monkeypatch):
    """``--data F --target T --task K --name N``: deprecated, each the override it names."""
    csv = write_classification_csv(tmp_path / "customers.csv", rows=ROWS)
    monkeypatch.chdir(tmp_path)
    args = ["--days", "3", "--shift-day", "4", "--data", str(csv), "--target", "label"]
    assert simulate_main([*args, "--task", "classification", "--name", "cust"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[:4] == [
        f"mlflow-pipeline: note: --data is deprecated; use data.path={csv}",
        "mlflow-pipeline: note: --target is deprecated; use data.target=label",
        "mlflow-pipeline: note: --task is deprecated; use data.task=classification",
        "mlflow-pipeline: note: --name is deprecated; use data.name=cust",
    ]
    assert err[4:] == ["mlflow-pipeline: error: --shift-day must be one of the days 1..3, got 4"]


def test_a_model_that_already_has_versions_is_refused(tmp_path, tracking_store):
    """A simulation starts with no champion, and must not move the aliases of a real model."""
    csv = write_classification_csv(tmp_path / "customers.csv", rows=ROWS)
    client = tracking_store.client()
    client.create_registered_model("customers")
    client.create_model_version("customers", source=str(tmp_path))
    with pytest.raises(ConfigError, match="'customers' already has versions in sqlite:///"):
        simulate(DAYS, data_overrides(csv), workdir=tmp_path / "sim")
    assert not list((tmp_path / "sim").glob("day-*"))
