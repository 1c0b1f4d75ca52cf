"""reproduce: a registered version re-run from its recorded config and data, compared with
what was recorded (data digests, metrics, predictions on the recorded test set)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlflow_pipeline.apps.reproduce import describe, reproduce
from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.errors import ConfigError, PipelineError
from mlflow_pipeline.tags import Lineage, Runs
from tests.helpers import csv_overrides, mixed_frame

FAST = ["model=logistic_regression", "model.max_iter=200", "registry.model_name=customers"]


@pytest.fixture
def registered(tracking_store, tmp_path):
    data = tmp_path / "customers.csv"
    mixed_frame(200).to_csv(data, index=False)
    result = run_pipeline(tracking_store.config(*csv_overrides(data, *FAST)))
    return data, result


def test_version_carries_its_lineage(tracking_store, registered):
    _, result = registered
    client = tracking_store.client()
    tags = client.get_model_version("customers", "1").tags
    assert tags[Lineage.ARTIFACT] == f"runs:/{result.stage_run_ids['register']}/lineage.json"
    for stage in ("profile", "validate", "split"):  # read back from the version by code
        assert tags[Lineage.RUN_PREFIX + stage] == result.stage_run_ids[stage]
    local = client.download_artifacts(
        result.stage_run_ids["register"], "lineage.json", str(tracking_store.root)
    )
    recorded = json.loads(Path(local).read_text())  # the rest of the lineage
    assert recorded["pipeline_run_id"] == result.pipeline_run_id
    for stage in ("ingest", "validate", "split", "train", "evaluate"):
        assert recorded["stages"][stage]["run_id"] == result.stage_run_ids[stage]
    split = client.get_run(result.stage_run_ids["split"]).data.tags
    assert recorded["data_digests"]["test"] == split["pipeline.digest.output.test"]
    assert recorded["data_digests"]["raw"]
    assert recorded["code_version"]["dirty"] in (True, False, None)
    assert recorded["packages"]["scikit-learn"]
    assert "model:\n" in recorded["config"]
    assert recorded["stages"]["train"]["cache_key"]


def test_reproduce_a_champion_is_identical_and_registers_nothing(tracking_store, registered):
    _, result = registered
    client = tracking_store.client()
    report = reproduce("models:/customers@champion", tracking_store.uri)
    assert report.identical, report.differences
    compared = {what for what, _, _ in report.compared}
    assert {"data raw digest", "data test digest", "metric roc_auc"} <= compared
    assert "predict_proba on 40 test rows" in compared
    assert report.pipeline_run_id != result.pipeline_run_id
    reproduction = client.get_run(report.pipeline_run_id)
    assert reproduction.data.tags[Runs.REPRODUCES] == "models:/customers@champion (v1)"
    assert reproduction.data.tags["pipeline.cache.summary"] == (
        "ingest=recompute profile=recompute validate=recompute split=recompute "
        "train=recompute evaluate=recompute"
    )
    assert [str(v.version) for v in client.search_model_versions("name = 'customers'")] == ["1"]
    assert describe(report).endswith("result: IDENTICAL")


def test_reproduce_reports_changed_data(tracking_store, registered):
    data, _ = registered
    frame = mixed_frame(200)
    frame.loc[0, "income"] = 999.0
    frame.to_csv(data, index=False)
    report = reproduce("models:/customers/1", tracking_store.uri)
    assert not report.identical
    assert any(d.startswith("data raw digest: recorded ") for d in report.differences)
    assert "difference(s)" in describe(report)


@pytest.mark.parametrize(
    ("uri", "error", "message"),
    [
        ("customers", ConfigError, "not a registered model URI"),
        ("models:/customers@nobody", ConfigError, "no such model version"),
        ("models:/nothing/1", ConfigError, "no such model version"),
    ],
)
def test_reproduce_refuses_what_it_cannot_find(tracking_store, registered, uri, error, message):
    with pytest.raises(error, match=message):
        reproduce(uri, tracking_store.uri)


def test_reproduce_needs_a_version_registered_by_the_pipeline(tracking_store, registered):
    client = tracking_store.client()
    source = client.get_model_version("customers", "1").source
    client.create_model_version("customers", source)
    with pytest.raises(PipelineError, match="has no lineage"):
        reproduce("models:/customers/2", tracking_store.uri)
