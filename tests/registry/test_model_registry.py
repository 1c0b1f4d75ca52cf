"""The registry: alias moves and their audit tags, on a real SQLite registry.

The promotion story runs the real pipeline (``run_pipeline``) in one module-scoped store:
first model -> champion; a worse one -> not promoted; a better one -> champion (the old
champion gets ``rollback``); a human moves ``champion``; the next run compares against that;
min_delta holds a small gain back; the same model trained again is not registered again.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.errors import ConfigError, RegistryError
from mlflow_pipeline.registry import model_registry as reg
from mlflow_pipeline.registry.audit import current_user
from mlflow_pipeline.registry.model_registry import ModelRegistry
from mlflow_pipeline.tags import Promotion
from tests.helpers import alias_version
from tests.registry.helpers import two_versions

MODEL = "breast_cancer"
# roc_auc on the 114 test rows: WEAK 0.874 < MEDIUM 0.919 < BOOSTED 0.9939 < GOOD 0.9947 <
# STRONG 0.9954. The gains the story promotes on are beyond the noise (the 95% interval of
# each excludes 0 with seed 42); BOOSTED, GOOD and STRONG are within the noise of each other.
WEAK = ["model=random_forest", "model.n_estimators=1", "model.max_depth=1"]
MEDIUM = ["model=random_forest", "model.n_estimators=1", "model.max_depth=2"]
BOOSTED = ["model=hist_gradient_boosting", "model.max_iter=5"]
GOOD = ["model=hist_gradient_boosting", "model.max_iter=20"]
STRONG = ["model=logistic_regression", "model.max_iter=200"]


def test_no_model_means_no_champion(make_config, tracking_store):
    registry = ModelRegistry.from_config(tracking_store.client(), make_config())
    assert registry.champion() is None
    assert registry.name == MODEL
    assert registry.aliases == reg.Aliases("champion", "challenger", "rollback")


def test_register_alias_and_tag(make_config, tracking_store):
    client = tracking_store.client()
    registry = ModelRegistry.from_config(client, make_config("registry.champion_alias=prod"))
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
    registry = ModelRegistry.from_config(tracking_store.client(), make_config())
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
        steps["after_human"] = snapshot(client, run_pipeline(store.config(*BOOSTED, RECOMPUTE)))
        # min_delta larger than any possible gain: nothing is promoted.
        steps["min_delta"] = snapshot(
            client, run_pipeline(store.config(*GOOD, "promotion.min_delta=0.5", RECOMPUTE))
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
        steps["first_lineage"] = json.loads(
            Path(
                client.download_artifacts(
                    steps["first"]["register_run"], "lineage.json", str(store.root)
                )
            ).read_text()
        )
        # A human moves champion again; the same config as the last run reuses every stage
        # but register (a move it has not recorded; every version here saw the same data, so
        # profile's key, the champion's training profile, is unchanged).
        client.set_registered_model_alias(MODEL, "champion", "1")
        cached = run_pipeline(store.config(*GOOD, "promotion.min_delta=0.5"))
        steps["cached"] = {
            "decisions": cached.decisions,
            "promotion": cached.promotion,
            "aliases": snapshot(client, cached)["aliases"],
        }
        # STRONG trained again: the same model as v3, which is not registered again; as the
        # challenger (v3) it beats the human's v1 and becomes champion once more.
        steps["again"] = snapshot(client, run_pipeline(store.config(*STRONG, RECOMPUTE)))
        versions = client.search_model_versions(f"name='{MODEL}'")
        steps["versions"] = sorted(str(v.version) for v in versions)
        steps["trail"] = ModelRegistry(client, MODEL).audit.moves()
        steps["audit_location"] = client.get_experiment_by_name(f"{MODEL}-audit").artifact_location
        steps["root"] = store.root
        yield steps


def test_first_run_becomes_champion(story):
    first = story["first"]
    assert first["version"] == "1"
    assert first["promotion"]["promote"] is True
    assert first["aliases"] == {"champion": "1", "challenger": "1"}
    assert first["tags"][Promotion.DECISION] == "promoted"
    assert first["tags"][Promotion.REASON] == "no champion yet"
    assert first["tags"][Promotion.CHAMPION_VERSION] == "None"
    assert first["tags"][Promotion.CHAMPION_SCORE] == "None"
    assert first["tags"][Promotion.PIPELINE_RUN] == first["pipeline_run"]


def test_a_version_carries_the_few_lineage_tags_code_reads_and_the_rest_in_its_artifact(story):
    """The UI shows a version's tags in one row: lineage there is where the artifact is and the
    stage runs code reads back (the champion's profile; score's contract and training set)."""
    tags, recorded = story["first"]["tags"], story["first_lineage"]
    lineage = {k: v for k, v in tags.items() if k.startswith("lineage.")}
    register_run = story["first"]["register_run"]
    assert sorted(lineage) == [
        "lineage.artifact",
        "lineage.run.profile",
        "lineage.run.split",
        "lineage.run.validate",
    ]
    assert lineage["lineage.artifact"] == f"runs:/{register_run}/lineage.json"
    assert recorded["pipeline_run_id"] == story["first"]["pipeline_run"]
    for stage in ("profile", "validate", "split"):
        assert lineage[f"lineage.run.{stage}"] == recorded["stages"][stage]["run_id"]
    assert {"ingest", "train", "evaluate"} <= set(recorded["stages"])
    assert {"raw", "test"} <= set(recorded["data_digests"])
    assert recorded["config_digest"]
    assert "scikit-learn" in recorded["packages"]
    assert len(tags) <= 14, sorted(tags)


def test_worse_challenger_leaves_the_champion(story):
    worse = story["worse"]
    assert worse["version"] == "2"
    assert worse["promotion"]["promote"] is False
    assert worse["aliases"] == {"champion": "1", "challenger": "2"}
    tags = worse["tags"]
    assert tags[Promotion.DECISION] == "not_promoted"
    assert tags[Promotion.METRIC] == "roc_auc"
    assert tags[Promotion.CHAMPION_VERSION] == "1"
    assert float(tags[Promotion.CHALLENGER_SCORE]) < float(tags[Promotion.CHAMPION_SCORE])
    # The champion was re-scored on the same test set: the score it got when it was trained.
    assert float(tags[Promotion.CHAMPION_SCORE]) == pytest.approx(
        story["first"]["promotion"]["challenger_score"]
    )
    assert "does not beat champion v1" in tags[Promotion.REASON]


def test_better_challenger_becomes_champion_and_old_one_rollback(story):
    better = story["better"]
    assert better["version"] == "3"
    assert better["promotion"]["promote"] is True
    assert better["aliases"] == {"champion": "3", "challenger": "3", "rollback": "1"}
    assert better["tags"][Promotion.DECISION] == "promoted"
    assert better["tags"][Promotion.CHAMPION_VERSION] == "1"
    assert "beats champion v1" in better["tags"][Promotion.REASON]


def test_next_run_compares_against_the_humans_champion(story):
    after = story["after_human"]
    assert after["version"] == "4"
    # Compared with the human's v2 (weak), not the strong v3 the pipeline had chosen.
    assert after["tags"][Promotion.CHAMPION_VERSION] == "2"
    assert after["promotion"]["comparison"]["low"] > 0
    assert float(after["tags"][Promotion.CHAMPION_SCORE]) == pytest.approx(
        story["worse"]["promotion"]["challenger_score"]
    )
    assert after["promotion"]["promote"] is True
    assert after["aliases"] == {"champion": "4", "challenger": "4", "rollback": "2"}


def test_min_delta_is_respected_through_the_registry(story):
    step = story["min_delta"]
    assert step["promotion"]["promote"] is False
    assert step["promotion"]["challenger_score"] > step["promotion"]["champion_score"]
    assert "min_delta=0.5" in step["tags"][Promotion.REASON]
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


def test_every_alias_move_is_in_the_audit_trail_in_order(story):
    trail = story["trail"]
    assert [(m.alias, m.from_version, m.to_version, m.kind) for m in trail] == [
        ("challenger", None, "1", "pipeline"),  # first
        ("champion", None, "1", "pipeline"),
        ("challenger", "1", "2", "pipeline"),  # worse
        ("challenger", "2", "3", "pipeline"),  # better
        ("champion", "1", "3", "pipeline"),
        ("rollback", None, "1", "pipeline"),
        ("champion", "3", "2", "external"),  # the human, found by the next run
        ("challenger", "3", "4", "pipeline"),  # after_human
        ("champion", "2", "4", "pipeline"),
        ("rollback", "1", "2", "pipeline"),
        ("challenger", "4", "5", "pipeline"),  # min_delta
        ("champion", "4", "1", "external"),  # a human again; the cached rerun finds it
        ("challenger", "5", "3", "pipeline"),  # again: STRONG once more, identical to v3
        ("champion", "1", "3", "pipeline"),
        ("rollback", "2", "1", "pipeline"),
    ]
    times = [m.time_ms for m in trail]
    assert times == sorted(times)
    assert len(set(times)) == len(times)


def test_a_pipeline_move_records_who_why_and_the_scores(story):
    better = story["better"]
    move = next(m for m in story["trail"] if m.alias == "champion" and m.to_version == "3")
    assert move.user == current_user()
    assert move.actor == "mlflow-pipeline register stage"
    assert move.pipeline_run == better["pipeline_run"]
    assert move.stage_run == better["register_run"]
    assert move.reason == better["tags"][Promotion.REASON]
    assert move.metric == "roc_auc"
    assert move.challenger_score == pytest.approx(better["promotion"]["challenger_score"])
    assert move.champion_score == pytest.approx(better["promotion"]["champion_score"])
    worse = story["worse"]
    not_promoted = next(m for m in story["trail"] if m.to_version == "2")
    assert not_promoted.reason.startswith("registered by this run; not promoted: ")
    assert not_promoted.pipeline_run == worse["pipeline_run"]


def test_the_audit_experiment_keeps_its_artifacts_under_the_store(story):
    assert story["audit_location"] == (story["root"] / "mlruns" / f"{MODEL}-audit").as_uri()


def test_the_humans_move_is_recorded_by_the_next_run(story):
    trail = story["trail"]
    human = next(m for m in trail if m.kind == "external")
    pipeline_move = next(m for m in trail if m.alias == "champion" and m.to_version == "3")
    assert human.user == "unknown"
    assert "outside mlflow-pipeline" in human.actor
    assert human.pipeline_run == story["after_human"]["pipeline_run"]
    assert human.moved_after_ms == pipeline_move.time_ms
    assert "moved outside mlflow-pipeline from v3 to v2" in human.reason
    assert story["after_human"]["promotion"]["moved_outside"] == ["champion: v3 -> v2"]
    assert story["after_human"]["promotion"]["audit_experiment"] == f"{MODEL}-audit"
    assert story["min_delta"]["promotion"]["moved_outside"] == []


def test_a_cached_run_after_a_ui_move_reruns_register_against_the_humans_champion(story):
    cached = story["cached"]
    ran = sorted(name for name, d in cached["decisions"].items() if not d.hit)
    assert ran == ["register"], {n: d.reasons for n, d in cached["decisions"].items() if not d.hit}
    reason = "; ".join(cached["decisions"]["register"].reasons)
    assert "alias moves made outside mlflow-pipeline" in reason
    assert "champion: v4 -> v1" in reason
    assert cached["promotion"]["champion_version"] == "1"
    assert cached["promotion"]["moved_outside"] == ["champion: v4 -> v1"]
    # v5 (this config's model) beats v1 by less than min_delta=0.5: champion stays the human's.
    assert cached["promotion"]["promote"] is False
    assert cached["aliases"]["champion"] == "1"


def test_audit_of_prints_the_trail_and_what_is_not_recorded(tracking_store):
    client = tracking_store.client()
    two_versions(client, MODEL)
    client.set_registered_model_alias(MODEL, "champion", "2")
    lines = reg.audit_of(client, MODEL).splitlines()
    assert len(lines) == 5  # header, 2 moves, now, 1 pending
    assert lines[-2] == "now: champion v2, challenger v2, rollback none"
    assert lines[-1].startswith("not recorded yet: champion: v1 -> v2")
    assert reg.audit_of(client, MODEL, "challenger").splitlines()[-1] == "now: challenger v2"
    with pytest.raises(ConfigError, match="no registered model 'nope'"):
        reg.audit_of(client, "nope")


def test_the_same_model_trained_again_is_not_registered_again(story):
    again, better = story["again"], story["better"]
    assert story["versions"] == ["1", "2", "3", "4", "5"]
    report = again["promotion"]
    assert again["version"] == "3"
    assert report["registered"] is False
    assert report["duplicate_of"] == {"version": "3", "pipeline_run": better["pipeline_run"]}
    assert report["content_digest"] == better["tags"]["registry.content_digest"]
    assert report["reason"].startswith("identical to v3 (content digest sha256:")
    assert "not registered again" in report["reason"]
    # As the challenger it beats the human's v1 beyond the noise, and is champion again.
    assert report["promote"] is True
    assert again["aliases"] == {"champion": "3", "challenger": "3", "rollback": "1"}
    # v3's lineage is still the run that registered it; the decision is the latest run's.
    assert again["tags"]["lineage.artifact"] == f"runs:/{better['register_run']}/lineage.json"
    assert again["tags"][Promotion.PIPELINE_RUN] == again["pipeline_run"]
