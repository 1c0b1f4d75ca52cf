"""train: features + estimator as one fitted sklearn Pipeline, from config alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from mlflow_pipeline.config import load_config
from mlflow_pipeline.errors import ConfigError, StageError
from mlflow_pipeline.schemas import TrainedModel
from mlflow_pipeline.stages.ingest import ingest
from mlflow_pipeline.stages.train import build_features, build_pipeline, feature_columns, train
from mlflow_pipeline.stages.validate import validate_data
from tests.helpers import csv_overrides, mixed_frame

CSV = Path("customers.csv")


@pytest.fixture(scope="module")
def validated() -> pd.DataFrame:
    return validate_data(load_config(csv_overrides(CSV)), mixed_frame(120))["validated"]


def test_feature_columns_drop_target_and_ignored():
    cfg = load_config(csv_overrides(CSV))
    assert feature_columns(cfg, mixed_frame()) == ["income", "age", "city", "plan"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=logistic_regression", "features=standard"],
        ["model=random_forest", "model.n_estimators=10", "features=trees"],
        ["model=hist_gradient_boosting", "model.max_iter=20", "features=trees"],
        # An estimator from another library, chosen in config alone (the lightgbm extra).
        ["model=lightgbm", "model.n_estimators=20", "features=trees"],
    ],
)
def test_trains_on_string_categoricals_with_missing_values(overrides, validated: pd.DataFrame):
    cfg = load_config(csv_overrides(CSV, *overrides))
    model = train(cfg, validated)["model"]
    assert isinstance(model, TrainedModel)
    assert model.uri is None
    assert list(model.input_example.columns) == ["income", "age", "city", "plan"]
    assert len(model.input_example) == 5
    pipeline = model.estimator
    assert isinstance(pipeline, Pipeline)
    features = pipeline.named_steps["features"]
    assert {name for name, _, _ in features.transformers} == {"numeric", "categorical"}
    # Unseen categories and missing values at prediction time are handled, not errors.
    unseen = validated.head(3).assign(city=["marseille", None, "paris"], income=np.nan)
    assert set(pipeline.predict(unseen[feature_columns(cfg, unseen)])) <= {0, 1}
    assert pipeline.score(validated[feature_columns(cfg, validated)], validated["churned"]) > 0.7


def test_ignored_columns_are_not_features(validated: pd.DataFrame):
    cfg = load_config(csv_overrides(CSV, "model=logistic_regression"))
    pipeline = train(cfg, validated)["model"].estimator
    assert "customer_id" not in pipeline.feature_names_in_


def test_trees_features_do_not_scale():
    cfg = load_config(["features=trees"])
    transformer = build_features(cfg.features, ["a"], ["b"])
    assert isinstance(transformer, ColumnTransformer)
    numeric = dict((n, t) for n, t, _ in transformer.transformers)["numeric"]
    assert [type(s).__name__ for _, s in numeric.steps] == ["SimpleImputer"]


def test_numeric_only_data_has_no_categorical_branch():
    cfg = load_config([])
    pipeline = build_pipeline(cfg, pd.DataFrame({"a": [1.0], "b": [2.0]}))
    assert [n for n, _, _ in pipeline.named_steps["features"].transformers] == ["numeric"]


def test_string_columns_without_an_encoder_are_a_config_error():
    cfg = load_config(["features.categorical_encoder=null", "features.categorical_imputer=null"])
    with pytest.raises(
        ConfigError, match=r"features 'standard' has no categorical encoder.*\['city'\]"
    ):
        build_features(cfg.features, ["a"], ["city"])


def test_fit_failure_is_a_stage_error():
    cfg = load_config(["model=logistic_regression", "data.target=y"])
    one_class = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [1, 1, 1]})
    with pytest.raises(StageError, match=r"\[train\] fitting logistic_regression failed: .*class"):
        train(cfg, one_class)


def test_regression_model_from_the_same_option():
    cfg = load_config(["data=diabetes", "model=logistic_regression"])
    raw = ingest(cfg)["raw"]
    pipeline = train(cfg, raw)["model"].estimator
    assert type(pipeline.named_steps["model"]).__name__ == "Ridge"
    assert pipeline.score(raw.drop(columns="target"), raw["target"]) > 0.3


class AddIncomePerYear:
    """A feature transformer of a project's own: adds a column, returns a DataFrame."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X.assign(income_per_year=X["income"] / X["age"].clip(lower=1))

    def get_params(self, deep=True):
        return {}


def test_features_transformers_run_first_and_their_columns_are_used(validated: pd.DataFrame):
    cfg = load_config(
        [
            *csv_overrides(CSV),
            "model=logistic_regression",
            "+features.transformers=[{_target_: tests.stages.test_train.AddIncomePerYear}]",
        ]
    )
    model = train(cfg, validated)["model"].estimator
    assert isinstance(model.steps[0][1], AddIncomePerYear)
    numeric = dict((name, cols) for name, _, cols in model.named_steps["features"].transformers)
    assert "income_per_year" in numeric["numeric"]
    assert model.predict(validated.drop(columns=["churned"])).shape == (len(validated),)
