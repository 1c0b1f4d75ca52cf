"""Profiles and drift: pure functions over real data, shifted on purpose or sampled afresh."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlflow_pipeline.config import load_config
from mlflow_pipeline.data import drift
from tests.helpers import csv_overrides

ABOUT = {"model": "customers", "version": "3", "alias": "champion", "profile_run": "r"}
METHODS = [("psi", "psi"), ("ks", "chi2")]


def sample(seed: int, rows: int = 2000, *, shift: float = 0.0, premium: float = 0.2):
    """Customers from one distribution; ``shift`` moves income, ``premium`` the plan mix."""
    rng = np.random.default_rng(seed)
    rest = (1 - premium) / 2
    df = pd.DataFrame(
        {
            "income": rng.normal(50.0 + shift, 15.0, rows),
            "age": rng.integers(18, 80, rows).astype(float),
            "plan": rng.choice(["basic", "plus", "premium"], rows, p=[rest, rest, premium]),
            "churned": rng.integers(0, 2, rows),
        }
    )
    df.loc[rng.choice(rows, rows // 10, replace=False), "income"] = np.nan
    return df


def config(numeric: str = "psi", categorical: str = "psi", *extra: str):
    return load_config(
        csv_overrides(
            Path("customers.csv"),
            f"validation.drift.numeric_method={numeric}",
            f"validation.drift.categorical_method={categorical}",
            *extra,
        )
    )


def compare(reference: pd.DataFrame, today: pd.DataFrame, cfg) -> dict:
    ref = json.loads(json.dumps(drift.profile(reference, cfg)))  # as stored and read back
    return drift.compare(ref, today, drift.profile(today, cfg), cfg, about=ABOUT)


def test_profile_describes_every_column():
    cfg = config()
    df = sample(0)
    found = drift.profile(df, cfg)
    assert found["rows"] == 2000
    income = found["columns"]["income"]
    assert income["kind"] == "numeric"
    assert income["missing"] == 200
    assert income["missing_fraction"] == pytest.approx(0.1)
    assert income["mean"] == pytest.approx(df["income"].mean())
    assert income["quantiles"]["0.5"] == pytest.approx(df["income"].median())
    assert sum(income["histogram"]["counts"]) == 1800
    assert sum(income["bins"]["fractions"]) == pytest.approx(1.0)
    plan = found["columns"]["plan"]
    assert plan["kind"] == "categorical"
    assert {name for name, _ in plan["top"]} == {"basic", "plus", "premium"}
    # A class label is a category, and the balance is recorded.
    assert found["columns"]["churned"]["kind"] == "categorical"
    assert sum(found["target"]["balance"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize(("numeric", "categorical"), METHODS)
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_fresh_sample_of_the_same_distribution_does_not_drift(numeric, categorical, seed):
    cfg = config(numeric, categorical)
    result = compare(sample(0), sample(seed), cfg)
    assert result["detected"] is False, result["features"]
    assert result["n_features"] == 4


@pytest.mark.parametrize(("numeric", "categorical"), METHODS)
def test_data_shifted_on_purpose_drifts_in_the_shifted_features_only(numeric, categorical):
    cfg = config(numeric, categorical)
    result = compare(sample(0), sample(9, shift=15.0, premium=0.6), cfg)
    assert result["detected"] is True
    assert set(result["drifted"]) == {"income", "plan"}
    assert result["features"]["income"]["method"] == numeric
    assert result["features"]["plan"]["method"] == categorical
    assert not result["features"]["age"]["drifted"]
    metrics = drift.metrics(result)
    assert metrics["drift.detected"] == 1.0
    assert metrics["drift.n_drifted"] == 2.0
    text = drift.summary(result)
    assert text.startswith("drift detected against customers v3 (@champion): 2 of 4 feature(s)")
    assert "feature 'income'" in text


def test_ks_works_on_discrete_values():
    cfg = config("ks", "psi")
    result = compare(sample(0), sample(1), cfg)
    assert result["features"]["age"]["statistic"] < 0.05  # integers: ties everywhere


def test_unseen_categories_and_schema_changes_are_listed():
    cfg = config()
    today = sample(1).rename(columns={"age": "age_years"})
    today.loc[:9, "plan"] = "enterprise"
    result = compare(sample(0), today, cfg)
    assert result["schema"] == {"missing": ["age"], "extra": ["age_years"], "kind_changed": []}
    assert result["features"]["plan"]["unseen_categories"] == ["enterprise"]
    assert "column 'age': missing" in drift.summary(result)


def test_ignored_columns_are_not_compared():
    cfg = config("psi", "psi", "validation.drift.ignore=[income]")
    result = compare(sample(0), sample(9, shift=15.0), cfg)
    assert "income" not in result["features"]
    assert result["detected"] is False


def test_psi_of_identical_distributions_is_zero_and_grows_with_the_shift():
    even = np.full(10, 0.1)
    assert drift.psi(even, even) == 0.0
    skewed = np.array([0.3, 0.3, *[0.4 / 8] * 8])
    assert drift.psi(even, skewed) > 0.2


def test_metric_names_are_legal():
    assert drift.metric_name("mean radius (mm)") == "mean radius _mm_"
