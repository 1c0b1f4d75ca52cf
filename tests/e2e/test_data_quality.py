"""Drift against the champion's training data, warn/fail policies, quarantine and warning
severity, through the real CLI on a store whose champion (v1) was trained on customers.csv."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .helpers import (
    CHAMPION_MODEL,
    CHAMPION_OVERRIDES,
    Store,
    assert_clean_failure,
    assert_ok,
    write_classification_csv,
)

pytestmark = pytest.mark.slow


def shifted(path: Path, *, seed: int = 7) -> Path:
    """A new day's data whose income moved by one standard deviation and whose plan mix
    changed: the kind of shift drift checks exist for."""
    write_classification_csv(path, seed=seed)
    df = pd.read_csv(path)
    df["income"] += 15.0
    df.loc[df.index[:150], "plan"] = "premium"
    df.to_csv(path, index=False)
    return path


def run(store: Store, experiment: str, data: Path, *overrides: str):
    return store.pipeline(
        *CHAMPION_OVERRIDES,
        f"tracking.experiment_name={experiment}",
        f"data.path={data}",
        *overrides,
    )


def logged(result) -> str:
    """Log lines go to stdout (Hydra's logging), errors to stderr."""
    return result.stdout + result.stderr


def only_pipeline(store: Store, experiment: str):
    experiment_id = store.client.get_experiment_by_name(experiment).experiment_id
    [pipeline] = store.client.search_runs([experiment_id], "tags.`pipeline.kind` = 'pipeline'")
    return pipeline, store.stage_runs(pipeline.info.run_id)


def test_fresh_sample_of_the_same_distribution_is_not_drift(champion_store: Store):
    data = write_classification_csv(champion_store.root / "fresh" / "customers.csv", seed=7)
    result = run(champion_store, "fresh", data)
    assert_ok(result)
    assert f"no drift against {CHAMPION_MODEL} v1 (@champion)" in result.stdout
    pipeline, stages = only_pipeline(champion_store, "fresh")
    assert pipeline.data.tags["pipeline.drift"] == "none"
    profile = stages["profile"]
    drift = json.loads(champion_store.text(profile.info.run_id, "drift.json"))
    assert drift["checked"] is True
    assert drift["reference"]["version"] == "1"
    assert drift["n_drifted"] == 0
    assert set(drift["features"]) == {"income", "age", "plan", "label"}
    assert profile.data.metrics["drift.detected"] == 0.0
    assert profile.data.metrics["drift.income"] < 0.2


def test_shifted_data_with_warn_policy_is_flagged_and_training_goes_on(champion_store: Store):
    data = shifted(champion_store.root / "shifted" / "customers.csv")
    result = run(champion_store, "warn", data)
    assert_ok(result)
    assert (
        "drift detected against customers v1 (@champion): 2 of 4 column(s), the target included"
        in result.stdout
    )
    assert "feature 'income': PSI" in result.stdout
    assert "[profile] drift detected" in logged(result)  # the warning as it happened
    pipeline, stages = only_pipeline(champion_store, "warn")
    assert pipeline.info.status == "FINISHED"
    assert pipeline.data.tags["pipeline.drift"] == "detected"
    assert set(pipeline.data.tags["pipeline.drift.features"].split(",")) == {"income", "plan"}
    profile = stages["profile"]
    assert profile.data.metrics["drift.detected"] == 1.0
    assert profile.data.metrics["drift.n_drifted"] == 2.0
    assert profile.data.metrics["drift.income"] >= 0.2
    report = champion_store.text(profile.info.run_id, "reports/profile.html")
    assert "Drift against customers v1" in report
    assert report.count("data:image/png;base64,") >= 4
    assert "register" in stages  # warn: the pipeline went on to the promotion decision


def test_shifted_data_with_fail_policy_stops_before_training(champion_store: Store):
    data = shifted(champion_store.root / "shifted" / "customers.csv")
    result = run(champion_store, "fail", data, "validation.drift.policy=fail")
    assert_clean_failure(
        result,
        "[profile] drift detected against customers v1 (@champion)",
        "feature 'income'",
        "feature 'plan'",
        "validation.drift.policy=fail",
    )
    assert result.stderr.count("mlflow-pipeline: error:") == 1
    pipeline, stages = only_pipeline(champion_store, "fail")
    assert pipeline.info.status == "FAILED"
    assert pipeline.data.tags["pipeline.drift"] == "detected"
    assert set(stages) == {"ingest", "profile"}
    assert stages["profile"].info.status == "FAILED"
    assert "pipeline.cache.stored" not in stages["profile"].data.tags
    artifacts = champion_store.artifacts(stages["profile"].info.run_id)
    assert {"drift.json", "profile.json", "reports/profile.html"} <= artifacts
    assert champion_store.version_numbers(CHAMPION_MODEL) == ["1"]
    assert champion_store.alias(CHAMPION_MODEL, "champion") == "1"


def _with_bad_ages(path: Path, bad_rows: int) -> Path:
    write_classification_csv(path, seed=3)
    df = pd.read_csv(path)
    df.loc[df.index[:bad_rows], "age"] = -5.0
    df.to_csv(path, index=False)
    return path


AGE_RULE = "+validation.ranges.age={min: 0, max: 120}"


def test_quarantine_below_the_maximum_drops_and_logs_the_rows(champion_store: Store):
    data = _with_bad_ages(champion_store.root / "q" / "customers.csv", bad_rows=6)
    result = run(
        champion_store,
        "quarantine",
        data,
        AGE_RULE,
        "validation.quarantine.enabled=true",
        "validation.quarantine.max_fraction=0.05",
    )
    assert_ok(result)
    assert "[validate] quarantined 6 of 300 row(s)" in logged(result)
    _, stages = only_pipeline(champion_store, "quarantine")
    validate = stages["validate"]
    assert validate.data.metrics["rows.input.raw"] == 300
    assert validate.data.metrics["rows.output.validated"] == 294
    table = pd.read_csv(
        io.StringIO(champion_store.text(validate.info.run_id, "quarantine/raw.csv"))
    )
    assert sorted(table["row"]) == [0, 1, 2, 3, 4, 5]
    assert set(table["quarantine_reason"]) == {"age: in_range(0, 120)"}
    assert (table["age"] == -5.0).all()
    report = champion_store.text(validate.info.run_id, "reports/validation.html")
    assert "quarantine" in report.lower()
    assert "in_range(0, 120)" in report


def test_quarantine_above_the_maximum_fails_the_gate(champion_store: Store):
    data = _with_bad_ages(champion_store.root / "q" / "customers.csv", bad_rows=30)
    result = run(
        champion_store,
        "too_many",
        data,
        AGE_RULE,
        "validation.quarantine.enabled=true",
        "validation.quarantine.max_fraction=0.05",
    )
    assert_clean_failure(
        result,
        "[validate] dataset 'raw' failed validation",
        "column 'age', check in_range(0, 120): 30 row(s)",
        "Not quarantined: 30 of 300 row(s) (10.0%) fail, above "
        "validation.quarantine.max_fraction=0.05",
    )
    _, stages = only_pipeline(champion_store, "too_many")
    assert stages["validate"].info.status == "FAILED"
    assert "register" not in stages
    artifacts = champion_store.artifacts(stages["validate"].info.run_id)
    assert {"failures/raw.csv", "reports/validation.html"} <= artifacts
    assert "quarantine/raw.csv" not in artifacts
    assert champion_store.version_numbers(CHAMPION_MODEL) == ["1"]


def test_a_warning_check_reports_and_does_not_stop(champion_store: Store):
    path = write_classification_csv(champion_store.root / "w" / "customers.csv", seed=3)
    df = pd.read_csv(path)
    df = pd.concat([df, df.iloc[:120]], ignore_index=True)  # 120 of 420 rows repeat: 28.6 %
    df.to_csv(path, index=False)
    strict = run(champion_store, "dups_error", path)
    assert_clean_failure(
        strict, "[validate]", "check duplicate_rows <= 0.25", "of 420 rows repeat an earlier row"
    )
    result = run(
        champion_store, "dups_warning", path, "+validation.severity.duplicate_rows=warning"
    )
    assert_ok(result)
    assert "[validate] dataset 'raw' has warnings" in logged(result)
    assert "duplicate_rows <= 0.25" in logged(result)
    _, stages = only_pipeline(champion_store, "dups_warning")
    validate = stages["validate"]
    assert validate.info.status == "FINISHED"
    warnings = champion_store.text(validate.info.run_id, "warnings/raw.csv")
    assert "duplicate_rows" in warnings
    assert np.isclose(validate.data.metrics["rows.output.validated"], 420)
