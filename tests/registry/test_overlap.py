"""Which test rows the champion trained on: row matching across dtypes and missing values, and
the champion's training data found through its lineage."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.datasets import load_wine

from mlflow_pipeline.registry.comparison import Predictions
from mlflow_pipeline.registry.overlap import (
    same_training_data,
    training_inputs,
    training_overlap,
)

KINDS = {"train": "frame", "test": "frame", "contract": "text", "model": "model"}


def lineage(train_digest: str) -> dict:
    return {
        "stages": {
            "split": {"outputs": {"train": train_digest, "test": "t"}, "inputs_from": {}},
            "train": {
                "outputs": {"model": "m"},
                "inputs_from": {"train": "split-run", "contract": "validate-run"},
            },
        },
        "data_digests": {"train": train_digest, "test": "t", "model": "m"},
    }


def test_the_rows_found_are_those_a_merge_finds_on_a_real_table():
    wine = load_wine(as_frame=True).frame
    rng = np.random.default_rng(0)
    trained_on = wine.iloc[rng.permutation(len(wine))[:120]]
    test = wine.iloc[rng.permutation(len(wine))[:40]].reset_index(drop=True)
    merged = test.merge(trained_on.drop_duplicates(), how="left", indicator=True)
    expected = (merged["_merge"] == "left_only").to_numpy()

    found = training_overlap(test, [trained_on])
    assert found is not None
    assert found.rows.tolist() == expected.tolist()
    assert found.seen == (~expected).sum()
    assert found.note == (
        f"the champion trained on {found.seen} of the 40 test rows: both models compared on "
        f"the other {expected.sum()}"
    )
    predictions = Predictions(np.arange(40), np.arange(80).reshape(40, 2), [0, 1])
    assert found.of(predictions).y_pred.tolist() == np.flatnonzero(expected).tolist()
    assert found.as_dict() == {
        "note": found.note,
        "rows_seen_by_champion": found.seen,
        "rows_seen_by_challenger_only": 0,
        "rows_compared": int(expected.sum()),
        "rows": 40,
    }


def test_rows_match_across_int_and_float_and_missing_values():
    trained_on = pd.DataFrame({"age": [40, 51, 62], "plan": ["a", None, "c"], "label": [0, 1, 0]})
    test = pd.DataFrame(
        {
            "age": [40.0, 51.0, 62.0, 40.0],  # read as float64 today (a missing value elsewhere)
            "plan": pd.array(["a", None, "b", "a"], dtype="string"),
            "label": [0, 1, 0, 1],
            "new_column": [1, 2, 3, 4],  # not in the champion's data: not compared
        }
    )
    found = training_overlap(test, [trained_on])
    assert found is not None
    assert found.rows.tolist() == [False, False, True, True]


def test_dates_durations_categories_and_booleans_match_whatever_their_dtype_today():
    """pandas writes a column of dates as text in one format for the whole column: a date at
    midnight reads '2024-01-01' beside other midnights, '2024-01-01 00:00:00' beside a time."""
    when = pd.to_datetime(["2024-01-01", "2024-01-02 10:00"], format="ISO8601")
    trained_on = pd.DataFrame(
        {
            "t": when,
            "d": pd.to_timedelta(["1 day", "1 day 00:00:01"]),
            "c": pd.Categorical([1, 2]),
            "b": [True, False],
            "y": [1, 1],
        }
    )
    test = pd.DataFrame(
        {
            "t": when[:1],
            "d": pd.to_timedelta(["1 day"]),
            "c": [1.0],
            "b": pd.array([1], dtype="Int64"),
            "y": [1],
        }
    )
    found = training_overlap(test, [trained_on])
    assert found is not None
    assert found.seen == 1
    # The same instant in another zone is the same row.
    utc = trained_on.assign(t=when.tz_localize("UTC"))
    tokyo = test.assign(t=when[:1].tz_localize("UTC").tz_convert("Asia/Tokyo"))
    assert training_overlap(tokyo, [utc]).seen == 1


def test_a_record_on_both_sides_of_this_runs_split_is_left_out_too():
    """Duplicate records: today's test rows may be in the challenger's own training data."""
    test = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    champion = pd.DataFrame({"x": [1.0], "y": [0]})
    challenger = pd.DataFrame({"x": [1.0, 3.0], "y": [0, 0]})  # row 0 counted once
    found = training_overlap(test, [champion], [challenger])
    assert found.rows.tolist() == [False, True, False, True]
    assert (found.seen, found.seen_by_challenger) == (1, 1)
    assert found.note == (
        "the champion trained on 1 of the 4 test rows and the challenger on 1 more (the same "
        "records on both sides of its split): both models compared on the other 2"
    )
    assert training_overlap(test, [], [challenger]).seen_by_challenger == 2


def test_no_row_in_common_is_no_overlap_and_every_row_is_all():
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]})
    assert training_overlap(frame, [frame + 10]) is None
    assert training_overlap(frame, [pd.DataFrame({"z": [1]})]) is None
    every = training_overlap(frame, [frame])
    assert every is not None
    assert every.compared == 0
    assert every.note == "the champion trained on all 2 test rows: no row to compare them on"


def test_the_training_data_is_what_the_stage_that_made_the_model_read():
    assert training_inputs(lineage("a"), KINDS) == {"train": "split-run"}  # frames only
    # A model calibrated after training learnt from both stages' frames.
    calibrated = {
        "stages": {
            "calibrate": {"outputs": {"model": "m"}, "inputs_from": {"raw": "t", "calib": "c"}},
            "train": {"outputs": {"raw": "r"}, "inputs_from": {"train": "s"}},
        }
    }
    kinds = {**KINDS, "raw": "model", "calib": "frame"}
    assert training_inputs(calibrated, kinds) == {"calib": "c", "train": "s"}
    # Refit on every row (train reads 'validated'): not the same data as a split's 'train'.
    refit = lineage("a")
    refit["stages"]["train"]["inputs_from"] = {"validated": "validate-run"}
    assert not same_training_data(refit, lineage("a"), {**KINDS, "validated": "frame"})
    assert training_inputs({"stages": {}}, KINDS) == {}
    assert same_training_data(lineage("a"), lineage("a"), KINDS)
    assert not same_training_data(lineage("a"), lineage("b"), KINDS)
    assert not same_training_data(lineage("a"), {"stages": {}}, KINDS)
