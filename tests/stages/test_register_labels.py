"""register when the label set changes: a class gone from the current data (a year without
snow, a species no longer sampled) or a class the champion never saw. Real models, a real
SQLite registry, the real stage; the decision is said in plain words, never as an exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlflow_pipeline.reports.promotion import promotion_report
from mlflow_pipeline.stages.evaluate import evaluate
from mlflow_pipeline.stages.ingest import ingest
from mlflow_pipeline.stages.split import split
from mlflow_pipeline.stages.train import train
from tests.helpers import alias_version
from tests.stages.test_register import logged, run_register

WEATHER = ["cloud", "fog", "rain", "snow", "sun"]


def weather(n: int, classes: list[str], *, seed: int) -> pd.DataFrame:
    """Daily weather: temperature, humidity and wind separate the classes fairly well."""
    rng = np.random.default_rng(seed)
    label = rng.choice(classes, n)
    where = np.array([WEATHER.index(c) if c in WEATHER else len(WEATHER) for c in label])
    return pd.DataFrame(
        {
            "temp": where * 4.0 + rng.normal(0, 3, n),
            "humidity": (where % 3) * 20.0 + rng.normal(0, 8, n),
            "wind": (where % 2) * 10.0 + rng.normal(0, 4, n),
            "weather": label,
        }
    )


def fitted(tracking_store, path: Path, frame: pd.DataFrame, *overrides: str):
    """A logistic regression fitted on ``frame`` (its own train/test split), logged; its test
    set and metrics; and the config used."""
    frame.to_csv(path, index=False)
    cfg = tracking_store.config(
        "data=csv",
        f"data.path={path}",
        "data.target=weather",
        "data.task=classification",
        "model=logistic_regression",
        "registry.model_name=w",
        "promotion.resamples=200",
        *overrides,
    )
    parts = split(cfg, ingest(cfg)["raw"])
    model = train(cfg, parts["train"])["model"]
    metrics = evaluate(cfg, model, parts["test"])["metrics"]
    return cfg, logged(model), parts["test"], metrics


def assert_plain_decision(report: dict) -> None:
    """A decision with both scores and a comparison, and no exception text in it."""
    reason = report["reason"]
    for raw in ("Error", "KeyError", "could not be scored", "pos_label", "Traceback"):
        assert raw not in reason, reason
    assert np.isfinite(report["champion_score"])
    assert np.isfinite(report["challenger_score"])
    assert report["comparison"] is not None
    assert "champion v1" in reason


def test_a_class_gone_from_the_test_set_compares_on_the_classes_present(tracking_store, tmp_path):
    """The reported case: KeyError 'roc_auc' when a year without snow came."""
    cfg, champion, test, metrics = fitted(
        tracking_store, tmp_path / "y1.csv", weather(600, WEATHER, seed=1)
    )
    assert run_register(cfg, champion, test, metrics, tracking_store.client())["promote"]
    no_snow = [c for c in WEATHER if c != "snow"]
    cfg, challenger, test, metrics = fitted(
        tracking_store, tmp_path / "y2.csv", weather(600, no_snow, seed=2)
    )
    assert "snow" not in set(test["weather"])

    report = run_register(cfg, challenger, test, metrics, tracking_store.client())

    assert_plain_decision(report)
    assert report["reason"].startswith(
        "class 'snow' is not in the test set; both models compared on the 4 classes present: "
        "challenger roc_auc="
    )
    labels = report["labels"]
    assert labels["missing"] == ["snow"]
    assert labels["unseen"] == []
    assert labels["labels"] == no_snow
    assert labels["rows_compared"] == labels["rows"] == len(test) == report["comparison"]["rows"]
    assert report["comparison"]["gain"] == pytest.approx(
        report["challenger_score"] - report["champion_score"]
    )
    # Both models score well on the classes present; the paired-bootstrap rule decides.
    assert report["champion_score"] > 0.8
    assert report["champion_version_after"] == ("2" if report["promote"] else "1")
    assert alias_version(tracking_store.client(), "w", "champion") == str(
        report["champion_version_after"]
    )
    html = promotion_report(report)
    assert "<h2>Labels</h2>" in html
    assert "class &#x27;snow&#x27; is not in the test set" in html


def test_a_class_the_champion_never_saw_is_judged_on_every_row(tracking_store, tmp_path):
    """The champion cannot predict a class it never saw: on today's data it is wrong on those
    rows, and it is judged so (not on the other rows only, where it would keep its place)."""
    no_hail = ["cloud", "rain", "sun"]
    cfg, champion, test, metrics = fitted(
        tracking_store, tmp_path / "y1.csv", weather(500, no_hail, seed=3)
    )
    assert run_register(cfg, champion, test, metrics, tracking_store.client())["promote"]
    cfg, challenger, test, metrics = fitted(
        tracking_store, tmp_path / "y2.csv", weather(500, [*no_hail, "hail"], seed=4)
    )
    hail = int((test["weather"] == "hail").sum())
    assert hail > 0

    report = run_register(cfg, challenger, test, metrics, tracking_store.client())

    assert_plain_decision(report)
    assert report["reason"].startswith(
        f"the test set has class 'hail' the champion never saw: both models judged on all "
        f"{len(test)} rows, including the champion on the {hail} of class 'hail', which it "
        "cannot predict: challenger roc_auc="
    )
    assert report["labels"]["unseen"] == ["hail"]
    assert report["labels"]["rows_compared"] == len(test) == report["comparison"]["rows"]
    assert report["promote"] is True  # it predicts the new class; the champion cannot
    assert report["challenger_score"] == pytest.approx(
        dict(zip(metrics["metric"], metrics["value"], strict=True))["roc_auc"], rel=1e-12
    )
    html = promotion_report(report)
    assert "Labels in the test set the champion never saw" in html
    assert "&#x27;hail&#x27;" in html
    tags = tracking_store.client().get_model_version("w", "2").tags
    assert tags["promotion.reason"].startswith("the test set has class 'hail'")


def test_a_species_gone_binary_challenger_against_a_three_class_champion(tracking_store, tmp_path):
    """The reported case: ValueError pos_label=... is not a valid label (f1)."""
    three = ["cloud", "rain", "sun"]
    cfg, champion, test, metrics = fitted(
        tracking_store, tmp_path / "y1.csv", weather(500, three, seed=5), "promotion.metric=f1"
    )
    assert run_register(cfg, champion, test, metrics, tracking_store.client())["promote"]
    cfg, challenger, test, metrics = fitted(
        tracking_store, tmp_path / "y2.csv", weather(500, ["rain", "sun"], seed=6),
        "promotion.metric=f1",
    )  # fmt: skip

    report = run_register(cfg, challenger, test, metrics, tracking_store.client())

    assert_plain_decision(report)
    assert report["reason"].startswith(
        "class 'cloud' is not in the test set; both models compared on the 2 classes present: "
        "challenger f1="
    )
    # One definition for both: F1 weighted over the two classes present (not the binary F1
    # evaluate reports for the challenger alone).
    assert report["labels"]["labels"] == ["rain", "sun"]


def test_a_champion_that_knows_none_of_todays_classes_is_replaced(tracking_store, tmp_path):
    cfg, champion, test, metrics = fitted(
        tracking_store, tmp_path / "y1.csv", weather(300, ["cloud", "rain"], seed=7)
    )
    run_register(cfg, champion, test, metrics, tracking_store.client())
    cfg, challenger, test, metrics = fitted(
        tracking_store, tmp_path / "y2.csv", weather(300, ["fog", "snow"], seed=8)
    )

    report = run_register(cfg, challenger, test, metrics, tracking_store.client())

    assert report["reason"].startswith(
        "classes 'cloud', 'rain' are not in the test set; the test set has classes 'fog', "
        f"'snow' the champion never saw: both models judged on all {len(test)} rows, including "
        f"the champion on the {len(test)} of classes 'fog', 'snow', which it cannot predict: "
        "challenger roc_auc="
    )
    assert report["champion_score"] == 0.5  # no score for either class: every pair a tie
    assert report["promote"] is True
    assert alias_version(tracking_store.client(), "w", "champion") == "2"


def test_a_class_both_models_know_is_gone_from_this_test_set(tracking_store, tmp_path):
    """One of both models' classes has no test row: evaluate's roc_auc for the challenger and
    register's comparison both use the metric defined on the classes present, one figure."""
    cfg, champion, test, metrics = fitted(
        tracking_store, tmp_path / "y1.csv", weather(600, WEATHER, seed=1)
    )
    run_register(cfg, champion, test, metrics, tracking_store.client())
    cfg, challenger, test, _ = fitted(
        tracking_store, tmp_path / "y2.csv", weather(600, WEATHER, seed=2)
    )
    test = test[test["weather"] != "snow"]
    metrics = evaluate(cfg, challenger, test)["metrics"]
    evaluated = dict(zip(metrics["metric"], metrics["value"], strict=True))["roc_auc"]

    report = run_register(cfg, challenger, test, metrics, tracking_store.client())
    assert report["challenger_score"] == pytest.approx(evaluated, rel=1e-12)

    assert_plain_decision(report)
    assert report["reason"].startswith(
        "class 'snow' is not in the test set; both models compared on the 4 classes present: "
        "challenger roc_auc="
    )
    assert report["comparison"]["rows"] == len(test)
