"""`mlflow run` of the root project (whole pipeline, then a slice) and of one stage project."""

from __future__ import annotations

import pytest

from .helpers import (
    CHAMPION_DATA,
    CHAMPION_MODEL,
    CHAMPION_OVERRIDES,
    CLASSIFICATION_METRICS,
    REPO,
    STAGES,
    Store,
    assert_ok,
    assert_stage_run_complete,
)

pytestmark = pytest.mark.slow

MODEL = "breast_cancer"
EXPERIMENT = "breast_cancer"
SMALL_MODEL = "model.max_iter=30"


def test_mlflow_run_whole_pipeline_then_a_slice_reusing_its_split(store: Store) -> None:
    first = store.mlflow_run(hydra_options=SMALL_MODEL, experiment_name=EXPERIMENT)
    assert_ok(first)

    [pipeline] = store.runs_of_kind("pipeline")
    pipeline_id = pipeline.info.run_id
    assert pipeline.info.status == "FINISHED"
    assert store.client.get_experiment(pipeline.info.experiment_id).name == EXPERIMENT
    assert "config.yaml" in store.artifacts(pipeline_id)
    stages = store.stage_runs(pipeline_id)
    assert sorted(stages) == sorted(STAGES)
    assert len(store.children(pipeline_id)) == len(STAGES)
    for run in stages.values():
        assert_stage_run_complete(store, run, pipeline_id)
    assert CLASSIFICATION_METRICS <= set(stages["evaluate"].data.metrics)
    split = stages["split"].data.metrics
    assert stages["ingest"].data.metrics["rows.output.raw"] == 569
    assert split["rows.output.train"] + split["rows.output.test"] == 569

    assert store.version_numbers(MODEL) == ["1"]
    [v1] = store.versions(MODEL)
    assert store.alias(MODEL, "champion") == "1"
    assert store.alias(MODEL, "challenger") == "1"
    assert store.alias(MODEL, "rollback") is None
    assert v1.tags["promotion.decision"] == "promoted"
    assert v1.tags["pipeline.run_id"] == pipeline_id
    report = store.promotion(stages["register"].info.run_id)
    assert report["promote"] is True
    assert report["reason"] == "no champion yet"
    assert str(report["version"]) == "1"
    assert str(report["champion_version_after"]) == "1"

    second = store.mlflow_run(
        hydra_options="model=random_forest model.n_estimators=50",
        experiment_name=EXPERIMENT,
        steps="train,evaluate,register",
    )
    assert_ok(second)

    pipelines = store.runs_of_kind("pipeline")
    assert [p.info.run_id for p in pipelines][0] == pipeline_id
    assert len(pipelines) == 2
    sliced = pipelines[1]
    sliced_id = sliced.info.run_id
    assert sliced.info.status == "FINISHED"
    new_stages = store.stage_runs(sliced_id)
    assert sorted(new_stages) == ["evaluate", "register", "train"]
    for run in new_stages.values():
        assert_stage_run_complete(store, run, sliced_id)
    split_id = stages["split"].info.run_id
    validate_id = stages["validate"].info.run_id
    train_id = new_stages["train"].info.run_id
    assert new_stages["train"].data.tags["pipeline.upstream.train"] == split_id
    assert new_stages["train"].data.tags["pipeline.upstream.contract"] == validate_id
    assert new_stages["train"].data.params["model.name"] == "random_forest"
    assert new_stages["evaluate"].data.tags["pipeline.upstream.test"] == split_id
    assert new_stages["evaluate"].data.tags["pipeline.upstream.model"] == train_id
    assert new_stages["register"].data.tags["pipeline.upstream.model"] == train_id

    assert store.version_numbers(MODEL) == ["1", "2"]
    report = store.promotion(new_stages["register"].info.run_id)
    assert str(report["version"]) == "2"
    assert str(report["champion_version"]) == "1"
    assert isinstance(report["champion_score"], float)
    assert store.alias(MODEL, "challenger") == "2"
    assert store.alias(MODEL, "champion") == str(report["champion_version_after"])
    v2 = store.versions(MODEL)[1]
    if report["promote"]:
        assert report["challenger_score"] > report["champion_score"]
        assert store.alias(MODEL, "champion") == "2"
        assert store.alias(MODEL, "rollback") == "1"
        assert v2.tags["promotion.decision"] == "promoted"
    else:  # no gain, or one within the noise of the comparison (the bootstrap interval)
        assert report["challenger_score"] <= report["champion_score"] or (
            report["comparison"]["low"] <= 0
        )
        assert store.alias(MODEL, "champion") == "1"
        assert store.alias(MODEL, "rollback") is None
        assert v2.tags["promotion.decision"] == "not_promoted"


def test_mlflow_run_one_stage_project_on_an_earlier_pipeline(champion_store: Store) -> None:
    store = champion_store  # one finished pipeline on customers.csv; version 1 is champion
    [pipeline] = store.runs_of_kind("pipeline")
    pipeline_id = pipeline.info.run_id
    earlier = store.stage_runs(pipeline_id)
    data = store.root / CHAMPION_DATA

    result = store.mlflow_run(
        REPO,
        entry_point="evaluate",
        # `mlflow run` runs in the project directory: the data path must be absolute.
        hydra_options=" ".join((*CHAMPION_OVERRIDES, f"data.path={data}")),
        experiment_name="evaluate-alone",
        upstream_run_id=pipeline_id,
    )
    assert_ok(result)

    evaluate_runs = store.runs("tags.`pipeline.stage` = 'evaluate'")
    assert len(evaluate_runs) == 2
    alone = evaluate_runs[-1]
    assert alone.info.run_id != earlier["evaluate"].info.run_id
    assert alone.info.run_id not in {r.info.run_id for r in store.children(pipeline_id)}
    assert_stage_run_complete(store, alone, pipeline_run_id=None)
    tags = alone.data.tags
    assert tags["pipeline.upstream.model"] == earlier["train"].info.run_id
    assert tags["pipeline.upstream.test"] == earlier["split"].info.run_id
    # Same model, same test set: the same scores as the pipeline's own evaluate run.
    for metric in CLASSIFICATION_METRICS:
        assert alone.data.metrics[metric] == earlier["evaluate"].data.metrics[metric], metric
    # evaluate registers nothing.
    assert store.version_numbers(CHAMPION_MODEL) == ["1"]
    assert store.alias(CHAMPION_MODEL, "champion") == "1"
