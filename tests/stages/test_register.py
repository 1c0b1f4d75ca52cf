"""register: the stage on a real registry (the rule itself: tests/registry/test_promotion.py;
the bootstrap: tests/registry/test_comparison.py; real processes: tests/e2e/
test_promotion_faults.py)."""

from __future__ import annotations

import copy
import json

import mlflow
import pandas as pd
import pytest

from mlflow_pipeline.config import load_config
from mlflow_pipeline.errors import StageError
from mlflow_pipeline.registry.model_registry import ModelRegistry
from mlflow_pipeline.schemas import TrainedModel
from mlflow_pipeline.stages.evaluate import evaluate
from mlflow_pipeline.stages.ingest import ingest
from mlflow_pipeline.stages.register import register
from mlflow_pipeline.stages.split import split
from mlflow_pipeline.stages.train import train
from mlflow_pipeline.store import artifacts
from mlflow_pipeline.tags import Promotion, Registry
from tests.helpers import alias_version

WEAK = ["model=random_forest", "model.n_estimators=1", "model.max_depth=1"]


def fitted(*overrides: str):
    """A small fitted model, its test set and its metrics (no MLflow yet)."""
    cfg = load_config(list(overrides))
    parts = split(cfg, ingest(cfg)["raw"])
    model = train(cfg, parts["train"])["model"]
    return model, parts["test"], evaluate(cfg, model, parts["test"])["metrics"]


@pytest.fixture(scope="module")
def trained():
    return fitted("model=logistic_regression")


@pytest.fixture(scope="module")
def weak():
    return fitted(*WEAK)


def logged(model: TrainedModel) -> TrainedModel:
    with mlflow.start_run():
        uri = artifacts.log_model(model.estimator, model.input_example)
    return TrainedModel(model.estimator, model.input_example, uri=uri)


def same_predictions_other_bytes(model: TrainedModel) -> TrainedModel:
    """The same fitted model with a parameter that changes no prediction: another model for
    the registry (another content digest), a tie for the rule."""
    estimator = copy.deepcopy(model.estimator)
    estimator.steps[-1][1].verbose = 1
    return TrainedModel(estimator, model.input_example)


# What lineage.collect returns, for a register call outside a pipeline run.
LINEAGE = {
    "pipeline_run_id": "p1",
    "record_run_id": "r1",
    # The same training data for every register call here (by digest): what a test compares
    # is the models, not which test rows each trained on (tests/engine/test_runner.py does).
    "stages": {
        "train": {"run_id": "t1", "outputs": {"model": "m" * 64}, "inputs_from": {"train": "s1"}},
        "split": {"run_id": "s1"},
    },
    "data_digests": {"test": "d" * 64, "train": "e" * 64},
    "config": "seed: 42\n",
    "config_digest": "c" * 64,
    "code_version": {"commit": "abc", "dirty": False},
    "packages": {"scikit-learn": "1.9.1"},
}


def run_register(cfg, model, test, metrics, client, *, pipeline_run="p1", ends="FINISHED"):
    """register in a real stage run of its own, which ends ``ends`` (FAILED: as a process
    killed after the stage's moves, before its run was finished, leaves it once reaped)."""
    experiment = client.get_experiment_by_name("Default").experiment_id
    stage_run = client.create_run(experiment).info.run_id
    lineage = {**LINEAGE, "record_run_id": stage_run}  # the run that logs lineage.json
    out = register(
        cfg,
        model,
        test,
        metrics,
        registry=ModelRegistry.from_config(client, cfg),
        pipeline_run_id=pipeline_run,
        stage_run_id=stage_run,
        lineage=lineage,
    )
    artifacts.save_text(client, stage_run, "lineage.json", out["lineage"])
    client.set_terminated(stage_run, ends)
    assert json.loads(out["lineage"]) == lineage
    report = json.loads(out["promotion"])
    report["stage_run"] = stage_run
    return report


def versions(client) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions("name = 'm'"))


def test_register_first_then_an_identical_model_is_not_registered_again(trained, tracking_store):
    cfg = tracking_store.config("registry.model_name=m")
    client = tracking_store.client()
    model, test, metrics = trained

    first = run_register(cfg, logged(model), test, metrics, client)
    assert first["promote"] is True
    assert first["registered"] is True
    assert first["model_name"] == "m"
    assert str(first["version"]) == "1"
    assert str(first["champion_version_after"]) == "1"
    assert first["comparison"] is None  # nothing to compare with
    assert first["moves"] == ["challenger: none -> v1", "champion: none -> v1"]
    assert alias_version(client, "m", "champion") == "1"
    assert alias_version(client, "m", "challenger") == "1"
    tags = client.get_model_version("m", "1").tags
    assert tags[Promotion.DECISION] == "promoted"
    assert tags[Promotion.METRIC] == "roc_auc"
    assert tags[Promotion.CHAMPION_VERSION] == "None"
    assert tags[Promotion.PIPELINE_RUN] == "p1"
    assert tags[Promotion.STAGE_RUN] == first["stage_run"]
    assert tags[Registry.CONTENT_DIGEST] == first["content_digest"]
    # The rest of the lineage is in the artifact only (registry.model_registry.lineage_tags).
    assert {k: v for k, v in tags.items() if k.startswith("lineage.")} == {
        "lineage.artifact": f"runs:/{first['stage_run']}/lineage.json",
        "lineage.run.split": "s1",
    }

    # The same model trained and logged again by another pipeline run: not registered again.
    second = run_register(cfg, logged(model), test, metrics, client, pipeline_run="p2")
    assert versions(client) == ["1"]
    assert second["registered"] is False
    assert second["duplicate_of"] == {"version": "1", "pipeline_run": "p1"}
    assert second["content_digest"] == first["content_digest"]
    assert str(second["version"]) == str(second["champion_version_after"]) == "1"
    assert second["promote"] is False
    assert second["reason"] == (
        f"identical to v1 (content digest {first['content_digest'][:19]}…): not registered "
        "again; v1 is already the champion"
    )
    assert second["moves"] == []
    assert client.get_model_version("m", "1").tags == tags  # still the first run's


def test_a_model_with_the_same_predictions_ties_and_is_not_promoted(trained, tracking_store):
    cfg = tracking_store.config("registry.model_name=m")
    client = tracking_store.client()
    model, test, metrics = trained
    run_register(cfg, logged(model), test, metrics, client)

    tie = run_register(cfg, logged(same_predictions_other_bytes(model)), test, metrics, client)
    assert tie["registered"] is True
    assert tie["promote"] is False
    assert float(tie["champion_score"]) == pytest.approx(float(tie["challenger_score"]))
    comparison = tie["comparison"]
    assert (comparison["gain"], comparison["low"], comparison["high"]) == (0.0, 0.0, 0.0)
    assert (comparison["confidence"], comparison["resamples"], comparison["rows"]) == (
        0.95,
        1000,
        len(test),
    )
    assert tie["reason"].startswith("challenger roc_auc=")
    assert "does not beat champion v1 roc_auc=" in tie["reason"]
    assert "by more than 0 (gain 0;" in tie["reason"]
    assert alias_version(client, "m", "champion") == "1"
    assert alias_version(client, "m", "challenger") == "2"
    tags = client.get_model_version("m", "2").tags
    assert tags[Promotion.DECISION] == "not_promoted"
    assert tags[Promotion.CHAMPION_VERSION] == "1"
    assert tags[Promotion.GAIN_INTERVAL] == "0 [0, 0] at 95% (1000 resamples)"
    assert float(tags[Promotion.CHAMPION_SCORE]) == pytest.approx(tie["champion_score"])


def test_a_clearly_better_model_is_promoted_beyond_the_noise(trained, weak, tracking_store):
    cfg = tracking_store.config("registry.model_name=m", "promotion.resamples=300")
    client = tracking_store.client()
    run_register(cfg, logged(weak[0]), *weak[1:], client)

    better = run_register(cfg, logged(trained[0]), *trained[1:], client)
    assert better["promote"] is True
    comparison = better["comparison"]
    assert 0 < comparison["low"] < comparison["gain"] < comparison["high"]
    assert comparison["gain"] == pytest.approx(
        better["challenger_score"] - better["champion_score"]
    )
    assert comparison["resamples"] == 300
    assert "beyond the noise: 95% CI of the gain [" in better["reason"]
    assert better["moves"] == [
        "challenger: v1 -> v2",
        "champion: v1 -> v2",
        "rollback: none -> v1",
    ]
    assert alias_version(client, "m", "rollback") == "1"


def test_the_challenger_is_predicted_only_when_there_is_a_champion(
    trained, weak, tracking_store, monkeypatch
):
    """With no champion the decision needs no prediction (evaluate's score is the challenger's);
    with one, the challenger and the champion are each predicted once."""
    from mlflow_pipeline.stages import register as register_stage

    predicted: list[str] = []
    real = register_stage._predictions

    def counted(estimator, test, cfg):
        predicted.append(type(estimator[-1]).__name__)
        return real(estimator, test, cfg)

    monkeypatch.setattr(register_stage, "_predictions", counted)
    cfg = tracking_store.config("registry.model_name=m", "promotion.resamples=50")
    client = tracking_store.client()
    first = run_register(cfg, logged(weak[0]), *weak[1:], client)
    assert first["promote"] is True
    assert predicted == []
    second = run_register(cfg, logged(trained[0]), *trained[1:], client)
    assert second["comparison"] is not None
    assert sorted(predicted) == ["LogisticRegression", "RandomForestClassifier"]


def test_a_challenger_failing_to_predict_fails_register_even_when_a_champion_came_late(
    trained, weak, tracking_store, monkeypatch
):
    """The look before the lock saw no champion (one registered since, or the registry could
    not say): the challenger is predicted under the lock, and its own failure is not put on
    the champion (which would end "not replaced" with the wrong reason)."""
    from mlflow_pipeline.stages import register as register_stage

    real = register_stage._predictions

    def failing_for_the_challenger(estimator, test, cfg):
        if type(estimator[-1]).__name__ == "LogisticRegression":  # the challenger
            raise MemoryError("no room for the challenger's predictions")
        return real(estimator, test, cfg)

    cfg = tracking_store.config("registry.model_name=m", "promotion.resamples=50")
    client = tracking_store.client()
    run_register(cfg, logged(weak[0]), *weak[1:], client)
    monkeypatch.setattr(register_stage, "_champion_now", lambda registry: None)
    monkeypatch.setattr(register_stage, "_predictions", failing_for_the_challenger)
    with pytest.raises(MemoryError, match="challenger's predictions"):
        run_register(cfg, logged(trained[0]), *trained[1:], client)
    assert versions(client) == ["1"]
    assert alias_version(client, "m", "champion") == "1"


def test_a_rerun_after_a_killed_register_takes_its_decision_over(trained, tracking_store):
    """The register run that registered and promoted the model was killed before finishing."""
    cfg = tracking_store.config("registry.model_name=m")
    client = tracking_store.client()
    model = logged(trained[0])
    killed = run_register(cfg, model, *trained[1:], client, ends="FAILED")
    again = run_register(cfg, model, *trained[1:], client, pipeline_run="p2")
    assert versions(client) == ["1"]
    assert str(again["version"]) == str(again["champion_version_after"]) == "1"
    # The decision recorded when it was registered and promoted stands, now this run's.
    assert again["promote"] is True
    assert again["reason"] == "no champion yet"
    assert again["registered"] is True
    assert again["takes_over"] == killed["stage_run"]
    assert again["moves"] == []
    tags = client.get_model_version("m", "1").tags
    assert tags[Promotion.DECISION] == "promoted"
    assert tags[Promotion.PIPELINE_RUN] == "p2"
    assert tags[Promotion.STAGE_RUN] == again["stage_run"]
    assert alias_version(client, "m", "champion") == "1"


def test_champion_that_fails_on_the_new_test_set_is_not_replaced(trained, tracking_store):
    cfg = tracking_store.config("registry.model_name=m")
    client = tracking_store.client()
    model, test, metrics = trained
    run_register(cfg, logged(model), test, metrics, client)
    # A column renamed in today's data: the new model was trained with it, the champion not.
    renamed = {"mean radius": "radius"}
    parts = split(cfg, ingest(cfg)["raw"].rename(columns=renamed))
    other = logged(train(cfg, parts["train"])["model"])
    report = run_register(cfg, other, parts["test"], metrics, client)
    assert report["promote"] is False
    assert report["reason"].startswith(
        "champion v1 could not be scored on the current test set (the test set has no column "
        "'mean radius', which the model was trained with)"
    ), report["reason"]
    assert report["comparison"] is None
    assert alias_version(client, "m", "champion") == "1"


def test_model_never_logged_is_a_stage_error(trained, tracking_store):
    cfg = tracking_store.config("registry.model_name=m")
    model, test, metrics = trained
    with pytest.raises(StageError, match=r"\[register\] the trained model has no MLflow URI"):
        run_register(cfg, model, test, metrics, tracking_store.client())


def test_promotion_metric_not_computed_is_a_stage_error(trained, tracking_store):
    cfg = tracking_store.config("registry.model_name=m", "promotion.metric=log_loss")
    model, test, _ = trained
    metrics = pd.DataFrame({"metric": ["accuracy"], "value": [0.9]})
    model = TrainedModel(model.estimator, model.input_example, uri="runs:/x/model")
    with pytest.raises(StageError, match=r"promotion\.metric 'log_loss' was not computed"):
        run_register(cfg, model, test, metrics, tracking_store.client())


def test_categories_the_champion_never_saw_are_said(tmp_path):
    """The champion scores a value its encoder never saw as any unknown one: the comparison
    says which, so that a promotion over it is read for what it is."""
    from mlflow_pipeline.stages.register import known_categories, unseen_categories_note
    from tests.helpers import csv_overrides, mixed_frame

    data = tmp_path / "customers.csv"
    frame = mixed_frame(120)
    frame.to_csv(data, index=False)
    cfg = load_config(csv_overrides(data, "model=logistic_regression"))
    model = train(cfg, frame)["model"].estimator
    known = known_categories(model)
    assert sorted(known["city"]) == ["__missing__", "lyon", "nice", "paris"]  # the imputed one
    assert {"basic", "pro"} <= set(known["plan"])
    test = frame.head(10).assign(city=["marseille"] * 3 + [None] + ["paris"] * 6)
    assert unseen_categories_note(model, test, "the test set") == (
        "the test set has values the champion never saw (column 'city': 'marseille' (3 row(s)))"
    )
    assert unseen_categories_note(model, frame, "the test set") is None
