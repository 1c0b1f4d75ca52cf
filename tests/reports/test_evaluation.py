"""The evaluation report: real models on sklearn datasets, classification and regression."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import train_test_split

from mlflow_pipeline.reports.evaluation import evaluation_report
from tests.reports.helpers import decoded_images, from_json, visible_text


def classification_evaluation(frame: pd.DataFrame, target: str, thresholds: dict) -> dict:
    features = frame.drop(columns=[target])
    train_x, test_x, train_y, test_y = train_test_split(
        features, frame[target], test_size=0.3, random_state=0, stratify=frame[target]
    )
    model = RandomForestClassifier(n_estimators=25, max_depth=4, random_state=0)
    model.fit(train_x, train_y)
    from sklearn import metrics as skm

    proba = model.predict_proba(test_x)
    y_pred = model.predict(test_x)
    binary = proba.shape[1] == 2
    return from_json(
        {
            "task": "classification",
            "model": "RandomForestClassifier",
            "metrics": {
                "accuracy": float(skm.accuracy_score(test_y, y_pred)),
                "roc_auc": float(
                    skm.roc_auc_score(test_y, proba[:, 1])
                    if binary
                    else skm.roc_auc_score(test_y, proba, multi_class="ovr")
                ),
            },
            "thresholds": thresholds,
            "y_true": test_y.tolist(),
            "y_pred": y_pred.tolist(),
            "proba": proba.tolist(),
            "classes": model.classes_.tolist(),
            "feature_importance": dict(
                zip(features.columns, model.feature_importances_.tolist(), strict=True)
            ),
        }
    )


@pytest.fixture(scope="module")
def binary_evaluation() -> dict:
    frame = load_breast_cancer(as_frame=True).frame
    return classification_evaluation(frame, "target", {"roc_auc": {"min": 0.75, "max": None}})


def test_evaluation_report_binary(binary_evaluation: dict):
    document = evaluation_report(binary_evaluation)

    images = decoded_images(document)
    assert len(images) == 4  # confusion matrix, ROC, PR, importance
    text = visible_text(document)
    assert "Evaluation: RandomForestClassifier" in text
    assert "All 1 threshold met" in text
    assert "Positive class: 1." in text
    assert "The 20 most important of 30 features." in text
    top = max(binary_evaluation["feature_importance"].items(), key=lambda kv: kv[1])[0]
    assert top in text


def test_evaluation_report_failed_threshold_without_proba_or_importance(binary_evaluation: dict):
    evaluation = {
        **binary_evaluation,
        "proba": None,
        "feature_importance": None,
        "thresholds": {"roc_auc": {"min": 0.999, "max": None}, "f1": {"min": 0.5, "max": None}},
    }

    document = evaluation_report(evaluation)

    assert len(decoded_images(document)) == 1  # confusion matrix only
    text = visible_text(document)
    assert "Thresholds not met" in text
    assert "< min 0.999" in text
    assert "f1 (missing)" in text
    assert "ROC and PR curves skipped" in text
    assert "not available for this model" in text


def test_evaluation_report_multiclass_one_vs_rest():
    frame = load_iris(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "setosa", 1: "versicolor", 2: "<virginica>"})
    evaluation = classification_evaluation(frame, "target", {})

    document = evaluation_report(evaluation)

    assert len(decoded_images(document)) == 4
    text = visible_text(document)
    assert "One-vs-rest curve per class." in text
    assert "No thresholds configured" in text
    assert "&lt;virginica&gt;" in document
    assert "<virginica>" not in document


def test_evaluation_report_regression():
    data = load_diabetes(as_frame=True)
    train_x, test_x, train_y, test_y = train_test_split(
        data.data, data.target, test_size=0.3, random_state=0
    )
    model = RandomForestRegressor(n_estimators=20, max_depth=5, random_state=0)
    model.fit(train_x, train_y)
    y_pred = model.predict(test_x)
    residual = test_y.to_numpy() - y_pred
    evaluation = {
        "task": "regression",
        "model": "RandomForestRegressor",
        "metrics": {"rmse": float(np.sqrt(np.mean(residual**2))), "r2": 0.4},
        "thresholds": {"r2": {"min": 0.2, "max": None}},
        "y_true": test_y.tolist(),
        "y_pred": y_pred.tolist(),
        "proba": None,
        "classes": None,
        "feature_importance": dict(
            zip(data.data.columns, model.feature_importances_.tolist(), strict=True)
        ),
    }

    document = evaluation_report(evaluation)

    assert len(decoded_images(document)) == 4  # residuals, pred vs actual, histogram, importance
    text = visible_text(document)
    assert "Residuals" in text
    assert "All 1 threshold met" in text
    assert "Confusion matrix" not in text
    assert "bmi" in text
