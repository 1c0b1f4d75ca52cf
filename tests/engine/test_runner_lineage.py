"""Where a stage that is not run now reads its inputs: one earlier, complete pipeline run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from mlflow_pipeline.engine.inputs import check_lineage
from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.errors import StageError, ThresholdError
from mlflow_pipeline.tags import Runs
from tests.helpers import REFERENCE as PIPELINE

FAST = ["model=logistic_regression", "model.max_iter=200"]


def stage_run_of(client: MlflowClient, experiment_id: str, pipeline_run_id: str, stage: str):
    (run,) = client.search_runs(
        [experiment_id],
        f"tags.`{Runs.PIPELINE_RUN}` = '{pipeline_run_id}' and tags.`{Runs.STAGE}` = '{stage}'",
    )
    return run


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, open_store):
    """A complete pipeline, a newer complete one, then one whose evaluate failed."""
    with open_store(tmp_path_factory.mktemp("lineage")) as store:
        first = run_pipeline(store.config(*FAST))
        # Recomputed, so that its upstream stages are its own runs rather than cache hits.
        second = run_pipeline(store.config(*FAST, "model.C=0.5", "cache.policy=recompute"))
        with pytest.raises(ThresholdError, match=r"roc_auc=.* is below the minimum 0\.9999"):
            run_pipeline(
                store.config(*FAST, "model.C=0.1", "evaluation.thresholds.roc_auc.min=0.9999")
            )
        yield store, store.client(), first, second


def config(store, *overrides: str):
    """The shared store's config, explicit URI: each test's own autouse store is elsewhere."""
    return store.config(*overrides, f"tracking.uri={store.uri}")


def test_a_failed_evaluation_never_feeds_register(history):
    store, client, first, second = history
    result = run_pipeline(config(store, *FAST, "model.C=0.1", "steps=[register]"))
    register = stage_run_of(client, result.experiment_id, result.pipeline_run_id, "register")
    # The newest pipeline whose train, split, evaluate and validate all FINISHED is `second`,
    # not the later one whose model failed its threshold.
    assert register.data.tags["pipeline.upstream.model"] == second.stage_run_ids["train"]
    assert register.data.tags["pipeline.upstream.metrics"] == second.stage_run_ids["evaluate"]
    assert register.data.tags["pipeline.upstream.test"] == second.stage_run_ids["split"]


def test_upstream_run_id_wins_over_newer_runs(history):
    store, client, first, second = history
    result = run_pipeline(
        config(store, *FAST, "steps=[evaluate]", f"runner.upstream_run_id={first.pipeline_run_id}")
    )
    evaluate = stage_run_of(client, result.experiment_id, result.pipeline_run_id, "evaluate")
    assert evaluate.data.tags["pipeline.upstream.model"] == first.stage_run_ids["train"]
    assert evaluate.data.tags["pipeline.upstream.test"] == first.stage_run_ids["split"]


def test_an_upstream_run_missing_a_stage_is_refused(history):
    store, client, first, second = history
    failed = client.search_runs(
        [first.experiment_id],
        "tags.`pipeline.kind` = 'pipeline' and attributes.status = 'FAILED'",
    )[0]
    with pytest.raises(
        StageError,
        match=r"\[register\] pipeline run \w+ has no FINISHED run of stage\(s\) evaluate",
    ):
        run_pipeline(
            config(store, *FAST, "steps=[register]", f"runner.upstream_run_id={failed.info.run_id}")
        )


def test_inputs_that_do_not_belong_together_are_refused(history):
    store, client, first, second = history
    run_ids = {
        "model": first.stage_run_ids["train"],
        "test": first.stage_run_ids["split"],
        # computed from second's model, not first's
        "metrics": second.stage_run_ids["evaluate"],
    }
    with pytest.raises(
        StageError,
        match=r"\[register\] inputs do not belong together: 'metrics' .* was computed from "
        r"'model' of run \w+, but 'model' now comes from run \w+",
    ):
        check_lineage(PIPELINE.stage_named("register"), run_ids, client)
    check_lineage(  # the same inputs from one pipeline run are fine
        PIPELINE.stage_named("register"),
        {
            name: second.stage_run_ids[s]
            for name, s in [("model", "train"), ("test", "split"), ("metrics", "evaluate")]
        },
        client,
    )
