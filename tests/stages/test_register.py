"""register: the stage on a real registry (the rule itself: tests/registry/test_promotion.py)."""

from __future__ import annotations

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
from mlflow_pipeline.tags import Promotion
from tests.helpers import alias_version


@pytest.fixture(scope="module")
def trained():
    """A small fitted model, its test set and its metrics (no MLflow yet)."""
    cfg = load_config(["model=logistic_regression"])
    parts = split(cfg, ingest(cfg)["raw"])
    model = train(cfg, parts["train"])["model"]
    return model, parts["test"], evaluate(cfg, model, parts["test"])["metrics"]


def logged(model: TrainedModel) -> TrainedModel:
    with mlflow.start_run():
        uri = artifacts.log_model(model.estimator, model.input_example)
    return TrainedModel(model.estimator, model.input_example, uri=uri)


# What lineage.collect returns, for a register call outside a pipeline run.
LINEAGE = {
    "pipeline_run_id": "p1",
    "record_run_id": "r1",
    "stages": {"train": {"run_id": "t1"}, "split": {"run_id": "s1"}},
    "data_digests": {"test": "d" * 64},
    "config": "seed: 42\n",
    "config_digest": "c" * 64,
    "code_version": {"commit": "abc", "dirty": False},
    "packages": {"scikit-learn": "1.9.1"},
}


def run_register(cfg, model, test, metrics, client) -> dict:
    out = register(
        cfg,
        model,
        test,
        metrics,
        registry=ModelRegistry.from_config(client, cfg),
        pipeline_run_id="p1",
        stage_run_id="s1",
        lineage=LINEAGE,
    )
    assert json.loads(out["lineage"]) == LINEAGE
    return json.loads(out["promotion"])


def test_register_first_then_a_tie(trained, tracking_store):
    cfg = tracking_store.config("registry.model_name=m")
    client = tracking_store.client()
    model, test, metrics = trained
    model = logged(model)

    first = run_register(cfg, model, test, metrics, client)
    assert first["promote"] is True
    assert first["model_name"] == "m"
    assert str(first["version"]) == "1"
    assert str(first["champion_version_after"]) == "1"
    assert alias_version(client, "m", "champion") == "1"
    assert alias_version(client, "m", "challenger") == "1"
    tags = client.get_model_version("m", "1").tags
    assert tags[Promotion.DECISION] == "promoted"
    assert tags[Promotion.METRIC] == "roc_auc"
    assert tags[Promotion.CHAMPION_VERSION] == "None"
    assert tags[Promotion.PIPELINE_RUN] == "p1"
    assert tags["lineage.run.train"] == "t1"
    assert tags["lineage.digest.test"] == "d" * 64
    assert tags["lineage.git_commit"] == "abc"
    assert tags["lineage.git_dirty"] == "false"
    assert tags["lineage.packages"] == "scikit-learn==1.9.1"
    assert tags["lineage.artifact"] == "runs:/r1/lineage.json"

    # An equal model logged again: the champion is re-scored on this test set and ties.
    second = run_register(cfg, logged(trained[0]), test, metrics, client)
    assert second["promote"] is False
    assert float(second["champion_score"]) == pytest.approx(float(second["challenger_score"]))
    assert alias_version(client, "m", "champion") == "1"
    assert alias_version(client, "m", "challenger") == "2"
    tags = client.get_model_version("m", "2").tags
    assert tags[Promotion.DECISION] == "not_promoted"
    assert tags[Promotion.CHAMPION_VERSION] == "1"
    assert float(tags[Promotion.CHAMPION_SCORE]) == pytest.approx(second["champion_score"])


def test_registering_the_same_model_again_adds_no_version(trained, tracking_store):
    """A rerun after a crash inside register: the model is registered already."""
    cfg = tracking_store.config("registry.model_name=m")
    client = tracking_store.client()
    model = logged(trained[0])
    run_register(cfg, model, trained[1], trained[2], client)
    again = run_register(cfg, model, trained[1], trained[2], client)
    assert str(again["version"]) == "1"
    assert str(again["champion_version_after"]) == "1"
    # The decision recorded when it was registered and promoted stands.
    assert again["promote"] is True
    assert again["reason"] == "no champion yet"
    assert client.get_model_version("m", "1").tags[Promotion.DECISION] == "promoted"
    assert alias_version(client, "m", "champion") == "1"
    assert [str(v.version) for v in client.search_model_versions("name = 'm'")] == ["1"]


def test_champion_that_fails_on_the_new_test_set_is_not_replaced(trained, tracking_store):
    cfg = tracking_store.config("registry.model_name=m")
    client = tracking_store.client()
    model, test, metrics = trained
    run_register(cfg, logged(model), test, metrics, client)
    renamed = test.rename(columns={"mean radius": "radius"})
    report = run_register(cfg, logged(model), renamed, metrics, client)
    assert report["promote"] is False
    assert "could not be scored" in report["reason"]
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
