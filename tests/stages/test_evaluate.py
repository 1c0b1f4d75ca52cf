"""evaluate: metrics per task on the test set, and the threshold gate."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

from mlflow_pipeline.config import METRICS, load_config
from mlflow_pipeline.errors import PipelineError, ThresholdError
from mlflow_pipeline.schemas import TrainedModel
from mlflow_pipeline.stages.evaluate import check_thresholds, evaluate, model_metrics
from mlflow_pipeline.stages.ingest import ingest
from mlflow_pipeline.stages.split import split
from mlflow_pipeline.stages.train import train
from mlflow_pipeline.stages.validate import validate_data
from tests.helpers import csv_overrides, mixed_frame


def fitted(overrides: list[str], raw: pd.DataFrame | None = None):
    cfg = load_config(overrides)
    raw = ingest(cfg)["raw"] if raw is None else raw
    parts = split(cfg, validate_data(cfg, raw)["validated"])
    return cfg, train(cfg, parts["train"])["model"], parts["test"]


@pytest.fixture(scope="module")
def classifier():
    return fitted(["model=random_forest", "model.n_estimators=10"])


@pytest.fixture(scope="module")
def regressor():
    return fitted(["data=diabetes", "model=random_forest", "model.n_estimators=10"])


def metric_values(frame: pd.DataFrame) -> dict[str, float]:
    return dict(zip(frame["metric"], frame["value"], strict=True))


def test_classification_metrics(classifier):
    cfg, model, test = classifier
    scores = metric_values(evaluate(cfg, model, test)["metrics"])
    assert set(scores) == set(METRICS["classification"])
    assert scores["roc_auc"] > 0.9
    assert 0.9 < scores["accuracy"] <= 1.0
    assert scores["log_loss"] > 0


def test_regression_metrics(regressor):
    cfg, model, test = regressor
    scores = metric_values(evaluate(cfg, model, test)["metrics"])
    assert set(scores) == set(METRICS["regression"])
    assert scores["rmse"] >= scores["mae"] > 0
    assert scores["r2"] > 0.2


def test_string_categoricals_and_missing_values_through_train_and_evaluate():
    cfg, model, test = fitted(
        csv_overrides(
            "customers.csv", "model=hist_gradient_boosting", "model.max_iter=20", "features=trees"
        ),
        raw=mixed_frame(200),
    )
    assert test["city"].isna().any()
    scores = metric_values(evaluate(cfg, model, test)["metrics"])
    assert scores["accuracy"] > 0.7
    assert 0.5 < scores["roc_auc"] <= 1.0


def test_string_labels_and_multiclass():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    raw = pd.DataFrame({"x": x, "y": np.select([x < -0.5, x < 0.5], ["low", "mid"], "high")})
    cfg, model, test = fitted(["data.target=y", "model=logistic_regression"], raw=raw)
    scores = model_metrics(model.estimator, test, cfg)
    assert set(scores) == set(METRICS["classification"])
    assert scores["accuracy"] > 0.8


def test_model_without_probabilities_has_no_roc_auc(classifier):
    cfg, model, test = classifier
    features = test.drop(columns="target")
    svc = make_pipeline(LinearSVC(max_iter=50)).fit(features, test["target"])
    assert set(model_metrics(svc, test, cfg)) == {"accuracy", "f1"}
    outputs = evaluate(cfg, TrainedModel(svc, features.head()), test)
    with pytest.raises(ThresholdError, match=r"roc_auc could not be computed for this model"):
        check_thresholds(cfg, outputs)


def metrics(**values: float) -> dict[str, pd.DataFrame]:
    return {"metrics": pd.DataFrame({"metric": list(values), "value": list(values.values())})}


def test_thresholds_pass():
    cfg = load_config(["evaluation.thresholds.roc_auc.max=0.99"])
    check_thresholds(cfg, metrics(roc_auc=0.8, accuracy=0.1))
    assert cfg.evaluation.thresholds.roc_auc.min == 0.75


def test_threshold_below_minimum_raises():
    cfg = load_config()
    with pytest.raises(
        ThresholdError,
        match=r"\[evaluate\] .*roc_auc=0\.7000 is below the minimum 0\.75\. Nothing was registered",
    ) as info:
        check_thresholds(cfg, metrics(roc_auc=0.7))
    assert isinstance(info.value, PipelineError)
    assert info.value.stage == "evaluate"


def test_threshold_above_maximum_and_every_miss_is_listed():
    cfg = load_config(
        ["data=diabetes", "evaluation.thresholds.r2.max=0.5", "+evaluation.thresholds.rmse.max=10"]
    )
    with pytest.raises(
        ThresholdError, match=r"r2=0\.9000 is above the maximum 0\.5; rmse=50\.0000"
    ):
        check_thresholds(cfg, metrics(r2=0.9, rmse=50.0, mae=1.0))


def test_thresholds_of_the_other_task_are_ignored():
    cfg = load_config(["data=diabetes"])  # default thresholds include roc_auc
    check_thresholds(cfg, metrics(r2=0.1, rmse=1.0, mae=1.0))
    assert "roc_auc" in cfg.evaluation.thresholds


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_feature_importance_is_sklearns_permutation_importance(task):
    """The batched computation gives sklearn's numbers for the same shuffles (the mean drop
    of the default score), and names every column; a column the model ignores scores 0."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    from mlflow_pipeline.stages.evaluate import IMPORTANCE_REPEATS, feature_importance

    rng = np.random.default_rng(0)
    features = pd.DataFrame({"signal": rng.normal(size=400), "noise": rng.normal(size=400)})
    y = features["signal"] * 3 + rng.normal(scale=0.1, size=400)
    if task == "classification":
        y = (y > 0).astype(int)
        model = RandomForestClassifier(n_estimators=20, random_state=0)
    else:
        model = RandomForestRegressor(n_estimators=20, random_state=0)
    model.fit(features[["signal"]].assign(noise=0.0), y)  # noise never splits a tree
    cfg = load_config([f"data.task={task}", "seed=7"])
    found = feature_importance(model, features, y, cfg)
    assert list(found) == ["signal", "noise"]
    assert found["noise"] == 0.0
    # The same shuffles through sklearn, one column at a time.
    shuffles = np.random.default_rng(7)
    expected = {}
    base = model.score(features, y)
    for column in features.columns:
        drops = []
        for _ in range(IMPORTANCE_REPEATS):
            shuffled = features.assign(
                **{column: features[column].to_numpy()[shuffles.permutation(400)]}
            )
            drops.append(base - model.score(shuffled, y))
        expected[column] = float(np.mean(drops))
    assert found == pytest.approx(expected, abs=1e-12)
    assert found["signal"] > 0.3


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_feature_importance_in_chunks_is_the_same(task):
    """A memory budget of one copy per chunk gives exactly what one chunk of all copies gives."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from mlflow_pipeline.stages.evaluate import copies_per_chunk, feature_importance

    rng = np.random.default_rng(1)
    features = pd.DataFrame(rng.normal(size=(120, 6)), columns=[f"x{i}" for i in range(6)])
    y = features["x0"] - features["x1"] + rng.normal(scale=0.5, size=120)
    if task == "classification":
        y, model = (y > 0).astype(int), LogisticRegression()
    else:
        model = Ridge()
    model.fit(features, y)
    tiny = load_config([f"data.task={task}", "evaluation.importance_memory_mb=0.000001"])
    large = load_config([f"data.task={task}", "evaluation.importance_memory_mb=4096"])
    assert copies_per_chunk(features, tiny.evaluation.importance_memory_mb) == 1
    assert copies_per_chunk(features, large.evaluation.importance_memory_mb) > 19
    assert feature_importance(model, features, y, tiny) == feature_importance(
        model, features, y, large
    )


def test_a_wide_table_is_predicted_in_chunks_within_the_budget():
    from mlflow_pipeline.stages.evaluate import COPY_OVERHEAD, copies_per_chunk

    wide = pd.DataFrame(np.zeros((400, 2000)))  # 6.4 MB a copy
    per_chunk = copies_per_chunk(wide, 256)
    assert per_chunk * 6.4e6 * COPY_OVERHEAD <= 256 * 2**20
    assert per_chunk >= 5


def test_predict_transforms_once_and_predicts_what_the_pipeline_does(tmp_path):
    """predict() transforms a Pipeline's features once for both predict and predict_proba; the
    results are exactly the Pipeline's own, for every conf/model x conf/features option."""
    from mlflow_pipeline.config import PACKAGE_CONF
    from mlflow_pipeline.stages.evaluate import predict

    frame = mixed_frame(120)
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    checked = 0
    for model in sorted(p.stem for p in (PACKAGE_CONF / "model").glob("*.yaml")):
        for features in sorted(p.stem for p in (PACKAGE_CONF / "features").glob("*.yaml")):
            cfg = load_config(csv_overrides(path, f"model={model}", f"features={features}"))
            estimator = train(cfg, frame)["model"].estimator
            inputs = frame.drop(columns=[cfg.data.target])
            y_pred, proba = predict(estimator, inputs, cfg)
            np.testing.assert_array_equal(y_pred, estimator.predict(inputs))
            np.testing.assert_array_equal(proba, estimator.predict_proba(inputs))
            checked += 1
    assert checked >= 4


def test_labels_from_probabilities_are_predicts_own_ties_and_other_classifiers_included():
    """For classifiers whose predict is the likeliest class, predict() takes the labels from
    predict_proba: ties (rows a tree leaves at 50/50) and near-zero decisions are asked of
    predict itself. A classifier whose predict is not the likeliest class (SVC's Platt
    probabilities) is asked of predict for every row."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    from mlflow_pipeline.stages import evaluate as stage

    cfg = load_config([])
    rng = np.random.default_rng(0)
    features = pd.DataFrame({"x": np.repeat([0.0, 1.0, 2.0], 40), "z": rng.normal(size=120)})
    # x=1 rows are half "a", half "b": a depth-1-per-x tree leaves them at exactly 0.5 / 0.5.
    labels = np.where(features["x"] == 0, "a", np.where(features["x"] == 2, "b", "?"))
    labels[features["x"] == 1] = np.tile(["b", "a"], 20)
    tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit(features[["x"]], labels)
    proba = tree.predict_proba(features[["x"]])
    assert (proba[:, 0] == 0.5).sum() == 40
    y_pred, _ = stage.predict(tree, features[["x"]], cfg)
    np.testing.assert_array_equal(y_pred, tree.predict(features[["x"]]))

    y = (features["z"] + rng.normal(0, 0.8, 120) > 0).astype(int)
    boosted = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(features, y)
    assert stage._predicts_the_likeliest_class(boosted)
    y_pred, proba = stage.predict(boosted, features, cfg)
    np.testing.assert_array_equal(y_pred, boosted.predict(features))
    np.testing.assert_array_equal(proba, boosted.predict_proba(features))

    svc = SVC(probability=True, random_state=0).fit(features, y)
    assert not stage._predicts_the_likeliest_class(svc)
    disagree = svc.predict(features) != svc.classes_[svc.predict_proba(features).argmax(axis=1)]
    y_pred, _ = stage.predict(svc, features, cfg)
    np.testing.assert_array_equal(y_pred, svc.predict(features))
    assert disagree.any()  # what argmax alone would have got wrong

    class Overridden(HistGradientBoostingClassifier):  # its own predict: not assumed
        def predict(self, X):
            return super().predict(X)

    assert not stage._predicts_the_likeliest_class(Overridden())


def test_labels_from_probabilities_ask_predict_for_rows_it_cannot_read_or_pick():
    """A row whose probabilities are not numbers is asked of predict; features whose rows
    cannot be picked out (a COO matrix) are all asked of predict."""
    from scipy import sparse
    from sklearn.tree import DecisionTreeClassifier

    from mlflow_pipeline.stages import evaluate as stage

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    tree = DecisionTreeClassifier(random_state=0).fit(x, ["a", "a", "b", "b"])
    proba = np.array([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8], [0.1, 0.9]])
    asked = []

    class Recording(DecisionTreeClassifier):
        def predict(self, X):  # noqa: N803 (sklearn's name)
            asked.append(X.shape[0])
            return tree.predict(X)

    recording = Recording().fit(x, ["a", "a", "b", "b"])
    labels = stage._likeliest_classes(recording, proba, x)
    assert asked == [1]  # only the NaN row
    assert labels.tolist() == ["a", "a", "b", "b"]
    asked.clear()
    labels = stage._likeliest_classes(recording, proba, sparse.coo_matrix(x))
    assert asked == [4]
    assert labels.tolist() == ["a", "a", "b", "b"]


def test_a_class_without_test_rows_still_gets_a_roc_auc_over_the_classes_present():
    """A 3-class model on a test set without one of its classes gets a roc_auc (it used to
    have none, and the default roc_auc threshold failed the model): one-vs-rest over the
    classes present weighted by support, as sklearn's per-class AUCs averaged by hand and as
    sklearn's own weighted one-vs-rest (which warns about the absent class)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from mlflow_pipeline.stages.evaluate import metrics_of

    cfg = load_config(["data=csv", "data.path=x.csv", "data.target=y", "data.task=classification"])
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = np.where(x["a"] > 0.5, "sun", np.where(x["b"] > 0.8, "snow", "rain"))
    model = LogisticRegression().fit(x, y)
    test = x[y != "snow"]
    truth = pd.Series(y[y != "snow"])
    proba = model.predict_proba(test)
    scores = metrics_of(model, truth, model.predict(test), proba, cfg)
    present = [c for c in model.classes_ if (truth == c).any()]
    support = [(truth == c).sum() for c in present]
    per_class = [
        roc_auc_score(truth == c, proba[:, list(model.classes_).index(c)]) for c in present
    ]
    assert scores["roc_auc"] == pytest.approx(np.average(per_class, weights=support), rel=1e-12)
    with warnings.catch_warnings():  # sklearn warns for the class without rows, weighs it 0
        warnings.simplefilter("ignore")
        theirs = roc_auc_score(
            truth, proba, multi_class="ovr", average="weighted", labels=model.classes_
        )
    assert scores["roc_auc"] == pytest.approx(theirs, rel=1e-12)
    rain = truth.to_numpy() == "rain"  # one class left: undefined, not a number
    one_class = metrics_of(model, truth[rain], model.predict(test[rain]), proba[rain], cfg)
    assert "roc_auc" not in one_class


def test_test_rows_of_a_class_training_never_saw_count_as_wrong_with_probability_0(caplog):
    """An unstratified split of rare classes (split.stratify=false, as the split's hint for
    classes of one row says) leaves test rows of classes the model never saw: sklearn refused
    the labels and evaluate ended in a traceback. They count as wrong; roc_auc and log_loss
    give them probability 0, as sklearn's metrics do on the padded probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score

    cfg = load_config(["data=csv", "data.path=x.csv", "data.target=y", "data.task=classification"])
    rng = np.random.default_rng(4)
    x = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = np.where(x["a"] > 0.5, "sun", np.where(x["b"] > 0.8, "snow", "rain")).astype(object)
    model = LogisticRegression().fit(x[:250], y[:250])
    y[250:253] = ["hail", "fog", "hail"]  # classes the model never saw, in the test rows only
    test = x[250:].assign(y=y[250:])
    with caplog.at_level("WARNING"):
        scores = metric_values(evaluate(cfg, TrainedModel(model, test[:2]), test)["metrics"])
    assert "3 test row(s) are of class(es) no training row has ('hail', 'fog')" in caplog.text
    truth, proba = pd.Series(y[250:]), model.predict_proba(x[250:])
    assert scores["accuracy"] == pytest.approx((model.predict(x[250:]) == truth).mean())
    labels = ["fog", "hail", "rain", "snow", "sun"]
    padded = np.zeros((50, 5))
    padded[:, [2, 3, 4]] = proba
    assert scores["log_loss"] == pytest.approx(log_loss(truth, padded, labels=labels))
    per_class = [roc_auc_score(truth == c, padded[:, i]) for i, c in enumerate(labels)]
    support = [(truth == c).sum() for c in labels]
    assert scores["roc_auc"] == pytest.approx(np.average(per_class, weights=support))
    assert scores["log_loss"] > log_loss(truth[3:], proba[3:], labels=labels[2:])
