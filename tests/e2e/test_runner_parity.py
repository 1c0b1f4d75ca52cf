"""`runner=projects` (one `mlflow.projects.run` per stage) is indistinguishable in outcome from
the default in-process runner: same run tree, artifacts, data, metrics and registry outcome."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Run

from .helpers import (
    CLASSIFICATION_METRICS,
    STAGES,
    TIMING_METRICS,
    Store,
    assert_ok,
    assert_stage_run_complete,
)

pytestmark = pytest.mark.slow

MODEL = "breast_cancer"
PROJECT_PARAMETERS = {"hydra_options", "pipeline_run_id", "upstream_run_id"}


def _outcome(store: Store) -> dict:
    """Everything about a finished pipeline that must not depend on the runner."""
    [pipeline] = store.runs_of_kind("pipeline")
    assert pipeline.info.status == "FINISHED"
    stages = store.stage_runs(pipeline.info.run_id)
    assert sorted(stages) == sorted(STAGES)
    for run in stages.values():
        assert_stage_run_complete(store, run, pipeline.info.run_id)
    promotion = store.promotion(stages["register"].info.run_id)
    return {
        "stages": {name: (run.info.run_name, run.info.status) for name, run in stages.items()},
        "artifacts": {name: store.artifacts(run.info.run_id) for name, run in stages.items()},
        "metrics": {name: _data_metrics(run) for name, run in stages.items()},
        "digests": {name: _digests(run) for name, run in stages.items()},
        "params": {name: _config_params(run) for name, run in stages.items()},
        "promotion": {k: promotion[k] for k in ("promote", "reason", "version", "metric")},
        "versions": store.version_numbers(MODEL),
        "aliases": {a: store.alias(MODEL, a) for a in ("champion", "challenger", "rollback")},
    }


def _data_metrics(run: Run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k not in TIMING_METRICS}


def _config_params(run: Run) -> dict[str, str]:
    # `mlflow run` also logs the project's own entry point parameters.
    return {k: v for k, v in run.data.params.items() if k not in PROJECT_PARAMETERS}


def _digests(run: Run) -> dict[str, str]:
    # lineage.json names the runs it came from, which differ between any two stores.
    return {
        k: v
        for k, v in run.data.tags.items()
        if k.startswith("pipeline.digest.") and k != "pipeline.digest.output.lineage"
    }


def test_projects_runner_matches_in_process_runner(tmp_path: Path) -> None:
    overrides = ("model.max_iter=30",)
    in_process = Store(tmp_path / "in_process")
    projects = Store(tmp_path / "projects")
    for store in (in_process, projects):
        store.root.mkdir()
    assert_ok(in_process.pipeline(*overrides))
    ran = projects.pipeline(*overrides, "runner=projects")
    assert_ok(ran)
    # The run summary's stage table has every stage's seconds, as in-process.
    rows = [line.split("│") for line in ran.stdout.splitlines() if line.count("│") >= 4]
    seconds = {r[1].strip(): r[3].strip() for r in rows if r[1].strip() in ("ingest", "train")}
    assert len(seconds) == 2, ran.stdout
    assert all(float(v) > 0 for v in seconds.values()), ran.stdout

    [projects_pipeline] = projects.runs_of_kind("pipeline")
    assert projects_pipeline.data.tags["pipeline.runner_mode"] == "projects"
    for run in projects.children(projects_pipeline.info.run_id):
        assert run.data.tags["pipeline.runner_mode"] == "projects"
        assert run.data.tags["mlflow.source.type"] == "PROJECT"

    expected = _outcome(in_process)
    actual = _outcome(projects)
    assert CLASSIFICATION_METRICS <= set(expected["metrics"]["evaluate"])
    assert expected["promotion"]["promote"] is True
    assert expected["versions"] == ["1"]
    assert expected["aliases"] == {"champion": "1", "challenger": "1", "rollback": None}
    for key in expected:
        assert actual[key] == expected[key], key


def test_a_failing_stage_under_the_projects_runner_is_reported_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "projects")
    store.root.mkdir()
    # evaluate's gate stops the pipeline in the evaluate entry point's process.
    failed = store.pipeline("runner=projects", "evaluation.thresholds.roc_auc.min=0.99999")
    assert failed.returncode == 1
    output = failed.stdout + failed.stderr
    assert output.count("mlflow-pipeline: error:") == 1, output
    assert "roc_auc=" in output
    assert "below the minimum 0.99999" in output
    assert not store.client.search_model_versions()  # nothing registered
