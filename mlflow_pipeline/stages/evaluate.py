"""evaluate: score the model on the held-out test set and hold it to the thresholds."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from mlflow_pipeline.config import METRICS, Task
from mlflow_pipeline.errors import ThresholdError
from mlflow_pipeline.reports.evaluation import evaluation_report
from mlflow_pipeline.schemas import TrainedModel
from mlflow_pipeline.stages.train import feature_columns

STAGE = "evaluate"
log = logging.getLogger(__name__)
# Permutation importance is computed on a sample of the test set at most this large.
IMPORTANCE_ROWS = 2000
IMPORTANCE_REPEATS = 3
# The report's plots are drawn from at most this many test rows.
REPORT_ROWS = 50_000


def model_metrics(model, test: pd.DataFrame, cfg: DictConfig) -> dict[str, float]:
    """Every metric of the task for ``model`` on ``test`` (also used to re-score the champion)."""
    y_pred, proba = predict(model, test[feature_columns(cfg, test)], cfg)
    return metrics_of(model, test[cfg.data.target], y_pred, proba, cfg)


def predict(model, features: pd.DataFrame, cfg: DictConfig) -> tuple[Any, Any]:
    """Predictions, and class probabilities for a classifier that has them (else None)."""
    if not (Task(cfg.data.task) is Task.classification and hasattr(model, "predict_proba")):
        return model.predict(features), None
    steps = getattr(model, "steps", None)
    if steps is not None and len(steps) > 1:
        # A Pipeline's predict and predict_proba each transform the features first: do it
        # once (what Pipeline.predict does, step by step, so the predictions are the same).
        model, features = model[-1], model[:-1].transform(features)
    proba = model.predict_proba(features)
    if not _predicts_the_likeliest_class(model) or getattr(proba, "ndim", 0) != 2:
        return model.predict(features), proba
    return _likeliest_classes(model, proba, features), proba


# Classifiers whose own ``predict`` is the class of highest probability: the argmax of
# ``predict_proba`` (forests, trees, LightGBM), or the sign or argmax of the decision function
# that ``predict_proba`` maps monotonically (histogram gradient boosting, logistic regression).
# For them the labels come from the probabilities, made once (a second pass of the model
# otherwise: 0.8 s of 2.2 s for 200,000 rows with hist_gradient_boosting).
LIKELIEST_CLASS_PREDICTORS = (
    "sklearn.ensemble.HistGradientBoostingClassifier",
    "sklearn.ensemble.RandomForestClassifier",
    "sklearn.ensemble.ExtraTreesClassifier",
    "sklearn.tree.DecisionTreeClassifier",
    "sklearn.linear_model.LogisticRegression",
    "lightgbm.LGBMClassifier",
)
# Rows whose two highest probabilities are this close are asked of ``predict`` itself: a tie,
# or a decision function so near zero that the rounded probabilities cannot tell the sides.
LIKELIEST_CLASS_TIE = 1e-9


def _predicts_the_likeliest_class(model: Any) -> bool:
    """Is ``model`` one of LIKELIEST_CLASS_PREDICTORS (or a subclass that keeps its
    ``predict`` and ``predict_proba``)? Only classes already imported are looked at."""
    kind = type(model)
    if callable(getattr(model, "_objective", None)):  # LightGBM's own objective: raw scores
        return False
    for dotted in LIKELIEST_CLASS_PREDICTORS:
        module, name = dotted.rsplit(".", 1)
        known = getattr(sys.modules.get(module), name, None)
        if known is not None and issubclass(kind, known):
            return kind.predict is known.predict and kind.predict_proba is known.predict_proba
    return False


def _likeliest_classes(model: Any, proba: np.ndarray, features: Any) -> np.ndarray:
    """``model.predict(features)`` from its probabilities: the likeliest class per row, and
    ``predict`` on the rows where the two likeliest are within LIKELIEST_CLASS_TIE (or not
    numbers); on every row when those rows cannot be picked out of ``features``."""
    labels = np.asarray(model.classes_).take(np.argmax(proba, axis=1))
    if proba.shape[1] > 1:
        top_two = np.partition(proba, -2, axis=1)[:, -2:]
        close = np.flatnonzero(~(top_two[:, 1] - top_two[:, 0] > LIKELIEST_CLASS_TIE))
        if close.size:
            try:
                rows = features.iloc[close] if hasattr(features, "iloc") else features[close]
            except (TypeError, IndexError):  # e.g. a COO matrix from a custom transformer
                return model.predict(features)
            labels[close] = model.predict(rows)
    return labels


def metrics_of(model, y_true: pd.Series, y_pred, proba, cfg: DictConfig) -> dict[str, float]:
    """The task's metrics from predictions (and probabilities) already made."""
    from sklearn import metrics as skm  # here, not at import: see stages/train.py

    if Task(cfg.data.task) is Task.regression:
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
            "mae": float(skm.mean_absolute_error(y_true, y_pred)),
            "r2": float(skm.r2_score(y_true, y_pred)),
        }
    # Test labels the model never saw in training (an unstratified split of rare classes)
    # count as wrong, with probability 0 for roc_auc and log_loss.
    classes = list(model.classes_)
    unseen = {c for c in pd.unique(y_true.dropna()) if c not in set(classes)}
    if unseen:
        labels = sorted([*classes, *unseen])  # sklearn wants them ordered, as classes_ are
        if proba is not None:
            padded = np.zeros((len(proba), len(labels)))
            padded[:, [labels.index(c) for c in classes]] = proba
            proba = padded
        classes = labels
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
    if proba is not None:
        if binary:
            result["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
        elif y_true.nunique() == len(classes):
            result["roc_auc"] = float(
                skm.roc_auc_score(
                    y_true, proba, multi_class="ovr", average="weighted", labels=classes
                )
            )
        elif y_true.nunique() >= 2:
            # A class the model knows has no test rows: sklearn's weighted one-vs-rest gives
            # it no weight (and warns that its own AUC is undefined), so this is the figure
            # over the classes present, as register compares models on such labels.
            from sklearn.exceptions import UndefinedMetricWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
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
    estimator = model.estimator
    features = test[feature_columns(cfg, test)]
    y_pred, proba = predict(estimator, features, cfg)
    truth = test[cfg.data.target]
    scores = metrics_of(estimator, truth, y_pred, proba, cfg)
    if Task(cfg.data.task) is Task.classification:
        unseen = truth[truth.notna() & ~truth.isin(list(estimator.classes_))]
        if len(unseen):
            shown = ", ".join(repr(c) for c in unseen.unique()[:5])
            log.warning(
                "[%s] %d test row(s) are of class(es) no training row has (%s): the model "
                "cannot predict them, so they count as wrong (probability 0 in roc_auc and "
                "log_loss). A stratified split (split.stratify=true) puts every class of 2 "
                "rows or more on both sides.",
                STAGE,
                len(unseen),
                shown,
            )
    return {
        "metrics": pd.DataFrame({"metric": list(scores), "value": list(scores.values())}),
        "evaluation_report": evaluation_report(
            report_data(estimator, test, cfg, scores, y_pred, proba)
        ),
    }


def native_work(cfg: DictConfig, test: pd.DataFrame, **_: Any) -> int:
    """The values evaluate's native code works through, for the thread choice: the test set,
    predicted once, and the permutation importance's shuffled copies of (a sample of) it,
    predicted together. The test set alone would count 100k rows as a small input."""
    rows, columns = test.shape
    copies = columns * IMPORTANCE_REPEATS + 1
    return rows * columns + min(rows, IMPORTANCE_ROWS) * columns * copies


def report_data(
    model: Any,
    test: pd.DataFrame,
    cfg: DictConfig,
    scores: dict[str, float],
    y_pred: Any,
    proba: Any,
) -> dict[str, Any]:
    """The evaluation report's input. Plots are drawn from at most REPORT_ROWS test rows (a
    seeded random sample); the metrics are those of the whole test set."""
    features = test[feature_columns(cfg, test)]
    target = test[cfg.data.target]
    shown = np.arange(len(test))
    if len(test) > REPORT_ROWS:
        shown = np.sort(np.random.default_rng(cfg.seed or 0).choice(len(test), REPORT_ROWS, False))
    classification = Task(cfg.data.task) is Task.classification
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
        "test_rows": len(test),
        "y_true": target.iloc[shown].tolist(),
        "y_pred": np.asarray(y_pred)[shown].tolist(),
        "proba": None if proba is None else np.asarray(proba)[shown].tolist(),
        "classes": list(model.classes_) if classification else None,
        "feature_importance": feature_importance(model, features, target, cfg),
    }


def feature_importance(
    model: Any, features: pd.DataFrame, target: pd.Series, cfg: DictConfig
) -> dict[str, float]:
    """Permutation importance of each input column on (at most IMPORTANCE_ROWS rows of) the
    test set: how much the model's default score (accuracy for a classifier, R² for a
    regressor, as sklearn's ``permutation_importance``) drops when the column is shuffled,
    averaged over IMPORTANCE_REPEATS shuffles.

    Shuffled copies are stacked and predicted together, in chunks that fit in
    ``evaluation.importance_memory_mb``: the pipeline's per-call overhead, not the rows, is what
    costs on a small sample, while stacking all ``columns x repeats + 1`` copies of a wide table
    at once would need gigabytes. The chunking changes nothing in the result.
    """
    if len(features) > IMPORTANCE_ROWS:
        features = features.sample(IMPORTANCE_ROWS, random_state=0)
        target = target.loc[features.index]
    rng = np.random.default_rng(cfg.seed or 0)
    rows = len(features)
    # (column, permutation) per shuffled copy, drawn in a fixed order: the unshuffled copy
    # first, then IMPORTANCE_REPEATS per column.
    copies = [(None, None)] + [
        (column, rng.permutation(rows))
        for column in features.columns
        for _ in range(IMPORTANCE_REPEATS)
    ]
    per_chunk = copies_per_chunk(features, _importance_budget_mb(cfg))
    truth = target.to_numpy()
    scores = np.concatenate(
        [
            _scores(model, features, copies[start : start + per_chunk], truth, cfg)
            for start in range(0, len(copies), per_chunk)
        ]
    )
    drops = (scores[0] - scores[1:]).reshape(len(features.columns), IMPORTANCE_REPEATS)
    return {str(c): float(v) for c, v in zip(features.columns, drops.mean(axis=1), strict=True)}


# What predicting one stacked copy costs in memory, in copies of the frame: the stacked frame,
# the pipeline's transformed arrays (imputed, scaled, encoded) and the assigned copy itself.
COPY_OVERHEAD = 4


def copies_per_chunk(features: pd.DataFrame, budget_mb: float) -> int:
    """How many shuffled copies of ``features`` to predict at once within ``budget_mb``."""
    per_copy = max(int(features.memory_usage(index=False, deep=True).sum()), 1) * COPY_OVERHEAD
    return max(1, int(budget_mb * 2**20 // per_copy))


def _importance_budget_mb(cfg: DictConfig) -> float:
    return float(cfg.evaluation.get("importance_memory_mb") or 256.0)


def _scores(
    model: Any,
    features: pd.DataFrame,
    copies: list[tuple[Any, Any]],
    truth: np.ndarray,
    cfg: DictConfig,
) -> np.ndarray:
    """The default score of ``model`` on each copy: ``features`` with ``column`` shuffled by
    ``permutation`` (the unshuffled frame where ``column`` is None)."""
    rows = len(features)
    frames = []
    for column, permutation in copies:
        if column is None:
            frames.append(features)
            continue
        values, dtype = features[column].to_numpy(), features[column].dtype
        shuffled = pd.Series(values[permutation], index=features.index, dtype=dtype)
        frames.append(features.assign(**{column: shuffled}))
    predicted = np.asarray(model.predict(pd.concat(frames, ignore_index=True)))
    predicted = predicted.reshape(len(frames), rows)
    if Task(cfg.data.task) is Task.classification:
        return (predicted == truth).mean(axis=1)
    residual = ((predicted - truth) ** 2).sum(axis=1)
    total = float(((truth - truth.mean()) ** 2).sum()) or 1.0
    return 1.0 - residual / total


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
