"""Where a stage that is not run now reads its inputs: one earlier, complete pipeline run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer

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
    result = run_pipeline(config(store, *FAST, "model.C=0.5", "steps=[register]"))
    register = stage_run_of(client, result.experiment_id, result.pipeline_run_id, "register")
    # The newest pipeline whose train, split, evaluate and validate all FINISHED with these
    # settings is `second`.
    assert register.data.tags["pipeline.upstream.model"] == second.stage_run_ids["train"]
    assert register.data.tags["pipeline.upstream.metrics"] == second.stage_run_ids["evaluate"]
    assert register.data.tags["pipeline.upstream.test"] == second.stage_run_ids["split"]
    # With the settings of the later run whose model failed its threshold: that run is never
    # a source, and no other was computed with them.
    failed_settings = ("model.C=0.1", "evaluation.thresholds.roc_auc.min=0.9999")
    with pytest.raises(
        StageError,
        match=rf"\[register\] no earlier pipeline run in experiment \d+ computed stage\(s\) "
        r"evaluate, split, train, validate with this run's settings; the newest that has them "
        rf"\(pipeline run {second.pipeline_run_id}\) differs: train: config changed: model\.C 0\.5 "
        r"-> 0\.1; evaluate: config changed: evaluation\.thresholds\.roc_auc\.min .*\. Include "
        r"train and the stages after it in steps",
    ):
        run_pipeline(config(store, *FAST, *failed_settings, "steps=[register]"))


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


def test_a_slice_never_reads_data_computed_from_another_file(make_config, tmp_path, caplog):
    """steps=[train] with data.path=full.csv reads a split of full.csv, not the newer split of
    another file (which used to train and register a model whose lineage named full.csv)."""
    frame = load_breast_cancer(as_frame=True).frame
    # One file name in three folders: one experiment (named after the data), as a new day's
    # extract would be.
    full, sample, other = (tmp_path / day / "customers.csv" for day in ("day1", "day4", "day5"))
    for path in (full, sample, other):
        path.parent.mkdir()
    frame.to_csv(full, index=False)
    frame.sample(300, random_state=3).to_csv(sample, index=False)
    frame.sample(400, random_state=4).to_csv(other, index=False)
    data = ("data=csv", "data.target=target", "data.task=classification", *FAST)
    whole = run_pipeline(
        make_config(*data, f"data.path={full}", "steps=[ingest,profile,validate,split]")
    )
    newer = run_pipeline(
        make_config(*data, f"data.path={sample}", "steps=[ingest,profile,validate,split]")
    )

    sliced = run_pipeline(make_config(*data, f"data.path={full}", "steps=[train]"))
    client = MlflowClient()
    train = stage_run_of(client, sliced.experiment_id, sliced.pipeline_run_id, "train")
    assert train.data.tags["pipeline.upstream.train"] == whole.stage_run_ids["split"]
    assert train.data.tags["pipeline.upstream.contract"] == whole.stage_run_ids["validate"]

    # A file no run has read: nothing to train on, and the error says what differs.
    with pytest.raises(
        StageError,
        match=r"\[train\] no earlier pipeline run in experiment \d+ computed stage\(s\) split, "
        rf"validate with this run's settings; the newest that has them \(pipeline run "
        rf"{newer.pipeline_run_id}\) differs: ingest: file changed: data\.path digest .*"
        r"Include ingest and the stages after it in steps, or set runner\.upstream_run_id=",
    ):
        run_pipeline(make_config(*data, f"data.path={other}", "steps=[train]"))

    # Named explicitly, a run with other settings is used, with a warning saying so.
    asked = run_pipeline(
        make_config(
            *data,
            f"data.path={other}",
            "steps=[train]",
            f"runner.upstream_run_id={newer.pipeline_run_id}",
        )
    )
    train = stage_run_of(client, asked.experiment_id, asked.pipeline_run_id, "train")
    assert train.data.tags["pipeline.upstream.train"] == newer.stage_run_ids["split"]
    assert "computed its inputs with other settings than this run's (ingest: file changed" in (
        caplog.text
    )

    # The same table rewritten with CRLF line ends: a full run recomputes ingest only (the rest
    # are hits of `whole`'s runs). A slice then reads from that run: each stage is compared as
    # that run ran it, not as the run it reused did (whose ingest read the old bytes).
    full.write_bytes(full.read_bytes().replace(b"\n", b"\r\n"))
    crlf = run_pipeline(
        make_config(*data, f"data.path={full}", "steps=[ingest,profile,validate,split]")
    )
    assert crlf.decisions["ingest"].status == "miss"
    assert crlf.decisions["split"].hit
    again = run_pipeline(make_config(*data, f"data.path={full}", "steps=[train]", "model.C=2.0"))
    train = stage_run_of(client, again.experiment_id, again.pipeline_run_id, "train")
    assert train.data.tags["pipeline.upstream.train"] == whole.stage_run_ids["split"]
