"""`mlflow-pipeline -m`: a Hydra multirun sweep is one sweep run with a pipeline run per job."""

from __future__ import annotations

import pytest

from .helpers import STAGES, Store, assert_clean_failure, assert_ok, assert_stage_run_complete

pytestmark = pytest.mark.slow


def test_sweep_nests_one_pipeline_run_per_job_under_one_sweep_run(store: Store) -> None:
    # Both models are small at their defaults on 569 rows; a sweep cannot shrink them with one
    # override (max_iter is not a random forest key, a typo the config schema rejects).
    result = store.pipeline("-m", "model=logistic_regression,random_forest")
    assert_ok(result)
    assert (store.root / "multirun").is_dir()

    [sweep] = store.runs_of_kind("sweep")
    assert sweep.info.status == "FINISHED"
    sweep_id = sweep.info.run_id

    pipelines = store.runs_of_kind("pipeline")
    assert len(pipelines) == 2
    assert {p.data.tags["mlflow.parentRunId"] for p in pipelines} == {sweep_id}
    assert {r.info.run_id for r in store.children(sweep_id)} == {p.info.run_id for p in pipelines}
    models = set()
    for pipeline in pipelines:
        assert pipeline.info.status == "FINISHED"
        assert pipeline.info.experiment_id == sweep.info.experiment_id
        stages = store.stage_runs(pipeline.info.run_id)
        assert sorted(stages) == sorted(STAGES)
        for run in stages.values():
            assert_stage_run_complete(store, run, pipeline.info.run_id)
        models.add(stages["train"].data.params["model.name"])
    assert models == {"logistic_regression", "random_forest"}

    # Every job registers a version; the first becomes champion, the rule decides the second.
    assert store.version_numbers("breast_cancer") == ["1", "2"]
    assert store.alias("breast_cancer", "challenger") == "2"
    assert store.alias("breast_cancer", "champion") in {"1", "2"}


def test_sweep_with_a_job_that_does_not_compose_fails_cleanly(store: Store) -> None:
    # max_iter is a logistic regression key, not a random forest one: job 2 cannot compose.
    result = store.pipeline("-m", "model=logistic_regression,random_forest", "model.max_iter=30")
    assert_clean_failure(result, "model.max_iter", "RandomForestConfig")

    # Whatever ran, no run is left RUNNING (a sweep run would show as live in the UI forever).
    assert [r.info.run_name for r in store.runs() if r.info.status == "RUNNING"] == []
    assert all(r.info.status == "FAILED" for r in store.runs_of_kind("sweep"))
