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


def test_no_row_in_common_is_no_overlap_and_every_row_is_all():
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]})
    assert training_overlap(frame, [frame + 10]) is None
    assert training_overlap(frame, [pd.DataFrame({"z": [1]})]) is None
    every = training_overlap(frame, [frame])
    assert every is not None
    assert every.compared == 0
    assert every.note == "the champion trained on all 2 test rows: no row to compare it on"


def test_the_training_data_is_what_the_stage_that_made_the_model_read():
    assert training_inputs(lineage("a"), KINDS) == {"train": "split-run"}  # frames only
    assert training_inputs({"stages": {}}, KINDS) == {}
    assert same_training_data(lineage("a"), lineage("a"), KINDS)
    assert not same_training_data(lineage("a"), lineage("b"), KINDS)
    assert not same_training_data(lineage("a"), {"stages": {}}, KINDS)
