"""The paired bootstrap: its vectorised metrics are scikit-learn's (resampling rows is weighting
them by their counts), its interval behaves on known cases (identical models, a clearly
better one, a gain within the noise), and it stays fast on 10,000 test rows."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn import metrics as skm

from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.registry import comparison
from mlflow_pipeline.registry.comparison import (
    Predictions,
    _counts,
    _RowStats,
    check_settings,
    common_ground,
    paired_bootstrap,
    score_of,
)
from mlflow_pipeline.registry.promotion import judge

RNG = np.random.default_rng(7)
N = 400


def binary(n: int = N, *, seed: int = 0, noise: float = 0.7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.round(np.clip(y * (1 - noise) + rng.random(n) * noise, 0, 1), 2)  # with ties
    return y, Predictions((score > 0.5).astype(int), np.c_[1 - score, score], [0, 1])


def multiclass(n: int = N):
    y = RNG.integers(0, 3, n)
    raw = RNG.random((n, 3)) + np.eye(3)[y] * 0.5
    proba = raw / raw.sum(axis=1, keepdims=True)
    return y, Predictions(proba.argmax(axis=1), proba, [0, 1, 2])


def regression(n: int = N):
    y = RNG.normal(100, 10, n)
    return y, Predictions(y + RNG.normal(0, 3, n))


CASES = {
    "binary roc_auc": (
        binary,
        "roc_auc",
        lambda y, p, w: skm.roc_auc_score(y, p.proba[:, 1], sample_weight=w),
    ),
    "binary accuracy": (
        binary,
        "accuracy",
        lambda y, p, w: skm.accuracy_score(y, p.y_pred, sample_weight=w),
    ),
    "binary f1": (
        binary,
        "f1",
        lambda y, p, w: skm.f1_score(y, p.y_pred, sample_weight=w, pos_label=1),
    ),
    "binary log_loss": (
        binary,
        "log_loss",
        lambda y, p, w: skm.log_loss(y, p.proba, sample_weight=w, labels=[0, 1]),
    ),
    "multiclass roc_auc": (
        multiclass,
        "roc_auc",
        lambda y, p, w: skm.roc_auc_score(
            y, p.proba, sample_weight=w, multi_class="ovr", average="weighted", labels=[0, 1, 2]
        ),
    ),
    "multiclass f1": (
        multiclass,
        "f1",
        lambda y, p, w: skm.f1_score(y, p.y_pred, sample_weight=w, average="weighted"),
    ),
    "multiclass log_loss": (
        multiclass,
        "log_loss",
        lambda y, p, w: skm.log_loss(y, p.proba, sample_weight=w, labels=[0, 1, 2]),
    ),
    "rmse": (
        regression,
        "rmse",
        lambda y, p, w: np.sqrt(skm.mean_squared_error(y, p.y_pred, sample_weight=w)),
    ),
    "mae": (
        regression,
        "mae",
        lambda y, p, w: skm.mean_absolute_error(y, p.y_pred, sample_weight=w),
    ),
    "r2": (regression, "r2", lambda y, p, w: skm.r2_score(y, p.y_pred, sample_weight=w)),
}


@pytest.mark.parametrize("case", CASES)
def test_each_metric_is_sklearns_on_the_resampled_rows(case):
    make, metric, sklearn_metric = CASES[case]
    y, predictions = make()
    weights = _counts(np.random.default_rng(0), 4, len(y))  # resamples x rows, as drawn
    columns = np.column_stack([np.ones(len(y), dtype=weights.dtype), weights.T])  # as scored
    ours = _RowStats(metric, y, predictions).scores(columns)
    theirs = [sklearn_metric(y, predictions, w) for w in columns.T]
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    # The same as float weights (what sklearn gets), and as rows drawn with replacement.
    floats = _RowStats(metric, y, predictions).scores(columns.astype(float))
    assert floats == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    drawn = np.repeat(np.arange(len(y)), weights[0])
    resampled = Predictions(
        predictions.y_pred[drawn],
        None if predictions.proba is None else predictions.proba[drawn],
        predictions.classes,
    )
    assert sklearn_metric(y[drawn], resampled, None) == pytest.approx(ours[1], rel=1e-9)


def decide(comparison, challenger: float, champion: float):
    return judge(
        metric=comparison.metric,
        greater_is_better=comparison.greater_is_better,
        challenger_score=challenger,
        champion_score=champion,
        champion_version="1",
        min_delta=0.0,
        comparison=comparison,
    )


def test_identical_models_interval_contains_zero_not_promoted():
    y, predictions = binary()
    comparison = paired_bootstrap("roc_auc", y, predictions, predictions, greater_is_better=True)
    assert (comparison.gain, comparison.low, comparison.high) == (0.0, 0.0, 0.0)
    assert decide(comparison, 0.9, 0.9).promote is False


def test_a_clearly_better_model_is_promoted():
    y, weak = binary(noise=0.95)
    strong = Predictions(weak.y_pred, np.c_[1 - y * 0.6 - 0.2, y * 0.6 + 0.2], [0, 1])
    comparison = paired_bootstrap("roc_auc", y, strong, weak, greater_is_better=True, seed=3)
    assert comparison.low > 0
    assert comparison.low < comparison.gain < comparison.high
    challenger = skm.roc_auc_score(y, strong.proba[:, 1])
    champion = skm.roc_auc_score(y, weak.proba[:, 1])
    assert comparison.gain == pytest.approx(challenger - champion)
    decision = decide(comparison, challenger, champion)
    assert decision.promote is True
    assert "beyond the noise: 95% CI of the gain [" in decision.reason


def test_a_gain_within_the_noise_is_not_promoted():
    """The issue's case: a tiny roc_auc gain on 114 test rows."""
    y, champion = binary(114, seed=4)
    score = champion.proba[:, 1].copy()
    score[np.flatnonzero(y == 1)[0]] += 0.015  # one positive ranked a little higher
    challenger = Predictions(champion.y_pred, np.c_[1 - score, score], [0, 1])
    comparison = paired_bootstrap("roc_auc", y, challenger, champion, greater_is_better=True)
    assert 0 < comparison.gain < 0.01
    assert comparison.low <= 0 < comparison.high
    decision = decide(
        comparison,
        skm.roc_auc_score(y, score),
        skm.roc_auc_score(y, champion.proba[:, 1]),
    )
    assert decision.promote is False
    assert "includes 0" in decision.reason


def test_lower_is_better_gain_is_champion_minus_challenger():
    y, champion = regression()
    better = Predictions(y + (champion.y_pred - y) * 0.5)
    comparison = paired_bootstrap("rmse", y, better, champion, greater_is_better=False)
    assert comparison.gain > 0
    assert comparison.low > 0


def test_seeded_and_configurable():
    y, a = binary(seed=1)
    _, b = binary(seed=2)
    first = paired_bootstrap("accuracy", y, a, b, greater_is_better=True, seed=5, resamples=200)
    again = paired_bootstrap("accuracy", y, a, b, greater_is_better=True, seed=5, resamples=200)
    other = paired_bootstrap("accuracy", y, a, b, greater_is_better=True, seed=6, resamples=200)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    narrow = paired_bootstrap(
        "accuracy", y, a, b, greater_is_better=True, seed=5, resamples=200, confidence=0.5
    )
    assert first.low < narrow.low < narrow.high < first.high
    assert (first.resamples, first.rows, first.confidence) == (200, N, 0.95)


@pytest.mark.parametrize("case", CASES)
def test_the_stage_threads_score_the_same_resamples(case):
    """Resamples are drawn in order in one thread and scored on the stage's threads: the
    interval is the same to the last bit whatever the thread count (several chunks each)."""
    from threadpoolctl import threadpool_limits

    make, metric, _ = CASES[case]
    y, challenger = make()
    proba = None if challenger.proba is None else np.roll(challenger.proba, 1, axis=0)
    champion = Predictions(np.roll(challenger.y_pred, 1), proba, challenger.classes)
    rows = len(y)
    kwargs = dict(greater_is_better=True, seed=3, resamples=60)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(comparison, "CHUNK_CELLS", rows * 7)  # 9 chunks of 7 resamples
        with threadpool_limits(1):
            one = paired_bootstrap(metric, y, challenger, champion, **kwargs)
        with threadpool_limits(2):
            two = paired_bootstrap(metric, y, challenger, champion, **kwargs)
    assert two == one


def test_a_metric_undefined_in_the_resamples_gives_no_interval():
    y = np.zeros(20, dtype=int)  # no positive: roc_auc is undefined everywhere
    predictions = Predictions(y, np.c_[np.ones(20), np.zeros(20)], [0, 1])
    comparison = paired_bootstrap("roc_auc", y, predictions, predictions, greater_is_better=True)
    assert not comparison.estimated
    assert comparison.defined == 0
    assert comparison.as_dict()["low"] is None
    assert "no 95% interval: roc_auc was undefined in 1000 of 1000" in comparison.describe()


@pytest.mark.parametrize(
    ("confidence", "resamples", "match"),
    [
        (1.0, 1000, "promotion.confidence must be between 0 and 1"),
        (0.0, 1000, "promotion.confidence must be between 0 and 1"),
        (0.95, 5, "promotion.resamples must be at least 10"),
    ],
)
def test_bad_settings_are_config_errors(confidence, resamples, match):
    with pytest.raises(ConfigError, match=match):
        check_settings(confidence, resamples)


def test_ten_thousand_rows_a_thousand_resamples_stay_fast():
    y, champion = binary(10_000, seed=8)
    _, challenger = binary(10_000, seed=9)
    challenger = Predictions(challenger.y_pred, challenger.proba, [0, 1])
    started = time.perf_counter()
    comparison = paired_bootstrap("roc_auc", y, challenger, champion, greater_is_better=True)
    elapsed = time.perf_counter() - started
    assert comparison.defined == 1000
    assert elapsed < 10, f"{elapsed:.1f} s"  # ~0.5 s on a quiet 2-core machine


# ---- when the test set's labels are not the classes the models know ---------------------------

SEASONS = ["cloud", "rain", "snow", "sun"]


def seasons(n: int = N, *, labels: list[str], classes: list[str], seed: int = 0):
    """Labels drawn from ``labels``; a model that knows ``classes`` (probabilities that favour
    the true class when it knows it)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(labels, n)
    raw = rng.random((n, len(classes)))
    raw += np.array([[c == v for c in classes] for v in y]) * 0.8
    proba = raw / raw.sum(axis=1, keepdims=True)
    return y, Predictions(np.asarray(classes)[proba.argmax(axis=1)], proba, classes)


def test_same_labels_need_no_common_ground():
    y, predictions = multiclass()
    assert common_ground(y, [0, 1, 2], [0, 1, 2]) is None
    assert common_ground(np.array([1.5, 2.0]), None) is None  # a regressor


def test_a_class_gone_from_the_test_set_is_named_and_every_row_kept():
    y, champion = seasons(labels=["cloud", "rain", "sun"], classes=SEASONS)
    ground = common_ground(y, SEASONS, ["cloud", "rain", "sun"])
    assert ground.note == (
        "class 'snow' is not in the test set; both models compared on the 3 classes present"
    )
    assert ground.rows.all()
    # Among the rows left after those the champion trained on: said of those rows.
    fewer = common_ground(
        y, SEASONS, [*SEASONS, "hail"], where="the test rows the champion did not train on"
    )
    assert fewer.note == (
        "class 'snow' is not in the test rows the champion did not train on; both models "
        "compared on the 3 classes present"
    )
    assert fewer.as_dict()["where"] == "the test rows the champion did not train on"
    assert (ground.missing, ground.unseen, ground.labels) == (
        ["snow"],
        [],
        ["cloud", "rain", "sun"],
    )
    # roc_auc: one-vs-rest weighted by support over the classes present (sklearn's weighted
    # OVR refuses a class without rows, and probabilities of a subset of classes).
    ours = score_of("roc_auc", y, champion, ground.labels)
    present = [SEASONS.index(c) for c in ground.labels]
    theirs = sum(
        (y == c).sum() * skm.roc_auc_score(y == c, champion.proba[:, i])
        for c, i in zip(ground.labels, present, strict=True)
    ) / len(y)
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert score_of("f1", y, champion, ground.labels) == pytest.approx(
        skm.f1_score(y, champion.y_pred, average="weighted", labels=ground.labels)
    )


def test_a_class_the_champion_never_saw_is_judged_on_every_row_it_gets_wrong():
    """The champion cannot predict a class it never saw: judged on every row, it gets those
    wrong (probability 0), as sklearn scores it with a column of zeros for that class."""
    y, champion = seasons(labels=[*SEASONS, "hail"], classes=SEASONS)
    ground = common_ground(y, SEASONS, [*SEASONS, "hail"])
    hail = int((y == "hail").sum())
    assert hail > 0
    assert ground.compared == N
    assert ground.note == (
        f"the test set has class 'hail' the champion never saw: both models judged on all {N} "
        f"rows, including the champion on the {hail} of class 'hail', which it cannot predict"
    )
    assert ground.labels == sorted([*SEASONS, "hail"])
    assert ground.as_dict()["unseen"] == ["hail"]

    judged = ground.of(champion)
    assert list(judged.classes) == [*SEASONS, "hail"]
    assert (judged.proba[:, -1] == 0).all()
    order = [list(judged.classes).index(c) for c in ground.labels]
    padded = judged.proba[:, order]  # sklearn wants the columns in sorted label order
    assert score_of("roc_auc", y, judged, ground.labels) == pytest.approx(
        skm.roc_auc_score(y, padded, multi_class="ovr", average="weighted", labels=ground.labels),
        rel=1e-12,
    )
    assert score_of("accuracy", y, judged, ground.labels) == pytest.approx(
        skm.accuracy_score(y, champion.y_pred)
    )
    assert score_of("f1", y, judged, ground.labels) == pytest.approx(
        skm.f1_score(y, champion.y_pred, average="weighted", labels=ground.labels)
    )
    assert score_of("log_loss", y, judged, ground.labels) == pytest.approx(
        skm.log_loss(y, padded, labels=ground.labels), rel=1e-9
    )


def test_a_binary_champion_whose_positive_class_is_gone_is_still_scored():
    """sklearn's binary f1 raises (pos_label='sun' is not a valid label, or the target is
    multiclass); on the common ground both get F1 weighted over the classes present."""
    y, champion = seasons(labels=["cloud", "rain"], classes=["rain", "sun"])
    same_y, challenger = seasons(labels=["cloud", "rain"], classes=["cloud", "rain"])
    assert (same_y == y).all()
    with pytest.raises(ValueError, match="multiclass|pos_label"):
        skm.f1_score(y, champion.y_pred, pos_label="sun")
    ground = common_ground(y, champion.classes, challenger.classes)
    cloud = int((y == "cloud").sum())
    assert ground.note == (
        "class 'sun' is not in the test set; the test set has class 'cloud' the champion never "
        f"saw: both models judged on all {N} rows, including the champion on the {cloud} of "
        "class 'cloud', which it cannot predict"
    )
    assert ground.labels == ["cloud", "rain"]
    scores = [
        score_of("f1", y[ground.rows], ground.of(p), ground.labels) for p in (challenger, champion)
    ]
    assert all(np.isfinite(scores))
    comparison = paired_bootstrap(
        "f1", y[ground.rows], ground.of(challenger), ground.of(champion),
        greater_is_better=True, labels=ground.labels, resamples=100,
    )  # fmt: skip
    assert comparison.rows == ground.compared
    assert comparison.gain == pytest.approx(scores[0] - scores[1])
