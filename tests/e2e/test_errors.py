"""Expected errors through the real CLIs: a non-zero exit, one readable message naming the
problem, no traceback, nothing registered and the champion untouched."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pandas as pd
import pytest

from .helpers import (
    CHAMPION_DATA,
    CHAMPION_MODEL,
    CHAMPION_OVERRIDES,
    Store,
    assert_clean_failure,
    write_classification_csv,
)

pytestmark = pytest.mark.slow

EXPERIMENT = "errors"
NULL_TARGET_ROWS = 3


@dataclass(frozen=True)
class Case:
    overrides: tuple[str, ...]
    # What stderr must name.
    message: tuple[str, ...]
    # The stage that fails at run time; None when the configuration never composes.
    stage: str | None = None
    # Write a broken customers.csv with these write_classification_csv arguments.
    broken_csv: dict = field(default_factory=dict)


CASES = {
    "unknown_key": Case(
        overrides=(f"data.path={CHAMPION_DATA}", "model.bogus=1"),
        message=("model.bogus",),
    ),
    "unknown_group_option": Case(
        overrides=(f"data.path={CHAMPION_DATA}", "model=xgboost"),
        message=("model/xgboost", "logistic_regression", "random_forest"),
    ),
    "missing_data_file": Case(
        overrides=("data.path=gone/customers.csv",),
        message=("[ingest]", "data.path", "gone/customers.csv"),
        stage="ingest",
    ),
    "null_target": Case(
        overrides=("data.path=broken/customers.csv",),
        message=("[validate]", "'raw'", "'label'", "not_nullable", f"{NULL_TARGET_ROWS} row(s)"),
        stage="validate",
        broken_csv={"null_target_rows": NULL_TARGET_ROWS},
    ),
    "failed_threshold": Case(
        overrides=(f"data.path={CHAMPION_DATA}", "evaluation.thresholds.roc_auc.min=0.9999"),
        message=("[evaluate]", "roc_auc", "0.9999", "Nothing was registered"),
        stage="evaluate",
    ),
}


def _prepare(store: Store, case: Case) -> None:
    if case.broken_csv:
        write_classification_csv(store.root / "broken" / CHAMPION_DATA, **case.broken_csv)


def _check_outcome(store: Store, case: Case) -> None:
    """The registry as the good run left it, and the failure recorded on the failing runs."""
    assert store.model_names() == {CHAMPION_MODEL}
    assert store.version_numbers(CHAMPION_MODEL) == ["1"]
    assert store.alias(CHAMPION_MODEL, "champion") == "1"
    assert store.alias(CHAMPION_MODEL, "challenger") == "1"

    experiment = store.client.get_experiment_by_name(EXPERIMENT)
    pipelines = (
        store.client.search_runs([experiment.experiment_id], "tags.`pipeline.kind` = 'pipeline'")
        if experiment is not None
        else []
    )
    if case.stage is None:
        assert pipelines == [], "the configuration was rejected before any pipeline run"
        return
    [pipeline] = pipelines
    assert pipeline.info.status == "FAILED"
    assert f"[{case.stage}]" in pipeline.data.tags["pipeline.error"]
    stages = store.stage_runs(pipeline.info.run_id)
    assert "register" not in stages
    failed = stages[case.stage]
    assert failed.info.status == "FAILED"
    assert f"[{case.stage}]" in failed.data.tags["pipeline.error"]
    assert all(r.info.status == "FINISHED" for n, r in stages.items() if n != case.stage)
    if case.stage == "validate":
        assert "failures/raw.csv" in store.artifacts(failed.info.run_id)
        table = pd.read_csv(io.StringIO(store.text(failed.info.run_id, "failures/raw.csv")))
        nulls = table[(table["column"] == "label") & (table["check"] == "not_nullable")]
        assert len(nulls) == NULL_TARGET_ROWS


@pytest.mark.parametrize("name", list(CASES))
def test_mlflow_pipeline_error(champion_store: Store, name: str) -> None:
    case = CASES[name]
    _prepare(champion_store, case)
    result = champion_store.pipeline(
        *CHAMPION_OVERRIDES, f"tracking.experiment_name={EXPERIMENT}", *case.overrides
    )
    assert_clean_failure(result, *case.message)
    if case.stage is not None:
        assert result.stderr.count("mlflow-pipeline: error:") == 1
    _check_outcome(champion_store, case)


@pytest.mark.parametrize("name", ["unknown_key", "null_target"])
def test_mlflow_run_error(champion_store: Store, name: str) -> None:
    case = CASES[name]
    _prepare(champion_store, case)
    # `mlflow run` runs the command in the project directory: data paths must be absolute.
    overrides = [
        f"data.path={champion_store.root / o.removeprefix('data.path=')}"
        if o.startswith("data.path=")
        else o
        for o in case.overrides
    ]
    result = champion_store.mlflow_run(
        hydra_options=" ".join(
            (*CHAMPION_OVERRIDES, f"tracking.experiment_name={EXPERIMENT}", *overrides)
        ),
        experiment_name=EXPERIMENT,
    )
    assert_clean_failure(result, *case.message)
    assert result.stderr.count("mlflow-pipeline: error:") == 1
    _check_outcome(champion_store, case)
