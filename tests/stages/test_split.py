"""split: a reproducible hold-out, stratified for classification."""

from __future__ import annotations

import pandas as pd
import pytest

from mlflow_pipeline.config import load_config
from mlflow_pipeline.errors import StageError
from mlflow_pipeline.stages.split import split


@pytest.fixture(scope="module")
def cfg():
    return load_config(["data.target=y"])


def frame(n: int = 100, positives: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {"x": range(n), "y": [1] * positives + [0] * (n - positives)}, index=range(1000, 1000 + n)
    )


def test_sizes_and_fresh_indexes(cfg):
    out = split(cfg, frame())
    train, test = out["train"], out["test"]
    assert (len(train), len(test)) == (80, 20)
    assert list(test.index) == list(range(20))
    assert sorted([*train["x"], *test["x"]]) == list(range(100))


def test_stratified_for_classification(cfg):
    test = split(cfg, frame())["test"]
    assert test["y"].sum() == 4  # 20 % of the 20 positives


def test_reproducible_with_the_seed(cfg):
    first, again = split(cfg, frame()), split(cfg, frame())
    pd.testing.assert_frame_equal(first["test"], again["test"])
    other = split(load_config(["data.target=y", "seed=1"]), frame())
    assert list(other["test"]["x"]) != list(first["test"]["x"])


def test_regression_is_not_stratified():
    cfg = load_config(["data=diabetes", "data.target=y", "split.test_size=0.5"])
    out = split(cfg, pd.DataFrame({"x": range(10), "y": [0.5] * 9 + [3.0]}))
    assert (len(out["train"]), len(out["test"])) == (5, 5)


def test_too_few_rows_of_a_class_to_stratify(cfg):
    with pytest.raises(
        StageError,
        match=r"\[split\] cannot split 10 rows: .*least populated class.*; class\(es\) with "
        r"fewer than 2 rows: 1 \(1 row\)\. Drop or merge them, or set split\.stratify=false",
    ):
        split(cfg, frame(10, positives=1))


def test_a_numeric_target_most_of_whose_values_occur_once_is_told_about_regression(cfg):
    # A price split as classes: each value a class, most of one row.
    prices = pd.DataFrame({"x": range(200), "y": [i // 2 if i < 40 else i for i in range(200)]})
    with pytest.raises(
        StageError,
        match=r"target 'y' has 180 distinct numbers in 200 rows, 160 of them once: if it is a "
        r"quantity, set data\.task=regression",
    ):
        split(cfg, prices)
