"""run_pipeline in-process on the bundled data and small CSVs: the run tree, slicing, failures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from mlflow_pipeline import interrupt
from mlflow_pipeline.engine.inputs import find_stage_run
from mlflow_pipeline.engine.result import PipelineResult, describe
from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.errors import DataValidationError, StageError, ThresholdError
from mlflow_pipeline.store.artifacts import load_frame, load_trusted_model
from mlflow_pipeline.tags import MLflow, Runs
from tests.helpers import EXPECTED_ARTIFACTS, csv_overrides, mixed_frame
from tests.helpers import REFERENCE as PIPELINE

FAST = ["model=logistic_regression", "model.max_iter=200"]
RECOMPUTE = "cache.policy=recompute"


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def stage_runs(client: MlflowClient, result) -> dict:
    runs = client.search_runs(
        [result.experiment_id], f"tags.`{Runs.PIPELINE_RUN}` = '{result.pipeline_run_id}'"
    )
    return {r.data.tags[Runs.STAGE]: r for r in runs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, open_store):
    """Successful pipelines sharing one store: full, sliced, regression, CSV (every stage
    computed: the cache would make the sliced run all hits)."""
    root = tmp_path_factory.mktemp("runner")
    csv = root / "customers.csv"
    mixed_frame(200).to_csv(csv, index=False)
    with open_store(root) as store:
        full = run_pipeline(store.config(*FAST))
        sliced = run_pipeline(store.config(*FAST, "steps=[evaluate,train]", RECOMPUTE))
        # Another split of the same data: most of its test rows are the champion's training rows.
        resplit = run_pipeline(
            store.config(*FAST, "split.random_state=7", "tracking.experiment_name=resplit")
        )
        diabetes = run_pipeline(
            store.config("data=diabetes", "model=random_forest", "model.n_estimators=10")
        )
        from_csv = run_pipeline(
            store.config(
                *csv_overrides(
                    csv, "features=trees", "model=random_forest", "model.n_estimators=10"
                )
            )
        )
        yield {
            "store": store,
            "client": store.client(),
            "full": full,
            "sliced": sliced,
            "resplit": resplit,
            "diabetes": diabetes,
            "csv": from_csv,
        }


def test_pipeline_run_tree(runs):
    client, result = runs["client"], runs["full"]
    pipeline = client.get_run(result.pipeline_run_id)
    assert pipeline.info.status == "FINISHED"
    assert pipeline.data.tags[Runs.KIND] == "pipeline"
    assert pipeline.data.tags[Runs.STEPS] == ",".join(PIPELINE.stage_names)
    assert pipeline.data.tags[Runs.RUNNER_MODE] == "in_process"
    assert pipeline.data.params["model.name"] == "logistic_regression"
    assert not any(p.startswith("pipeline.") for p in pipeline.data.params)
    assert re.fullmatch(r"logistic_regression-breast_cancer-[0-9a-f]{6}", pipeline.info.run_name)
    assert pipeline.data.metrics["roc_auc"] == result.metrics["roc_auc"]
    # The data it starts from, with MLflow's dataset tracking (the UI's Dataset column).
    [raw] = pipeline.inputs.dataset_inputs
    assert raw.dataset.name == "raw"
    assert json.loads(raw.dataset.profile)["num_rows"] == 569
    assert artifacts(client, result.pipeline_run_id) == {"config.yaml"}
    children = stage_runs(client, result)
    assert set(children) == set(PIPELINE.stage_names)
    assert result.stage_run_ids == {name: run.info.run_id for name, run in children.items()}
    for name, run in children.items():
        assert run.info.status == "FINISHED", name
        assert run.data.tags[MLflow.PARENT] == result.pipeline_run_id
        assert EXPECTED_ARTIFACTS[name] <= artifacts(client, run.info.run_id), name
        assert run.data.metrics["wall_time_s"] > 0


def test_datasets_flow_between_stages_with_matching_digests(runs):
    children = stage_runs(runs["client"], runs["full"])
    tags = {name: run.data.tags for name, run in children.items()}
    assert (
        tags["validate"]["pipeline.digest.input.raw"]
        == tags["ingest"]["pipeline.digest.output.raw"]
    )
    assert (
        tags["train"]["pipeline.digest.input.train"]
        == tags["split"]["pipeline.digest.output.train"]
    )
    assert tags["evaluate"]["pipeline.upstream.model"] == children["train"].info.run_id
    assert tags["train"]["pipeline.model_uri"].startswith("models:/")
    rows = children["split"].data.metrics
    assert rows["rows.output.train"] + rows["rows.output.test"] == 569
    assert children["evaluate"].data.metrics["roc_auc"] > 0.95


def test_result_and_describe(runs):
    result = runs["full"]
    assert result.promotion["promote"] is True
    assert result.promotion["model_name"] == "breast_cancer"
    text = describe(result)
    assert result.pipeline_run_id in text
    assert re.search(
        r"registered breast_cancer v1: promoted to champion \(no champion yet; "
        r"roc_auc=0\.9\d+\); champion is v1",
        text,
    ), text
    # The pipeline run carries the evaluate metrics and an informative name.
    assert set(result.metrics) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert result.durations.keys() == result.decisions.keys()


def test_sliced_run_reads_inputs_from_the_latest_finished_runs(runs):
    client, full, sliced = runs["client"], runs["full"], runs["sliced"]
    children = stage_runs(client, sliced)
    assert set(children) == {"train", "evaluate"}
    assert client.get_run(sliced.pipeline_run_id).data.tags[Runs.STEPS] == "train,evaluate"
    assert children["train"].data.tags["pipeline.upstream.train"] == full.stage_run_ids["split"]
    assert (
        children["train"].data.tags["pipeline.upstream.contract"] == full.stage_run_ids["validate"]
    )
    assert (
        children["evaluate"].data.tags["pipeline.upstream.model"] == children["train"].info.run_id
    )
    assert sliced.promotion is None


def test_find_stage_run(runs):
    client, full = runs["client"], runs["full"]
    assert (
        find_stage_run(client, full.experiment_id, "split", full.pipeline_run_id)
        == full.stage_run_ids["split"]
    )
    assert (
        find_stage_run(client, full.experiment_id, "train") == runs["sliced"].stage_run_ids["train"]
    )
    assert find_stage_run(client, full.experiment_id, "train", "no-such-pipeline") is None


def test_regression_pipeline_promotes_on_rmse(runs):
    result = runs["diabetes"]
    assert result.promotion["metric"] == "rmse"
    assert result.promotion["greater_is_better"] is False
    assert result.promotion["model_name"] == "diabetes"
    metrics = stage_runs(runs["client"], result)["evaluate"].data.metrics
    assert {"rmse", "mae", "r2"} <= set(metrics)
    assert metrics["r2"] > 0


def test_csv_with_categoricals_and_missing_values(runs):
    result = runs["csv"]
    children = stage_runs(runs["client"], result)
    assert result.promotion["model_name"] == "customers"
    assert result.promotion["promote"] is True
    assert children["evaluate"].data.metrics["accuracy"] > 0.7
    assert children["ingest"].data.metrics["rows.output.raw"] == 200


def test_the_champion_is_not_scored_on_the_rows_it_trained_on(runs, monkeypatch):
    """Split otherwise, today's test set holds rows the champion trained on: both models are
    compared on the others. Checked against a merge of the two runs' datasets and sklearn."""
    client = runs["client"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", runs["store"].uri)  # this test's store is empty
    mlflow.set_tracking_uri(runs["store"].uri)
    champion_split = stage_runs(client, runs["full"])["split"].info.run_id
    split_run = stage_runs(client, runs["resplit"])["split"].info.run_id
    trained_on = load_frame(champion_split, "train")
    test = load_frame(split_run, "test")
    seen = test.merge(trained_on.drop_duplicates(), how="left", indicator=True)["_merge"]
    unseen = (seen == "left_only").to_numpy()
    assert 0 < unseen.sum() < len(test)

    promotion = runs["resplit"].promotion
    overlap = promotion["training_overlap"]
    assert overlap["rows"] == len(test)
    assert overlap["rows_seen_by_champion"] == len(test) - unseen.sum()
    assert overlap["rows_compared"] == unseen.sum() == promotion["comparison"]["rows"]
    assert promotion["reason"].startswith(
        f"the champion trained on {len(test) - unseen.sum()} of the {len(test)} test rows: "
        f"both models compared on the other {unseen.sum()}: challenger roc_auc="
    )
    champion = load_trusted_model(f"models:/breast_cancer/{promotion['champion_version']}")
    rows = test[unseen]
    proba = champion.predict_proba(rows.drop(columns="target"))[:, 1]
    assert promotion["champion_score"] == pytest.approx(roc_auc_score(rows["target"], proba))
    # The same split as the champion's: every test row is compared, and nothing is said.
    assert runs["full"].promotion["training_overlap"] is None


def test_failing_threshold_stops_before_register(make_config, tracking_store):
    cfg = make_config(
        "model=random_forest",
        "model.n_estimators=1",
        "model.max_depth=1",
        "evaluation.thresholds.roc_auc.min=0.9999",
    )
    with pytest.raises(
        ThresholdError, match=r"\[evaluate\] .*roc_auc=0\.\d+ is below the minimum 0\.9999"
    ):
        run_pipeline(cfg)
    client = tracking_store.client()
    experiment = client.get_experiment_by_name("breast_cancer")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {r.data.tags.get(Runs.STAGE): r for r in runs}
    assert "register" not in by_stage
    assert by_stage["evaluate"].info.status == "FAILED"
    assert "roc_auc" in by_stage["evaluate"].data.metrics  # metrics were logged before the gate
    pipeline = by_stage[None]
    assert pipeline.info.status == "FAILED"
    assert "below the minimum" in pipeline.data.tags[Runs.ERROR]
    assert client.search_registered_models() == []


def test_bad_data_fails_validate_with_the_failure_table(
    make_config, tracking_store, tmp_path: Path
):
    frame = mixed_frame()
    frame["churned"] = frame["churned"].astype(float)
    frame.loc[[3, 4], "churned"] = np.nan
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(
        DataValidationError,
        match=r"(?s)\[validate\] dataset 'raw'.*'churned', check not_nullable: 2 row",
    ):
        run_pipeline(make_config(*csv_overrides(path)))
    client = tracking_store.client()
    experiment = client.get_experiment_by_name("bad")
    runs = {r.data.tags.get(Runs.STAGE): r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {None, "ingest", "profile", "validate"}
    failed = runs["validate"]
    assert failed.info.status == "FAILED"
    assert "failures/raw.csv" in artifacts(client, failed.info.run_id)
    table = Path(
        client.download_artifacts(failed.info.run_id, "failures/raw.csv", str(tmp_path))
    ).read_text()
    assert "not_nullable" in table
    assert runs[None].info.status == "FAILED"


def test_ctrl_c_as_a_stage_run_becomes_active_ends_every_run_killed(
    make_config, tracking_store, monkeypatch
):
    # SIGINT landing in mlflow.start_run after it made the stage's run active: the pipeline run
    # had been marked KILLED, then ended FINISHED by MLflow's exit handler (CI, once).
    real_start_run = mlflow.start_run

    def interrupted(*args, **kwargs):
        run = real_start_run(*args, **kwargs)
        if kwargs.get("run_name") == "split":
            raise KeyboardInterrupt
        return run

    monkeypatch.setattr(mlflow, "start_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(make_config(*FAST, RECOMPUTE))
    assert mlflow.active_run() is None  # nothing left for the exit handler to end FINISHED
    client = tracking_store.client()
    experiment = client.get_experiment_by_name("breast_cancer")
    runs = {r.info.run_name: r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert runs.pop("split") == "KILLED"
    assert set(runs.values()) == {"FINISHED", "KILLED"}
    [pipeline] = [
        r for r in client.search_runs([experiment.experiment_id]) if Runs.STAGE not in r.data.tags
    ]
    assert pipeline.info.status == "KILLED"


def test_a_ctrl_c_another_error_replaced_still_ends_the_runs_killed(
    make_config, tracking_store, monkeypatch
):
    """SIGINT deferred in a store call, then an error in its place (OmegaConf's finally had
    replaced a KeyboardInterrupt with an AttributeError): a sweep job took it for a failure and
    the sweep went on to register. It is a Ctrl-C: KeyboardInterrupt, every run KILLED."""
    import os
    import signal
    import time

    store_call = {"__name__": "sqlalchemy.engine.stand_in", "os": os, "signal": signal}
    exec("def write():\n    os.kill(os.getpid(), signal.SIGINT)\n", store_call)
    real_start_run = mlflow.start_run

    def replaced(*args, **kwargs):
        run = real_start_run(*args, **kwargs)
        if kwargs.get("run_name") == "split":
            store_call["write"]()  # deferred: inside the store's code
            raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")
        return run

    monkeypatch.setattr(mlflow, "start_run", replaced)
    # No redelivery before the runner catches the error (on a slow machine one could land in
    # plain Python on the way there, and be the KeyboardInterrupt itself).
    monkeypatch.setattr(interrupt, "REDELIVER_S", 60)
    with pytest.raises(KeyboardInterrupt) as raised:
        run_pipeline(make_config(*FAST, RECOMPUTE))
    assert isinstance(raised.value.__cause__, AttributeError)
    time.sleep(0.2)  # the deferred SIGINT is not delivered after the run
    client = tracking_store.client()
    experiment = client.get_experiment_by_name("breast_cancer")
    statuses = {
        r.info.run_name: r.info.status for r in client.search_runs([experiment.experiment_id])
    }
    assert statuses.pop("split") == "KILLED"
    assert set(statuses.values()) == {"FINISHED", "KILLED"}, statuses  # the pipeline run KILLED


def test_slice_without_upstream_runs_is_a_stage_error(make_config):
    with pytest.raises(
        StageError,
        match=r"\[train\] no earlier pipeline run in experiment \d+ has FINISHED runs of "
        r"stage\(s\) split, validate; include them in steps or set runner\.upstream_run_id",
    ):
        run_pipeline(make_config("steps=[train]"))


def test_unknown_upstream_run_is_a_stage_error(make_config):
    with pytest.raises(StageError, match=r"runner\.upstream_run_id: no run nope"):
        run_pipeline(make_config("steps=[train]", "runner.upstream_run_id=nope"))


def test_describe_names_alias_moves_made_outside():
    result = PipelineResult(pipeline_run_id="r1", experiment_id="0")
    result.promotion = {
        "model_name": "churn",
        "version": "4",
        "promote": False,
        "reason": "no gain",
        "champion_version_after": "2",
        "moved_outside": ["champion: v3 -> v2"],
        "audit_experiment": "churn-audit",
    }
    lines = describe(result).splitlines()
    assert lines[-2:] == [
        "found alias move(s) made outside mlflow-pipeline: champion: v3 -> v2 "
        "(recorded in churn-audit)",
        "registered churn v4: not promoted (no gain); champion is v2",
    ]
