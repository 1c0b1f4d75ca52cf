"""The registry: alias moves and their audit tags, on a real SQLite registry.

The promotion story runs the real pipeline (``run_pipeline``) five times in one module-scoped
store: first model -> champion; a worse one -> not promoted; a better one -> champion (the old
champion gets ``rollback``); a human moves ``champion``; the next run compares against that.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mlflow_pipeline import registry as reg
from mlflow_pipeline.errors import RegistryError
from mlflow_pipeline.registry import ModelRegistry
from mlflow_pipeline.runner import run_pipeline
from tests.helpers import alias_version

MODEL = "breast_cancer"
MEDIUM = ["model=hist_gradient_boosting", "model.max_iter=20"]
WEAK = ["model=random_forest", "model.n_estimators=1", "model.max_depth=1"]
STRONG = ["model=logistic_regression", "model.max_iter=200"]


def test_no_model_means_no_champion(make_config, tracking_store):
    registry = ModelRegistry(tracking_store.client(), make_config())
    assert registry.champion() is None
    assert registry.name == MODEL
    assert registry.aliases == reg.Aliases("champion", "challenger", "rollback")


def test_register_alias_and_tag(make_config, tracking_store):
    client = tracking_store.client()
    registry = ModelRegistry(client, make_config("registry.champion_alias=prod"))
    with mlflow.start_run():
        mlflow.log_text("x", "model/x.txt")
        uri = mlflow.get_artifact_uri("model")
    version = registry.register(uri, {"k": "v"})
    assert registry.version_by_alias("prod") is None
    registry.set_alias("prod", version.version)
    registry.tag_version(version.version, {"t": "1"})
    assert str(registry.champion().version) == str(version.version)
    tags = client.get_model_version(MODEL, version.version).tags
    assert tags == {"k": "v", "t": "1"}


def test_alias_on_a_missing_version(make_config, tracking_store):
    registry = ModelRegistry(tracking_store.client(), make_config())
    with mlflow.start_run():
        mlflow.log_text("x", "model/x.txt")
        registry.register(mlflow.get_artifact_uri("model"), {})
    with pytest.raises(
        RegistryError, match=r"cannot set alias 'champion' on 'breast_cancer' version 9"
    ):
        registry.set_alias("champion", "9")


RECOMPUTE = "cache.policy=recompute"


def snapshot(client: MlflowClient, result) -> dict:
    aliases = {
        alias: alias_version(client, MODEL, alias)
        for alias in ("champion", "challenger", "rollback")
        if alias in client.get_registered_model(MODEL).aliases
    }
    version = str(result.promotion["version"])
    return {
        "promotion": result.promotion,
        "aliases": aliases,
        "tags": client.get_model_version(MODEL, version).tags,
        "version": version,
        "register_run": result.stage_run_ids["register"],
        "pipeline_run": result.pipeline_run_id,
    }


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, open_store) -> dict:
    # Every run trains afresh (the cache would reuse the first MEDIUM run's result).
    with open_store(tmp_path_factory.mktemp("registry-story")) as store:
        client = store.client()
        steps = {}
        for name, overrides in (("first", MEDIUM), ("worse", WEAK), ("better", STRONG)):
            steps[name] = snapshot(client, run_pipeline(store.config(*overrides, RECOMPUTE)))
        # A human rolls the champion back to the weak v2 in the UI.
        client.set_registered_model_alias(MODEL, "champion", "2")
        steps["after_human"] = snapshot(client, run_pipeline(store.config(*MEDIUM, RECOMPUTE)))
        # min_delta larger than any possible gain: nothing is promoted.
        steps["min_delta"] = snapshot(
            client, run_pipeline(store.config(*STRONG, "promotion.min_delta=0.5", RECOMPUTE))
        )
        steps["promotion_json"] = {
            name: json.loads(
                Path(
                    client.download_artifacts(
                        step["register_run"], "promotion.json", str(store.root)
                    )
                ).read_text()
            )
            for name, step in steps.items()
            if name in ("first", "better")
        }
        yield steps


def test_first_run_becomes_champion(story):
    first = story["first"]
    assert first["version"] == "1"
    assert first["promotion"]["promote"] is True
    assert first["aliases"] == {"champion": "1", "challenger": "1"}
    assert first["tags"][reg.TAG_DECISION] == "promoted"
    assert first["tags"][reg.TAG_REASON] == "no champion yet"
    assert first["tags"][reg.TAG_CHAMPION_VERSION] == "None"
    assert first["tags"][reg.TAG_CHAMPION_SCORE] == "None"
    assert first["tags"][reg.TAG_PIPELINE_RUN] == first["pipeline_run"]


def test_worse_challenger_leaves_the_champion(story):
    worse = story["worse"]
    assert worse["version"] == "2"
    assert worse["promotion"]["promote"] is False
    assert worse["aliases"] == {"champion": "1", "challenger": "2"}
    tags = worse["tags"]
    assert tags[reg.TAG_DECISION] == "not_promoted"
    assert tags[reg.TAG_METRIC] == "roc_auc"
    assert tags[reg.TAG_CHAMPION_VERSION] == "1"
    assert float(tags[reg.TAG_CHALLENGER_SCORE]) < float(tags[reg.TAG_CHAMPION_SCORE])
    # The champion was re-scored on the same test set: the score it got when it was trained.
    assert float(tags[reg.TAG_CHAMPION_SCORE]) == pytest.approx(
        story["first"]["promotion"]["challenger_score"]
    )
    assert "does not beat champion v1" in tags[reg.TAG_REASON]


def test_better_challenger_becomes_champion_and_old_one_rollback(story):
    better = story["better"]
    assert better["version"] == "3"
    assert better["promotion"]["promote"] is True
    assert better["aliases"] == {"champion": "3", "challenger": "3", "rollback": "1"}
    assert better["tags"][reg.TAG_DECISION] == "promoted"
    assert better["tags"][reg.TAG_CHAMPION_VERSION] == "1"
    assert "beats champion v1" in better["tags"][reg.TAG_REASON]


def test_next_run_compares_against_the_humans_champion(story):
    after = story["after_human"]
    assert after["version"] == "4"
    # Compared with the human's v2 (weak), not the strong v3 the pipeline had chosen.
    assert after["tags"][reg.TAG_CHAMPION_VERSION] == "2"
    assert float(after["tags"][reg.TAG_CHAMPION_SCORE]) == pytest.approx(
        story["worse"]["promotion"]["challenger_score"]
    )
    assert after["promotion"]["promote"] is True
    assert after["aliases"] == {"champion": "4", "challenger": "4", "rollback": "2"}


def test_min_delta_is_respected_through_the_registry(story):
    step = story["min_delta"]
    assert step["promotion"]["promote"] is False
    assert step["promotion"]["challenger_score"] > step["promotion"]["champion_score"]
    assert "min_delta=0.5" in step["tags"][reg.TAG_REASON]
    assert step["aliases"] == {"champion": "4", "challenger": "5", "rollback": "2"}


def test_promotion_json_artifact(story):
    report = story["promotion_json"]["better"]
    assert report == story["better"]["promotion"]
    assert report["model_name"] == MODEL
    assert report["metric"] == "roc_auc"
    assert report["greater_is_better"] is True
    assert str(report["champion_version"]) == "1"
    assert str(report["champion_version_after"]) == "3"
    assert story["promotion_json"]["first"]["reason"] == "no champion yet"
