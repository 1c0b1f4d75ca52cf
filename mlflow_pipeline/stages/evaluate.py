"""evaluate: score the model on the held-out test set and hold it to the thresholds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from mlflow_pipeline import reports
from mlflow_pipeline.config import METRICS, Task
from mlflow_pipeline.errors import ThresholdError
from mlflow_pipeline.schemas import TrainedModel
from mlflow_pipeline.stages.train import feature_columns

STAGE = "evaluate"
# Permutation importance is computed on a sample of the test set at most this large.
IMPORTANCE_ROWS = 2000


def score(model, test: pd.DataFrame, cfg: DictConfig) -> dict[str, float]:
    """Every metric of the task for ``model`` on ``test`` (also used to re-score the champion)."""
    from sklearn import metrics as skm  # here, not at import: see stages/train.py

    features = test[feature_columns(cfg, test)]
    y_true = test[cfg.data.target]
    y_pred = model.predict(features)
    if Task(cfg.data.task) is Task.regression:
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
            "mae": float(skm.mean_absolute_error(y_true, y_pred)),
            "r2": float(skm.r2_score(y_true, y_pred)),
        }
    classes = list(model.classes_)
    binary = len(classes) == 2
    result = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1": float(
            skm.f1_score(
                y_true,
                y_pred,
                average="binary" if binary else "weighted",
                pos_label=classes[-1] if binary else 1,
            )
        ),
    }
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(features)
        if binary:
            result["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
        elif y_true.nunique() == len(classes):
            result["roc_auc"] = float(
                skm.roc_auc_score(
                    y_true, proba, multi_class="ovr", average="weighted", labels=classes
                )
            )
        result["log_loss"] = float(skm.log_loss(y_true, proba, labels=classes))
    return result


def evaluate(cfg: DictConfig, model: TrainedModel, test: pd.DataFrame) -> dict[str, Any]:
    """Returns ``{"metrics": frame of (metric, value), "evaluation_report": HTML}`` for the
    test set."""
    scores = score(model.estimator, test, cfg)
    return {
        "metrics": pd.DataFrame({"metric": list(scores), "value": list(scores.values())}),
        "evaluation_report": reports.evaluation_report(
            report_data(model.estimator, test, cfg, scores)
        ),
    }


def report_data(
    model: Any, test: pd.DataFrame, cfg: DictConfig, scores: dict[str, float]
) -> dict[str, Any]:
    """The evaluation report's input: predictions, probabilities and feature importance."""
    features = test[feature_columns(cfg, test)]
    classification = Task(cfg.data.task) is Task.classification
    proba = None
    if classification and hasattr(model, "predict_proba"):
        proba = model.predict_proba(features).tolist()
    thresholds = {
        metric: dict(bound)
        for metric, bound in cfg.evaluation.thresholds.items()
        if metric in METRICS[Task(cfg.data.task).value]
    }
    return {
        "task": Task(cfg.data.task).value,
        "model": type(model[-1]).__name__ if hasattr(model, "steps") else type(model).__name__,
        "metrics": scores,
        "thresholds": thresholds,
        "y_true": test[cfg.data.target].tolist(),
        "y_pred": model.predict(features).tolist(),
        "proba": proba,
        "classes": list(model.classes_) if classification else None,
        "feature_importance": feature_importance(model, features, test[cfg.data.target], cfg),
    }


def feature_importance(
    model: Any, features: pd.DataFrame, target: pd.Series, cfg: DictConfig
) -> dict[str, float]:
    """Permutation importance of each input column on (at most IMPORTANCE_ROWS rows of) the
    test set: how much the score drops when the column is shuffled."""
    from sklearn.inspection import permutation_importance

    if len(features) > IMPORTANCE_ROWS:
        features = features.sample(IMPORTANCE_ROWS, random_state=0)
        target = target.loc[features.index]
    found = permutation_importance(
        model, features, target, n_repeats=3, random_state=cfg.seed or 0, n_jobs=1
    )
    return {str(c): float(v) for c, v in zip(features.columns, found.importances_mean, strict=True)}


def check_thresholds(cfg: DictConfig, outputs: dict[str, pd.DataFrame]) -> None:
    """The evaluate gate: raise ThresholdError listing every metric that missed its bound."""
    scores = dict(zip(outputs["metrics"]["metric"], outputs["metrics"]["value"], strict=True))
    task = Task(cfg.data.task).value
    missed = []
    for metric, bound in cfg.evaluation.thresholds.items():
        if metric not in METRICS[task]:
            continue  # a threshold for the other task
        if metric not in scores:
            missed.append(f"{metric} could not be computed for this model")
            continue
        value = scores[metric]
        low, high = bound.get("min"), bound.get("max")
        if low is not None and value < low:
            missed.append(f"{metric}={value:.4f} is below the minimum {low}")
        if high is not None and value > high:
            missed.append(f"{metric}={value:.4f} is above the maximum {high}")
    if missed:
        raise ThresholdError(
            "model failed evaluation thresholds (conf/evaluation): "
            + "; ".join(missed)
            + ". Nothing was registered.",
            stage=STAGE,
        )
